"""Similarity operators of the A2LS auxiliary-loss space.

An operator turns a batch of predictions ``P`` and targets ``T`` (both ``[B, D]``) into a scalar loss.
Five operators exist, each with and without in-batch negatives (A2LS, He et al. 2022, arXiv 2210.06041, §4.1):

========== ===================================== ==================================================
operator   without negatives                     with in-batch negatives
========== ===================================== ==================================================
mse        mean squared error                    InfoNCE over logits ``-||p_i - t_j||²`` (ours)
nmse       MSE of L2-normalised vectors          positive MSE minus MSE against a shuffled target
inner      CE on ``diag(P·Tᵀ)``, zeros elsewhere CE on the full ``P·Tᵀ`` (InfoNCE)
bilinear   CE on ``diag(T·W·Pᵀ)``                CE on the full ``T·W·Pᵀ``
cosine     CE on the diagonal cosine similarity  CE on the full cosine-similarity matrix
========== ===================================== ==================================================

There is no temperature anywhere, as in the official code.

``mse`` with negatives crashes in the official code (a missing ``elif``); its evident intent,
"positive MSE minus MSE against a shuffled target", is unbounded below for unnormalised vectors
(moving the prediction far from the shuffled target sends it to ``-inf``), so it would diverge.
We define it instead as a cross-entropy over negative squared Euclidean distances: for prediction
``i`` the logits are ``-||p_i - t_j||²`` over all targets ``j`` of the batch and the label is ``i``.
A cross-entropy is bounded below by 0, the positive pair is still pulled together in squared
distance, and the negatives are pushed away only until the softmax saturates.

All losses are computed in float32 with autocast disabled: the logits of a 512×512 cross-entropy
and the small differences of a squared error lose too much in bfloat16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# The names live with the specs (no torch needed to parse or list a loss); re-exported here.
from a2ls_lightning.modules.aux_spec import OPERATOR_ALIASES, OPERATORS, canonical_operator

__all__ = ["OPERATORS", "OPERATOR_ALIASES", "canonical_operator", "operator_loss"]


def _diagonal_cross_entropy(diagonal: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of the official "negatives removed" logits, in O(B) instead of O(B²).

    The official code builds a B×B logit matrix holding ``diagonal`` on its diagonal and zeros
    elsewhere, then takes the cross-entropy to the diagonal. Row ``i`` is therefore
    ``-d_i + log(exp(d_i) + (B - 1))``, which is what this computes.

    Args:
        diagonal: ``[B]`` positive-pair scores ``d_i``.

    Returns:
        Scalar mean over the batch (``reduction="mean"``) or the ``[B]`` rows (``"none"``).
    """
    batch_size = diagonal.shape[0]
    if batch_size == 1:
        # A single logit: its softmax is 1 and the cross-entropy 0 (keep the graph for backward).
        zero = diagonal * 0.0
        return zero.sum() if reduction == "mean" else zero
    log_off_diagonal = diagonal.new_tensor(math.log(batch_size - 1))
    rows = torch.logaddexp(diagonal, log_off_diagonal) - diagonal
    return rows.mean() if reduction == "mean" else rows


def _scores(
    operator: str, prediction: Tensor, target: Tensor, bilinear_weight: Tensor | None, pairwise: bool
) -> Tensor:
    """Similarity scores of the three cross-entropy operators.

    Orientation follows the official code: ``inner``/``cosine`` rows are predictions
    (``[i, j] = p_i · t_j``), ``bilinear`` rows are targets (``[i, j] = t_i · W · p_j``).

    Returns:
        ``[B, B]`` scores when ``pairwise``, otherwise the ``[B]`` diagonal only.
    """
    if operator == "cosine":
        prediction, target = F.normalize(prediction, dim=1), F.normalize(target, dim=1)
    if operator == "bilinear":
        if bilinear_weight is None:
            raise ValueError("bilinear_weight: required for operator 'bilinear' (a D×D tensor)")
        rows, columns = target @ bilinear_weight.float(), prediction
    else:
        rows, columns = prediction, target
    return rows @ columns.T if pairwise else (rows * columns).sum(dim=1)


