"""RL-AUX: per-example auxiliary weights (and labels) chosen by a learning agent (Goldfeder, So, Lipson, "Generating
Auxiliary Tasks with Reinforcement Learning", arXiv 2510.22940), as a weighting callback.

A small policy (the "labeller", an MLP over each example's features) picks, per example ``b`` and auxiliary loss
``n``, a bin ``k`` of a log-spaced grid of weight factors (by default the authors' 21 bins, ``k ↦ 2^(8k/20 − 3)``,
0.125 … 32). The loss to backpropagate is ``L = L_main + Σ_n mean_b( w[b, n] · L_n[b] )`` with ``L_n[b]`` the
per-example auxiliary losses (``[B]``, the weighting contract's per-example form).

**Credit** (``credit``), i.e. what each choice is scored by:

- ``"example"`` (default): each choice on its own. ``c[b, n] = ⟨∇θ L_n[b], ∇θ L_main^held⟩`` over the shared
  parameters (``callbacks/credit.py``: all ``B × K`` values in two extra reverse passes; the held-out gradient
  averaged over DDP ranks first), normalised by its RMS over the batch (and ranks). To first order the update lowers
  the held-out main loss by ``(η/B) · w[b, n] · c[b, n]``: that is the reward of choosing weight ``w`` for
  ``(b, n)``, known for every bin, so the advantage of the sampled bin is ``(w[b, n] − E_π[w | b, n]) · ĉ[b, n]``
  (the policy's own expected reward as the baseline: an advantage of ``ĉ`` alone would not depend on the choice
  and teach nothing). A label choice is scored by ``w · ĉ`` of its example minus the batch's mean. The policy
  follows ``E_π[w]`` up where ``c > 0`` and down where ``c < 0``.
- ``"batch"``: the estimator of version 0.3, for reproducing the authors. One reward per update, the held-out main
  loss before minus after it (``heldout_main_loss(resample=True)`` in ``combine``, ``resample=False`` in
  ``after_update``: the same batch, crops and samples), minus a moving average, over its running standard deviation
  (clipped at ±5), shared by all ``B × K`` choices: REINFORCE's noise grows with their number, and on SAC (256 × 5
  choices) the policy learned nothing measurable.

The policy takes one REINFORCE step on ``−mean_b Σ A · log π − entropy_coef · H`` with its own Adam (not PPO-clip, as
the authors' SB3 agent: each update is a one-step contextual bandit whose samples are used once, so PPO's clipped
ratio, which protects re-used samples, has nothing to protect).

**Do no harm.** ``initial_weight=1``: the weight head starts tilted, ``π₀(k) ∝ w_k^λ`` with ``λ`` solved so that
``E[w] = 1`` (the authors' uniform start has a mean factor of 6.28: it applied an adversarial loss about 6x), and the
entropy bonus is relative to that start (``−KL(π ‖ π₀)``), so a weak signal pulls back to ``E[w] = 1``; ``None``: a
uniform start and a plain entropy bonus. With ``credit="example"`` an example whose auxiliary gradient opposes the
held-out main gradient has ``c < 0`` and its expected weight falls below 1 (``tests/test_rlaux_credit.py``). The
guarantee is first order and in expectation: at the start the update equals the unweighted one on average, and the
weights move along the held-out main loss's first-order decrease. Limits: curvature is ignored (weights up to
``max_factor`` where the credit is positive can still make a step too large), sampled weights add noise around the
mean, one held-out batch can mislead, nothing bounds a rise of the main loss beyond first order, and a loss that at
weight 1 already drives the main loss up faster than the weights learn (minus 4x the main loss) diverges.

With ``mode="labels"`` (or ``"labels+weights"``) the policy also picks each example's auxiliary *label* among the
slots the module declares (``aux_label_slots() -> {name: slots}``; the module calls ``rule.choose_labels(name,
example_features, allowed_mask)`` → ``LongTensor [B]`` first); ``"labels"`` keeps every weight at 1.

Departures from the authors' code (``MatthewSo/rl-aux``), and why:

- Credit (``"example"``): per-example first-order credit from a held-out gradient, instead of one reward per primary
  update (batch 100), zero on the other 99 steps and spread by GAE (0.94^k); the baseline is the policy's expected
  first-order reward per choice instead of a state-independent value net.
- Start: expected weight 1 (above), not a uniform policy (mean factor 6.28). Agent: REINFORCE, not SB3 PPO; Adam
  lr 1e-3, not 3e-4 (too slow to stop minus twice the main loss on half the examples, ``tests/contract_mixed_aux.py``).
- Reward of ``credit="batch"``: the held-out main loss before minus after *each* update, instead of minus the primary
  loss on a random batch after the update (a level that drifts as training proceeds).
- Diversity bonus (their +0.2 × entropy of the batch-averaged auxiliary targets, in the reward): the same weight
  (``label_diversity_coef``), as a differentiable term of the policy's objective.
- No practice phase on a throwaway copy of the network: the agent learns on the real run, sampling its actions (the
  greedy action where gradients are off, e.g. validation). Observation: the module's ``example_features`` (SAC: the
  online features of the window's first state, detached) instead of the raw image.
- DDP (the authors train on one device): credit (held-out gradient and scale) or rewards averaged over ranks, the
  policy's gradients all-reduced before its step, initialisation and sampler seeded alike on every rank.

Cost (``callbacks/credit.py`` has the command): 1.31x a FixedWeights ``SACModule`` update at the default
``reward_every=4`` (within the 1.5x budget); 1.97x with credit on every update; the updates between are sampled only.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from a2ls_lightning.callbacks.credit import (
    HeldoutRule,
    batch_advantage,
    move_optimizer_state,
    normalise_credit,
    seeded,
    step_with_mean_gradients,
    weight_spread,
)
from a2ls_lightning.callbacks.gradients import all_reduce_mean
from a2ls_lightning.callbacks.labeller import Labeller, tilt_for_mean
from a2ls_lightning.validation import check, check_choice, check_integer, check_number

RLAuxMode, MODES = Literal["weights", "labels", "labels+weights"], ("weights", "labels", "labels+weights")
Credit, CREDITS = Literal["example", "batch"], ("example", "batch")
ADVANTAGE_CLIP = 5.0  # a normalised advantage (or credit) beyond ±5 is an outlier (a loss spike), not information


class RLAux(HeldoutRule):
    """RL-AUX per-example weighting (and labelling) of auxiliary losses, as a Lightning callback (see the module
    docstring for the rule, its credit, the do-no-harm start, the departures from the authors' code and the cost).

    Needs a module that computes per-example auxiliary losses (``per_example_losses = True``: it passes ``[B]``
    losses and ``example_features`` to ``combine``) and has ``heldout_main_loss(resample, with_graph)``
    (``SACModule`` does both; ``credit="batch"`` needs no ``with_graph``); for the labels modes also
    ``aux_label_slots()``. Outside a Trainer, call :meth:`attach` with such a module first.

    Args:
        mode: ``"weights"``, ``"labels"`` (per-example auxiliary labels, weights 1) or ``"labels+weights"``.
        credit: ``"example"`` (each choice scored by its own first-order credit) or ``"batch"`` (one held-out
            reward per update for all choices, version 0.3's estimator).
        bins: number of weight bins, >= 2 (21: the authors' grid).
        min_factor: weight of bin 0, > 0 (0.125 = 2^-3).
        max_factor: weight of the last bin, > ``min_factor`` (32 = 2^5); bins are log-spaced in between.
        initial_weight: expected weight of the untrained policy, strictly between ``min_factor`` and ``max_factor``
            (1: the update starts as the unweighted one on average); ``None``: a uniform start (the authors').
        hidden_dim: width of the policy's two hidden layers.
        lr: Adam learning rate of the policy (1e-3; the authors' 3e-4 let a loss opposing the main one diverge).
        entropy_coef: weight of the policy's entropy bonus (relative to its start), >= 0 (0.01, the authors').
        label_diversity_coef: labels modes: weight of a bonus for the entropy of the batch-averaged labels, >= 0 (0.2:
            the authors'). 0: off.
        baseline_decay: ``credit="batch"``: decay of the moving average (and variance) of rewards, in [0, 1).
        reward_every: measure credit (or the reward) and step the policy every this many updates; between them the
            policy's choices are sampled and used, not learned from.
        seed: seed of the policy's initialisation and of its sampling generator (the same on every DDP rank).

    Example (a plain loop; ``net`` has ``heldout_main_loss(resample, with_graph)``)::

        rule = RLAux(); rule.attach(net)
        total = rule.combine(main_loss, {"aux": per_example_loss}, net.encoder.parameters(),
                             example_features=features.detach())   # per_example_loss: [B], features: [B, D]
        total.backward(); optimizer.step(); rule.after_update()
    """

    def __init__(
        self,
        mode: RLAuxMode = "weights",
        credit: Credit = "example",
        bins: int = 21,
        min_factor: float = 0.125,
        max_factor: float = 32.0,
        initial_weight: float | None = 1.0,
        hidden_dim: int = 64,
        lr: float = 1e-3,
        entropy_coef: float = 0.01,
        label_diversity_coef: float = 0.2,
        baseline_decay: float = 0.99,
        reward_every: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.mode = check_choice("RLAux.mode", mode, MODES)
        self.credit_mode = check_choice("RLAux.credit", credit, CREDITS)
        self.needs_heldout_graph = self.credit_mode == "example"
        self.bins = check_integer("RLAux.bins", bins, 2)
        self.min_factor = check_number("RLAux.min_factor", min_factor, low=0.0, strict=True)
        self.max_factor = check_number("RLAux.max_factor", max_factor, low=self.min_factor, strict=True)
        if initial_weight is not None:
            initial_weight = check_number("RLAux.initial_weight", initial_weight, low=self.min_factor, strict=True)
            check(initial_weight < self.max_factor, f"RLAux.initial_weight={initial_weight!r} is not allowed; "
                  f"allowed: None or a number > min_factor ({self.min_factor}) and < max_factor ({self.max_factor})")
        self.initial_weight = initial_weight
        self.hidden_dim = check_integer("RLAux.hidden_dim", hidden_dim, 1)
        self.lr = check_number("RLAux.lr", lr, low=0.0, strict=True)
        self.entropy_coef = check_number("RLAux.entropy_coef", entropy_coef, low=0.0)
        self.label_diversity_coef = check_number("RLAux.label_diversity_coef", label_diversity_coef, low=0.0)
        self.baseline_decay = check_number("RLAux.baseline_decay", baseline_decay, low=0.0)
        check(self.baseline_decay < 1.0, f"RLAux.baseline_decay={baseline_decay!r} is not allowed; allowed: a "
              "finite number >= 0.0 and < 1")
        self.reward_every = check_integer("RLAux.reward_every", reward_every, 1)
        self.seed = check_integer("RLAux.seed", seed, 0)
        # bin k ↦ min · (max/min)^(k/(bins−1)): the authors' 2^(8k/20 − 3) with the defaults
        self.factors = torch.logspace(math.log10(self.min_factor), math.log10(self.max_factor), self.bins,
                                      dtype=torch.float64).float()
        self.policy: Labeller | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.generator: torch.Generator | None = None
        self._names: list[str] = []
        self._label_slots: dict[str, int] = {}
        self._pending: dict[str, Any] | None = None  # the update in flight (combine → after_update); not saved
        self._weight_log_p: Tensor | None = None  # [B, K] log-probabilities of this update's weight bins
        self._label_log_p: dict[str, Tensor] = {}  # name → [B] log-probabilities of this update's labels
        self._entropies: list[Tensor] = []  # [] mean entropies of this update's choices
        self._diversities: list[Tensor] = []  # [] entropies of the batch-averaged label distributions (labels)
        # reward statistics of credit="batch" (tensors: no host sync per update) and counters
        self._stats = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # see credit.batch_advantage
        self._rewards_seen = 0
        self._updates = 0
        self._last = {"reward": torch.zeros(()), "entropy": torch.zeros(()), "advantage": torch.zeros(())}
        self._mean_weights: dict[str, Tensor] = {}
        self._last_weights: Tensor | None = None  # [B, K] the last training batch's weights (logged as quantiles)

    # --- wiring -------------------------------------------------------------------------------------------
    def attach(self, module: Any) -> None:
        """Use ``module.heldout_main_loss`` (and ``module.aux_label_slots`` in the labels modes); refuse, in one
        line naming what is missing, a module that lacks them. ``setup`` calls this under a Trainer."""
        super().attach(module)
        if "labels" in self.mode:
            kind = type(module).__name__
            slots = getattr(module, "aux_label_slots", None)
            check(callable(slots), f"RLAux.mode={self.mode!r} needs a module that declares auxiliary label slots "
                  f"(aux_label_slots() -> {{name: slots}}); {kind} declares none: use mode='weights'")
            self._label_slots = {str(k): check_integer(f"{kind}.aux_label_slots()[{k!r}]", v, 2)
                                 for k, v in dict(slots()).items()}

    def _build(self, in_dim: int, names: list[str], device: torch.device) -> None:
        """The policy, its optimizer and its generator, seeded alike on every rank (first use, or a resume)."""
        n_weighted = len(names) if "weights" in self.mode else 0
        bias = torch.zeros(self.bins, dtype=torch.float64)
        if self.initial_weight is not None:  # π_k ∝ w_k^λ with E_π[w] = initial_weight
            bias = tilt_for_mean(self.factors.cpu(), self.initial_weight) * self.factors.cpu().double().log()
        # the entropy bonus is taken relative to this start, −KL(π ‖ π₀) + const: with a weak signal it pulls the
        # policy back to E[w] = initial_weight, where a plain entropy bonus pulls it to the grid's mean (6.28)
        self._prior_shift = (torch.log_softmax(bias, 0) + math.log(self.bins)).float().to(device)  # 0: uniform
        self.policy = seeded(self.seed, lambda: Labeller(in_dim, self.hidden_dim, n_weighted, self.bins,
                                                         self._label_slots, bias))
        self.policy.to(device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.generator = torch.Generator(device=device).manual_seed(self.seed + 1)
        self._names = list(names)
        self._in_dim = in_dim
        self.factors = self.factors.to(device)
        self._stats = self._stats.to(device)

    def _ensure_built(self, features: Tensor, names: list[str]) -> None:
        if self.policy is None:
            self._build(features.shape[1], names, features.device)
        check(features.shape[1] == self._in_dim, f"RLAux: example_features have {features.shape[1]} columns, the "
              f"policy was built for {self._in_dim}")

    # --- the contract -------------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """Mean weight of each auxiliary loss over the last batch (1.0 before any; one host sync)."""
        return {name: float(self._mean_weights[name]) if name in self._mean_weights else 1.0 for name in self._weights}

    def _learning_now(self) -> bool:
        return torch.is_grad_enabled() and self._updates % self.reward_every == 0

    def expected_weights(self, example_features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, K]``: the policy's expected weight ``E_π[w]`` per example and loss (no gradient)."""
        with torch.no_grad():
            p = torch.softmax(self.policy.weight_logits(example_features.float()), -1)  # [B, K, bins]
            return (p * self.factors).sum(-1)

    def choose_labels(self, name: str, example_features: Tensor, allowed_mask: Tensor | None = None) -> Tensor:
        """Each example's auxiliary label for loss ``name``: ``LongTensor [B]`` in ``[0, slots)``, sampled among the
        allowed slots (``allowed_mask``: ``[B, slots]`` bool; ``None``: all) while training, the most likely one
        where gradients are off. Call before computing that loss, in the same update as ``combine``."""
        check(name in self._label_slots, f"RLAux.choose_labels: {name!r} is not a declared label slot; declared: "
              f"{sorted(self._label_slots)}")
        features = example_features.detach().float()
        if self.policy is None and "weights" in self.mode:  # the weight head's size: the module's loss names
            names = getattr(self._module() if self._module is not None else None, "aux_loss_names", None)
            check(callable(names), f"RLAux.mode={self.mode!r}: labels asked for before the first combine need the "
                  "module's aux_loss_names() (the losses to weigh)")
            self._names = list(names())
        self._ensure_built(features, self._names)
        training, learning = torch.is_grad_enabled(), self._learning_now()
        with torch.set_grad_enabled(learning), torch.autocast(features.device.type, enabled=False):
            logits = self.policy.label_logits(name, features)  # [B, slots]
            if allowed_mask is not None:
                logits = logits.masked_fill(~allowed_mask.to(torch.bool), float("-inf"))
            log_p = torch.log_softmax(logits, dim=-1)
            if not training:  # e.g. validation: the most likely label
                return log_p.argmax(dim=-1)
            labels = torch.multinomial(log_p.exp(), 1, generator=self.generator).squeeze(1)  # [B]
            if learning:
                self._label_log_p[name] = log_p.gather(1, labels[:, None]).squeeze(1)
                p = log_p.exp()  # masked slots: p = 0 and log p = -inf, which count 0 in the entropy
                self._entropies.append(-(p * torch.where(p > 0, log_p, 0.0)).sum(-1).mean())
                average = p.mean(0)  # [slots]: how the batch's labels spread over the slots
                self._diversities.append(-(average * torch.log(average.clamp_min(1e-12))).sum())
        return labels

    def _forget_choices(self) -> None:
        self._weight_log_p, self._label_log_p, self._entropies, self._diversities = None, {}, [], []

    def _combine(self, main_loss, aux_losses, names, shared_parameters, example_features=None):
        features = self._check_inputs("RLAux", aux_losses, names, example_features)
        if self.policy is None:
            self._ensure_built(features, names)
        check(names == self._names or "weights" not in self.mode,
              f"RLAux: auxiliary losses {names} differ from those the policy was built for, {self._names}")
        self._names = list(names)  # "labels": a policy built by choose_labels had none (its credit columns)
        training, learning = torch.is_grad_enabled(), self._learning_now()
        credit = None
        if learning and self.credit_mode == "batch":  # before the step: the held-out loss the update should lower
            self._pending = {"before": self._heldout(resample=True)}
        elif learning:  # [B, K] normalised per-example credit (outliers clipped)
            raw = self.credit(aux_losses, shared_parameters)
            credit = normalise_credit(raw).clamp(-ADVANTAGE_CLIP, ADVANTAGE_CLIP)
        elif training:  # choices of an update without credit (reward_every > 1) are not learned from
            self._forget_choices()
        expected = None
        if "weights" in self.mode:
            with torch.set_grad_enabled(learning), torch.autocast(features.device.type, enabled=False):
                log_p = torch.log_softmax(self.policy.weight_logits(features), dim=-1)  # [B, K, bins]
                if training:
                    bins = torch.multinomial(log_p.exp().flatten(0, 1), 1, generator=self.generator)
                    bins = bins.view(log_p.shape[:2])  # [B, K]
                else:  # e.g. validation: the most likely bin
                    bins = log_p.argmax(dim=-1)
                if learning:
                    self._weight_log_p = log_p.gather(2, bins[..., None]).squeeze(2)  # [B, K]
                    self._entropies.append(-(log_p.exp() * (log_p - self._prior_shift)).sum(-1).mean())
                    expected = (log_p.detach().exp() * self.factors).sum(-1)  # [B, K] E_π[w]
            weights = self.factors[bins]  # [B, K]
        else:
            weights = features.new_ones(features.shape[0], len(names))
        if credit is not None:
            self._pending = {"credit": credit, "weights": weights, "expected": expected,
                             "reward": (weights * raw).sum(1).mean()}
        self._mean_weights = dict(zip(names, weights.mean(0).unbind()))
        if training and "weights" in self.mode:
            self._last_weights = weights.detach()
        total = main_loss
        for k, loss in enumerate(aux_losses):
            total = total + (weights[:, k].to(loss.dtype) * loss).mean()
        if training:
            self._updates += 1
        return total

    def after_update(self) -> None:
        """After the optimizer step: the advantages (per example, or from the held-out reward averaged over ranks)
        and one REINFORCE step of the policy (its gradients averaged over ranks first)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        weight_log_p, label_log_p = self._weight_log_p, self._label_log_p
        entropies, diversities = self._entropies, self._diversities
        self._forget_choices()
        if "credit" in pending:
            reward = all_reduce_mean(pending["reward"].reshape(1)).reshape(())
            weighted = pending["credit"] * pending["weights"]  # [B, K] first-order reward of each choice
            surrogate, advantage = 0.0, torch.zeros(())
            if weight_log_p is not None:
                advantage = (pending["weights"] - pending["expected"]) * pending["credit"]  # [B, K]
                surrogate = (advantage * weight_log_p).sum(1)  # [B]
            for name, log_p in label_log_p.items():
                k = self._names.index(name) if name in self._names else None
                if k is not None:  # a label is scored by its example's reward against the batch's mean
                    score = weighted[:, k]
                    surrogate = surrogate + (score - all_reduce_mean(score.mean().reshape(1))) * log_p
            log_term = surrogate.mean() if isinstance(surrogate, Tensor) else None
            advantage = advantage.abs().mean()
            self._rewards_seen += 1
        else:
            reward = all_reduce_mean((pending["before"] - self._heldout(resample=False)).reshape(1)).reshape(())
            advantage, self._stats = batch_advantage(self._stats, self._rewards_seen, reward, self.baseline_decay)
            self._rewards_seen += 1
            parts = ([weight_log_p.sum(1)] if weight_log_p is not None else []) + list(label_log_p.values())
            log_term = advantage.float() * torch.stack(parts).sum(0).mean() if parts else None
        self._last = {"reward": reward.detach(), "advantage": advantage.detach().float(),
                      "entropy": torch.stack(entropies).mean().detach() if entropies else self._last["entropy"]}
        if log_term is None:
            return
        objective = -log_term - self.entropy_coef * torch.stack(entropies).mean()
        if diversities:  # a differentiable bonus here, where the authors add it to the reward
            objective = objective - self.label_diversity_coef * torch.stack(diversities).mean()
        step_with_mean_gradients(objective, self.policy, self.optimizer)

    def metrics(self) -> dict[str, float]:
        """``aux_weight/<name>`` and ``rlaux/mean_weight/<name>`` (mean weight over the last batch),
        ``rlaux/reward`` (``"batch"``: the held-out loss before − after; ``"example"``: ``mean_b Σ_n w·c``, the
        first-order decrease up to ``η/B``; averaged over ranks), ``rlaux/advantage`` (``"example"``: its mean
        magnitude), ``rlaux/entropy`` (the bonus term, ``H(π) + Σ π log(bins · π₀)``: the entropy under a uniform start,
        negative when far from a tilted one), and the weights' 10th and 90th percentiles over the last training batch,
        ``rlaux/weight_p10/<name>``, ``rlaux/weight_p90/<name>`` (weights modes)."""
        out = super().metrics()
        out.update({f"rlaux/mean_weight/{name}": value for name, value in self.weights.items()})
        if self._last_weights is not None and self._last_weights.shape[1] == len(self._names):
            out.update(weight_spread("rlaux", self._last_weights, self._names))
        out.update({f"rlaux/{key}": float(value) for key, value in self._last.items()})
        return out

    # --- exact resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # An update in flight (combine done, after_update not yet: a checkpoint written by a callback whose
        # on_train_batch_end runs before ours) is finished first, after its optimizer step as always: its
        # log-probabilities are a graph, which cannot be saved; our own after_update then finds nothing pending.
        if self._pending is not None:
            self.after_update()
        return {
            "weights": dict(self._weights),
            "mean_weights": {k: v.detach().cpu().clone() for k, v in self._mean_weights.items()},
            "names": list(self._names),
            "in_dim": getattr(self, "_in_dim", None),
            "label_slots": dict(self._label_slots),
            "policy": None if self.policy is None else {k: v.detach().cpu().clone()
                                                        for k, v in self.policy.state_dict().items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "generator": None if self.generator is None else self.generator.get_state(),
            "stats": self._stats.detach().cpu().clone(),
            "rewards_seen": self._rewards_seen,
            "updates": self._updates,
            "last": {k: v.detach().cpu().clone() for k, v in self._last.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = dict(state_dict["weights"])
        self._mean_weights = dict(state_dict["mean_weights"])
        self._label_slots = dict(state_dict["label_slots"]) or self._label_slots
        self._rewards_seen, self._updates = int(state_dict["rewards_seen"]), int(state_dict["updates"])
        self._last = dict(state_dict["last"])
        self._pending = None
        self._forget_choices()
        if state_dict["policy"] is None:
            self.policy = self.optimizer = self.generator = None
            self._stats = state_dict["stats"].clone()
            return
        self._build(int(state_dict["in_dim"]), list(state_dict["names"]), torch.device("cpu"))
        self.policy.load_state_dict(state_dict["policy"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.generator.set_state(state_dict["generator"])
        self._stats = state_dict["stats"].clone()

    def on_fit_start(self, trainer, pl_module) -> None:
        # a policy restored from a checkpoint is built on the CPU: move it where the module trains
        device = pl_module.device
        if self.policy is not None and self.factors.device != device:
            self.policy.to(device)
            move_optimizer_state(self.optimizer, device)
            if self.generator.device != device:  # a CPU generator's state does not carry over to a device one
                self.generator = torch.Generator(device=device).manual_seed(self.seed + 1 + self._updates)
            self.factors, self._prior_shift = self.factors.to(device), self._prior_shift.to(device)
            self._stats = self._stats.to(device)
            self._mean_weights = {k: v.to(device) for k, v in self._mean_weights.items()}
