"""RL-AUX: per-example auxiliary weights (and labels) chosen by a learning agent (Goldfeder, So, Lipson, "Generating
Auxiliary Tasks with Reinforcement Learning", arXiv 2510.22940), as a weighting callback.

A small policy (the "labeller", an MLP over each example's features) picks, per example ``b`` and auxiliary loss
``n``, a bin ``k`` of a log-spaced grid of weight factors (by default the authors' 21 bins, ``k ↦ 2^(8k/20 − 3)``,
0.125 … 32). The loss to backpropagate is

    L = L_main + Σ_n mean_b( w[b, n] · L_n[b] )

with ``L_n[b]`` the per-example auxiliary losses (``[B]``, the weighting contract's per-example form). The policy is
rewarded by what the update did to the main loss on a held-out batch, through one module method,
``heldout_main_loss(resample)``:

    reward = heldout_main_loss(resample=True)  [in combine, before the step]
           − heldout_main_loss(resample=False) [in after_update, after it: the same batch, crops and samples]

a before/after difference, so its level does not drift as training lowers (or, in RL, raises) the main loss.
The advantage is the reward minus an exponential moving average of past rewards, divided by their running standard
deviation (clipped at ±5); the policy takes one REINFORCE step on ``−A · mean_b Σ_n log π(k[b, n] | x_b) −
entropy_coef · H`` with its own Adam (not the module's optimizer).

With ``mode="labels"`` (or ``"labels+weights"``) the policy also picks each example's auxiliary *label* among the
slots the module declares: the module exposes ``aux_label_slots() -> {name: number of slots}`` and, before computing
that loss, asks ``rule.choose_labels(name, example_features, allowed_mask)`` (``allowed_mask``: ``[B, slots]``
bool, e.g. the 5 sub-classes of the example's super-class) → ``LongTensor [B]``. ``"labels"`` keeps every weight at 1
(the paper's "RL-AUX labels, equal weight"). ``SACModule`` declares no label slots: the labels modes are refused for it.

Why REINFORCE with a baseline, not PPO-clip (the authors use SB3 PPO): each update is a one-step contextual bandit.
The policy's choices change one update's gradient and the reward is that update's effect; there is no temporal
credit to assign (γ and GAE have nothing to discount), and every sample is used once (the next update has new
examples), so PPO's clipped ratio, which protects *re-used* samples from a policy that moved away from the one that
drew them, has nothing to protect. One policy-gradient step per update with a normalised advantage is the same
estimator PPO would compute in its first epoch, without the rollout buffer, the value network or the extra epochs.

Departures from the authors' code (``MatthewSo/rl-aux``), and why:

- Agent: REINFORCE with a moving-average baseline (above) instead of SB3 PPO (lr 3e-4, entropy 0.01, 10 epochs,
  γ 0.99, GAE 0.95, clip 0.2). Kept: Adam with lr 3e-4 and an entropy coefficient of 0.01 by default.
- Reward: the held-out main loss before minus after *each* update (the same batch, crops and samples), instead of
  minus the primary loss on a random batch of 256 after the update, once per primary update (batch 100), zero on the
  other 99 steps. The level drifts as training proceeds (so the agent is credited for the time, not its choices);
  the difference does not, and every update gives a reward, so there is 100x more signal.
- Diversity bonus (their +0.2 × entropy of the batch-averaged auxiliary targets, added to the reward): kept with
  the same weight (``label_diversity_coef``), as a differentiable term of the policy's objective (the entropy of
  its batch-averaged label distribution) rather than a reward, so it shapes the labeller directly instead of adding
  noise to every update's advantage. Without it a labeller with a large step collapsed to one slot per superclass
  in the toy (``scripts/rlaux_toy.py``).
- No practice phase on a throwaway copy of the network (their every epoch: the agent learns on a copy, then the
  real network trains with the agent's most likely actions; twice the compute). The agent learns on the real run,
  sampling its actions (on-policy; the greedy action only where gradients are off, e.g. validation).
- Observation: the example's features from the module (``example_features``: SAC's online features of the window's
  first state, detached) instead of the raw image; like the authors, no label and no training-progress input.
- Weights: the authors' grid and no normalisation over the batch (kept), the mean over the batch of the weighted
  per-example losses (kept). Bins and range are settings.
- DDP (the authors train on one device): rewards are averaged over ranks and the policy's gradients all-reduced
  (mean) before its step; its initialisation and its sampling generator are seeded alike on every rank, so every
  rank holds the same policy.

Cost (``cd scripts && python benchmark_olaux_cost.py --module --threads 1 --clock cpu --rounds 5 --updates 100``:
``SACModule.training_step`` in a Trainer, state cheetah-run sizes of ``configs/benchmark_cheetah_state_cpu.yaml``,
five auxiliary losses, hidden 256, batch 256, one thread, CPU time, on a 2-core machine busy with two other runs):
FixedWeights 13.7 ms per update, OLAux 1.18x, **RLAux (the default, ``reward_every=4``) 1.22x** (quartiles of rounds
1.21-1.30), within the 1.5x budget; ``reward_every=1`` 1.58x (1.57-1.72). What dominates a rewarded update: the
reward's two held-out critic evaluations, 2.6 + 2.3 ms (``SACModule.heldout_main_loss``: a forward of the encoder,
the actor at s_1 and both critics on a second batch of 256), about half of its extra time; the rest is the policy's
forward, sampling and REINFORCE step, and the per-example (eager) losses. ``reward_every=k`` pays the two evaluations
and the policy step once every ``k`` updates (the choices of the other updates are sampled from the current policy
but not learned from), hence the default of 4: the policy still takes a step every 4 updates (about 6,000 steps in
a 100k-env-step SAC run).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Literal

import torch
from torch import Tensor, nn

from a2ls_lightning.callbacks.gradients import all_reduce_mean
from a2ls_lightning.callbacks.weighting import AuxWeighting
from a2ls_lightning.validation import check, check_choice, check_integer, check_number

RLAuxMode = Literal["weights", "labels", "labels+weights"]
MODES: tuple[str, ...] = ("weights", "labels", "labels+weights")
ADVANTAGE_CLIP = 5.0  # a normalised advantage beyond ±5 is an outlier (a spike of the loss), not information


class Labeller(nn.Module):
    """The policy: ``[B, D]`` features → ``[B, K, bins]`` weight logits and, per labelled loss, ``[B, slots]``
    label logits. A two-layer tanh trunk; the heads start at zero (a uniform policy, as a freshly initialised
    SB3 policy is nearly)."""

    def __init__(self, in_dim: int, hidden_dim: int, n_losses: int, bins: int, label_slots: dict[str, int]) -> None:
        super().__init__()
        self.n_losses, self.bins = n_losses, bins
        # Features are not normalised per example (a LayerNorm here mixed a one-dimension marker into the other
        # dimensions and the opposing-loss test no longer separated the examples); their scale drifts as the module
        # trains (the toy's ReLU features grew 9x in 60 epochs), which a running per-feature standardisation, averaged
        # over DDP ranks, would address.
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, hidden_dim),
                                   nn.Tanh())
        self.weight_head = nn.Linear(hidden_dim, n_losses * bins) if n_losses else None
        self.label_heads = nn.ModuleDict({name: nn.Linear(hidden_dim, n) for name, n in label_slots.items()})
        for head in [self.weight_head, *self.label_heads.values()]:
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def weight_logits(self, features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, K, bins]``."""
        return self.weight_head(self.trunk(features)).unflatten(1, (self.n_losses, self.bins))

    def label_logits(self, name: str, features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, slots]``."""
        return self.label_heads[name](self.trunk(features))


class RLAux(AuxWeighting):
    """RL-AUX per-example weighting (and labelling) of auxiliary losses, as a Lightning callback (see the module
    docstring for the rule, the departures from the authors' code and the cost).

    Needs a module that computes per-example auxiliary losses (``per_example_losses = True``: it passes ``[B]``
    losses and ``example_features`` to ``combine``) and has ``heldout_main_loss(resample: bool) -> Tensor``
    (``SACModule`` does both); for the labels modes also ``aux_label_slots()``. Outside a Trainer, call
    :meth:`attach` with such a module (or any object with those methods) first.

    Args:
        mode: ``"weights"`` (per-example weights), ``"labels"`` (per-example auxiliary labels, weights 1) or
            ``"labels+weights"``.
        bins: number of weight bins, >= 2 (21: the authors' grid).
        min_factor: weight of bin 0, > 0 (0.125 = 2^-3).
        max_factor: weight of the last bin, > ``min_factor`` (32 = 2^5); bins are log-spaced in between.
        hidden_dim: width of the policy's two hidden layers.
        lr: Adam learning rate of the policy (3e-4, SB3's and the authors' default).
        entropy_coef: weight of the policy's entropy bonus, >= 0 (0.01, the authors' PPO setting).
        label_diversity_coef: labels modes: weight of a bonus for the entropy of the batch-averaged label distribution,
            >= 0 (the authors reward 0.2 × the entropy of the batch-averaged targets); it keeps the labeller from
            giving every example of a group one slot (seen in the toy at a high ``lr``). 0: off.
        baseline_decay: decay of the moving average (and variance) of rewards that makes the advantage, in [0, 1).
        reward_every: measure the reward (two held-out evaluations) and step the policy every this many updates;
            between them the policy's choices are still sampled and used, but not learned from. 1: every update
            (1.58x FixedWeights' cost on SAC); 4 (default): 1.22x, within the 1.5x budget (see the cost above).
        seed: seed of the policy's initialisation and of its sampling generator (the same on every DDP rank).

    Example (a plain loop; ``net`` has ``heldout_main_loss``)::

        rule = RLAux(); rule.attach(net)
        total = rule.combine(main_loss, {"aux": per_example_loss}, net.encoder.parameters(),
                             example_features=features.detach())   # per_example_loss: [B], features: [B, D]
        total.backward(); optimizer.step(); rule.after_update()
    """

    per_example = True

    def __init__(
        self,
        mode: RLAuxMode = "weights",
        bins: int = 21,
        min_factor: float = 0.125,
        max_factor: float = 32.0,
        hidden_dim: int = 64,
        lr: float = 3e-4,
        entropy_coef: float = 0.01,
        label_diversity_coef: float = 0.2,
        baseline_decay: float = 0.99,
        reward_every: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.mode = check_choice("RLAux.mode", mode, MODES)
        self.bins = check_integer("RLAux.bins", bins, 2)
        self.min_factor = check_number("RLAux.min_factor", min_factor, low=0.0, strict=True)
        self.max_factor = check_number("RLAux.max_factor", max_factor, low=self.min_factor, strict=True)
        self.hidden_dim = check_integer("RLAux.hidden_dim", hidden_dim, 1)
        self.lr = check_number("RLAux.lr", lr, low=0.0, strict=True)
        self.entropy_coef = check_number("RLAux.entropy_coef", entropy_coef, low=0.0)
        self.label_diversity_coef = check_number("RLAux.label_diversity_coef", label_diversity_coef, low=0.0)
        self._diversities: list[Tensor] = []  # [] entropies of the batch-averaged label distributions (labels)
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
        self._module = None  # a weak reference to what gives heldout_main_loss (set by attach)
        # bookkeeping of the update in flight (combine → after_update); never saved: see state_dict
        self._pending: dict[str, Any] | None = None
        self._log_probs: list[Tensor] = []  # [B] summed log-probabilities of this update's choices
        self._entropies: list[Tensor] = []  # [] mean entropies of this update's choices
        # reward statistics (tensors: no host sync per update) and counters
        self._stats = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # see after_update
        self._rewards_seen = 0
        self._updates = 0
        self._last = {"reward": torch.zeros(()), "entropy": torch.zeros(()), "advantage": torch.zeros(())}
        self._mean_weights: dict[str, Tensor] = {}
        self._last_weights: Tensor | None = None  # [B, K] the last training batch's weights (logged as quantiles)

    # --- wiring -------------------------------------------------------------------------------------------
    def attach(self, module: Any) -> None:
        """Use ``module.heldout_main_loss`` (and ``module.aux_label_slots`` in the labels modes); refuse, in one
        line naming what is missing, a module that lacks them. ``setup`` calls this under a Trainer."""
        kind = type(module).__name__
        check(callable(getattr(module, "heldout_main_loss", None)),
              f"RLAux needs the module's heldout_main_loss(resample: bool) -> Tensor (the main loss on a held-out "
              f"batch, its reward); {kind} has none")
        if "labels" in self.mode:
            slots = getattr(module, "aux_label_slots", None)
            check(callable(slots), f"RLAux.mode={self.mode!r} needs a module that declares auxiliary label slots "
                  f"(aux_label_slots() -> {{name: slots}}); {kind} declares none: use mode='weights'")
            self._label_slots = {str(k): check_integer(f"{kind}.aux_label_slots()[{k!r}]", v, 2)
                                 for k, v in dict(slots()).items()}
        self._module = weakref.ref(module) if _weakrefable(module) else (lambda: module)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        check(getattr(pl_module, "per_example_losses", False),
              f"RLAux needs per-example auxiliary losses: {type(pl_module).__name__} does not declare "
              "per_example_losses = True (it must pass [B] losses and example_features to combine)")
        self.attach(pl_module)

    def _build(self, in_dim: int, names: list[str], device: torch.device) -> None:
        """The policy, its optimizer and its generator, seeded alike on every rank (first use, or a resume)."""
        n_weighted = len(names) if "weights" in self.mode else 0
        with torch.random.fork_rng(devices=[]):  # the initialisation draws from a seeded CPU generator only
            torch.manual_seed(self.seed)
            self.policy = Labeller(in_dim, self.hidden_dim, n_weighted, self.bins, self._label_slots)
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
                self._log_probs.append(log_p.gather(1, labels[:, None]).squeeze(1))
                p = log_p.exp()  # masked slots: p = 0 and log p = -inf, which count 0 in the entropy
                self._entropies.append(-(p * torch.where(p > 0, log_p, 0.0)).sum(-1).mean())
                average = p.mean(0)  # [slots]: how the batch's labels spread over the slots
                self._diversities.append(-(average * torch.log(average.clamp_min(1e-12))).sum())
        return labels

    def _combine(self, main_loss, aux_losses, names, shared_parameters, example_features=None):
        check(example_features is not None, "RLAux needs example_features ([B, D], detached) in combine: the module "
              "must pass them with its per-example losses")
        for name, loss in zip(names, aux_losses):
            check(loss.ndim == 1 and loss.shape[0] == example_features.shape[0],
                  f"RLAux needs per-example auxiliary losses: {name!r} has shape {tuple(loss.shape)}, expected "
                  f"[{example_features.shape[0]}]")
        features = example_features.detach().float()
        if self.policy is None:
            self._ensure_built(features, names)
        check(names == self._names or "weights" not in self.mode,
              f"RLAux: auxiliary losses {names} differ from those the policy was built for, {self._names}")
        training, learning = torch.is_grad_enabled(), self._learning_now()
        if learning:  # before the step: the held-out loss the update should lower
            self._pending = {"before": self._heldout(resample=True)}
        elif training:  # choices of an update without a reward (reward_every > 1) are not learned from
            self._log_probs.clear()
            self._entropies.clear()
            self._diversities.clear()
        if "weights" in self.mode:
            with torch.set_grad_enabled(learning), torch.autocast(features.device.type, enabled=False):
                log_p = torch.log_softmax(self.policy.weight_logits(features), dim=-1)  # [B, K, bins]
                if training:
                    bins = torch.multinomial(log_p.exp().flatten(0, 1), 1, generator=self.generator)
                    bins = bins.view(log_p.shape[:2])  # [B, K]
                else:  # e.g. validation: the most likely bin
                    bins = log_p.argmax(dim=-1)
                if learning:
                    self._log_probs.append(log_p.gather(2, bins[..., None]).squeeze(2).sum(1))  # [B]
                    self._entropies.append(-(log_p.exp() * log_p).sum(-1).mean())
            weights = self.factors[bins]  # [B, K]
        else:
            weights = features.new_ones(features.shape[0], len(names))
        self._mean_weights = dict(zip(names, weights.mean(0).unbind()))
        if training and "weights" in self.mode:
            self._last_weights = weights.detach()
        total = main_loss
        for k, loss in enumerate(aux_losses):
            total = total + (weights[:, k].to(loss.dtype) * loss).mean()
        if training:
            self._updates += 1
        return total

    def _heldout(self, resample: bool) -> Tensor:
        module = self._module() if self._module is not None else None
        check(module is not None, "RLAux needs the module's heldout_main_loss(): use it as a Trainer callback or "
              "call attach(module) first")
        with torch.no_grad():
            return module.heldout_main_loss(resample=resample).detach().float().reshape(())

    def after_update(self) -> None:
        """After the optimizer step: the reward (held-out loss before − after, averaged over ranks), the advantage,
        and one REINFORCE step of the policy (its gradients averaged over ranks first)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        reward = all_reduce_mean((pending["before"] - self._heldout(resample=False)).reshape(1)).reshape(())
        log_probs, entropies, diversities = self._log_probs, self._entropies, self._diversities
        self._log_probs, self._entropies, self._diversities = [], [], []
        # advantage against the statistics of the *earlier* rewards (a baseline that does not see this reward)
        # [EMA of rewards, EMA of squared deviations, decay^n]: EMAs started at 0, bias-corrected as Adam's are
        mean, var, power = self._stats.unbind()
        r, d = reward.double(), self.baseline_decay
        if self._rewards_seen >= 2:
            bias = 1.0 - power
            advantage = (r - mean / bias) / (var / bias).sqrt().clamp_min(1e-12)
            advantage = advantage.clamp(-ADVANTAGE_CLIP, ADVANTAGE_CLIP)
        else:  # no spread yet to normalise by: learn from the entropy bonus only
            advantage = torch.zeros_like(r)
        previous = mean / (1.0 - power) if self._rewards_seen else r
        self._stats = torch.stack([d * mean + (1 - d) * r, d * var + (1 - d) * (r - previous) ** 2, power * d])
        self._rewards_seen += 1
        self._last = {"reward": reward.detach(), "advantage": advantage.detach().float(),
                      "entropy": torch.stack(entropies).mean().detach() if entropies else self._last["entropy"]}
        if not log_probs:
            return
        log_prob = torch.stack(log_probs).sum(0).mean()  # mean over examples of Σ over this update's choices
        entropy = torch.stack(entropies).mean()
        objective = -(advantage.float() * log_prob) - self.entropy_coef * entropy
        if diversities:  # a differentiable bonus here, where the authors add it to the reward
            objective = objective - self.label_diversity_coef * torch.stack(diversities).mean()
        params = [p for p in self.policy.parameters()]
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
        flat = all_reduce_mean(flat)  # every rank takes the same step
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def metrics(self) -> dict[str, float]:
        """``aux_weight/<name>`` and ``rlaux/mean_weight/<name>`` (mean weight over the last batch),
        ``rlaux/reward`` (the last one, averaged over ranks), ``rlaux/advantage``, ``rlaux/entropy``, and how the
        weights spread over the last training batch's examples: ``rlaux/weight_p10/<name>``, ``rlaux/weight_p90/<name>``
        (10th and 90th percentiles, weights modes)."""
        out = super().metrics()
        out.update({f"rlaux/mean_weight/{name}": value for name, value in self.weights.items()})
        if self._last_weights is not None and self._last_weights.shape[1] == len(self._names):
            levels = torch.tensor([0.1, 0.9], device=self._last_weights.device)
            spread = torch.quantile(self._last_weights.float(), levels, dim=0).cpu()  # [2, K]
            for k, name in enumerate(self._names):
                out[f"rlaux/weight_p10/{name}"] = float(spread[0, k])
                out[f"rlaux/weight_p90/{name}"] = float(spread[1, k])
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
        self._stats = state_dict["stats"].clone()
        self._pending, self._log_probs, self._entropies, self._diversities = None, [], [], []
        if state_dict["policy"] is None:
            self.policy = self.optimizer = self.generator = None
            return
        device = torch.device("cpu")
        self._build(int(state_dict["in_dim"]), list(state_dict["names"]), device)
        self.policy.load_state_dict(state_dict["policy"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.generator.set_state(state_dict["generator"])
        self._stats = state_dict["stats"].clone()

    def on_fit_start(self, trainer, pl_module) -> None:
        # a policy restored from a checkpoint is built on the CPU: move it where the module trains
        device = pl_module.device
        if self.policy is not None and self.factors.device != device:
            self._move(device)

    def _move(self, device: torch.device) -> None:
        self.policy.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor) and key != "step":
                    state[key] = value.to(device)
        if self.generator.device != device:
            seed_state = self.generator.get_state()
            self.generator = torch.Generator(device=device)
            if device.type == "cpu":
                self.generator.set_state(seed_state)
            else:  # a CPU generator's state does not carry over to a device generator: reseed deterministically
                self.generator.manual_seed(self.seed + 1 + self._updates)
        self.factors = self.factors.to(device)
        self._stats = self._stats.to(device)
        self._mean_weights = {k: v.to(device) for k, v in self._mean_weights.items()}


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True