def operator_loss(
    operator: str,
    prediction: Tensor,
    target: Tensor,
    negatives: bool = False,
    bilinear_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Loss of ``operator`` between a batch of predictions and targets.

    Args:
        operator: one of :data:`OPERATORS` (official aliases accepted).
        prediction: ``[B, D]`` predictor outputs; gradient flows through it.
        target: ``[B, D]`` targets; treated as given (the caller detaches them).
        negatives: contrast each pair against the other ``B - 1`` samples of the batch.
        bilinear_weight: ``[D, D]`` matrix ``W``; required for ``bilinear`` only.
        reduction: ``"mean"``: the batch mean (a scalar); ``"none"``: one loss per example, ``[B]`` (each row's
            loss; with negatives, row ``i`` still contrasts against the other rows). The mean of the ``"none"``
            result equals the ``"mean"`` result up to float rounding. The ``"mean"`` path is a separate, unchanged
            code path, so existing runs are bit for bit what they were.

    Returns:
        A float32 scalar (``"mean"``) or ``[B]`` (``"none"``), whatever the input dtype or autocast state.

    Examples:
        >>> p = torch.randn(8, 5)
        >>> float(operator_loss("mse", p, p))
        0.0
        >>> operator_loss("cosine", p, torch.randn(8, 5), negatives=True).shape
        torch.Size([])
        >>> operator_loss("mse", p, torch.randn(8, 5), reduction="none").shape
        torch.Size([8])
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r} is not allowed; allowed: mean, none")
    operator = canonical_operator(operator)
    if prediction.ndim != 2 or prediction.shape != target.shape:
        raise ValueError(
            f"prediction/target: expected two [B, D] tensors of equal shape, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        prediction, target = prediction.float(), target.float()
        if reduction == "none":
            return _per_example_loss(operator, prediction, target, negatives, bilinear_weight)
        labels = torch.arange(prediction.shape[0], device=prediction.device)
        if operator == "mse":
            if not negatives:
                return F.mse_loss(prediction, target)
            # -||p_i - t_j||² = 2 p_i·t_j - ||t_j||² - ||p_i||²; the last term is constant along a row
            # and cancels in the softmax, so it is dropped (exact, and avoids cdist's sqrt at 0).
            logits = 2.0 * prediction @ target.T - target.pow(2).sum(dim=1)[None, :]
            return F.cross_entropy(logits, labels)
        if operator == "nmse":
            prediction, target = F.normalize(prediction, dim=1), F.normalize(target, dim=1)
            positive = F.mse_loss(prediction, target)
            if not negatives:
                return positive
            # Samples are drawn uniformly from the replay, so pairing each one with its neighbour in
            # the batch is already a random pairing; unlike randperm it never pairs a sample with
            # itself and consumes no random numbers. Normalised vectors keep this term in [0, 4/D].
            return positive - F.mse_loss(prediction, target.roll(1, dims=0))
        scores = _scores(operator, prediction, target, bilinear_weight, pairwise=negatives)
        # The official code subtracts each row's max first; cross_entropy is invariant to it and
        # already stable, so it is not repeated here.
        return F.cross_entropy(scores, labels) if negatives else _diagonal_cross_entropy(scores)


def _per_example_loss(operator: str, prediction: Tensor, target: Tensor, negatives: bool,
                      bilinear_weight: Tensor | None) -> Tensor:
    """``[B]`` per-example losses of :func:`operator_loss` (float32 inputs, autocast off); kept apart from the
    batch-mean path so that path stays the code it was (bit-identical results for every existing run)."""
    labels = torch.arange(prediction.shape[0], device=prediction.device)
    if operator == "mse":
        if not negatives:
            return (prediction - target).pow(2).mean(dim=1)  # F.mse_loss averages over B·D = mean of row means
        logits = 2.0 * prediction @ target.T - target.pow(2).sum(dim=1)[None, :]
        return F.cross_entropy(logits, labels, reduction="none")
    if operator == "nmse":
        prediction, target = F.normalize(prediction, dim=1), F.normalize(target, dim=1)
        positive = (prediction - target).pow(2).mean(dim=1)
        if not negatives:
            return positive
        return positive - (prediction - target.roll(1, dims=0)).pow(2).mean(dim=1)
    scores = _scores(operator, prediction, target, bilinear_weight, pairwise=negatives)
    return F.cross_entropy(scores, labels, reduction="none") if negatives else _diagonal_cross_entropy(scores, "none")
