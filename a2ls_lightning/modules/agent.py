"""SACModule: the LightningModule that wires SAC (+ auxiliary losses) into a ``Trainer``; the algorithm is in
:mod:`a2ls_lightning.modules.learner` and :mod:`a2ls_lightning.modules.sac`, one update in
:mod:`a2ls_lightning.modules.update`, the settings in :mod:`a2ls_lightning.modules.settings`.

One gradient update per ``training_step`` with *one* optimizer (parameter groups for encoder, critic, actor and
temperature), so ``trainer.max_steps`` counts gradient updates (Lightning counts every ``optimizer.step()``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from a2ls_lightning.lightning_private import count_logging_step
from a2ls_lightning.modules.aux_registry import build_aux_losses, resolve_aux_losses
from a2ls_lightning.modules.graphed import GraphedUpdate
from a2ls_lightning.modules.guard import NonFiniteGuard
from a2ls_lightning.modules.lean_step import wrappers_idle
from a2ls_lightning.modules.learner import SACLearner
from a2ls_lightning.modules.optim import check_lr_schedule, lr_schedule, make_optimizer
from a2ls_lightning.modules.resets import reset_due, reset_learner, reset_seed
from a2ls_lightning.modules.run_checks import RunSetup, check_trainer, compare_with_checkpoint, last_checkpoint
from a2ls_lightning.modules.settings import (
    NetworkSettings,
    OptimizerSettings,
    RuntimeSettings,
    SACSettings,
    field_defaults,
    nest_model_settings,
    settings_of,
)
from a2ls_lightning.modules.update import run_update
from a2ls_lightning.validation import check
from a2ls_lightning.weighting import AuxWeightingProtocol, UnitWeights


class SACModule(pl.LightningModule):
    """Soft actor-critic with optional A2LS auxiliary losses; defaults are the A2LS/CURL hyperparameters.

    For a per-example weighting rule (``per_example = True``: ``RLAux``) each auxiliary loss is computed per
    example (``[B]``, one per replay window) and the rule gets the online features of each window's first state as
    ``example_features`` (``[B, feature_dim]``); :meth:`heldout_main_loss` scores a second replay batch. Every other
    rule runs the code path it always ran.

    Args:
        network: the networks: encoder, widths, SimBa residual blocks, Q-networks, observation normalisation
            (``--model.network.<field>``; :class:`~a2ls_lightning.modules.settings.NetworkSettings`).
        sac: the algorithm: temperature, target entropy, discount, target EMA, update schedule, resets
            (``--model.sac.<field>``).
        optim: the optimiser: learning rates, betas, weight decay, fused step (``--model.optim.<field>``).
        runtime: divergence handling and compilation (``--model.runtime.<field>``).
        aux_losses: auxiliary losses by name: a preset name (``a2_winner_v``), the text form (see ``a2ls losses``),
            a registered loss's name or an ``AuxLossSpec``; empty means plain SAC.
        aux_embed_actions_rewards: embed each input action and reward of the auxiliary losses to
            ``feature_dim`` with a small MLP before the predictor (as the A2LS code does); off: raw inputs.

    Example:
        >>> module = SACModule(NetworkSettings(hidden_dim=256), aux_losses={"a2v": "a2_winner_v"})
        >>> module = SACModule.from_settings(hidden_dim=256, actor_lr=3e-4)   # flat names, as in older configs
    """

    def __init__(
        self,
        network: NetworkSettings = NetworkSettings(),
        sac: SACSettings = SACSettings(),
        optim: OptimizerSettings = OptimizerSettings(),
        runtime: RuntimeSettings = RuntimeSettings(),
        aux_losses: Mapping[str, Any] | None = None,
        aux_embed_actions_rewards: bool = False,
    ) -> None:
        super().__init__()
        # Mappings are accepted too (a checkpoint's hyper-parameters, a notebook's dict), validated the same way.
        self.network: NetworkSettings = settings_of("network", network)
        self.sac: SACSettings = settings_of("sac", sac)
        self.optim: OptimizerSettings = settings_of("optim", optim)
        self.runtime: RuntimeSettings = settings_of("runtime", runtime)
        self.aux_specs = resolve_aux_losses(aux_losses)
        check(self.network.num_q == 2 or "adversarial" not in map(str, self.aux_specs.values()),
              "model.network.num_q=1: the adversarial experiment loss needs two Q-networks; allowed with it: num_q=2")
        check(not (self.network.hyperspherical and self.runtime.cudagraphs), "model.network.hyperspherical=true "
              "projects the weights between the optimizer step and the target update, which a captured update does "
              "not; allowed with it: runtime.cudagraphs=false")
        # Plain data in the checkpoint (loads with weights_only=True), nested as the CLI spells it.
        self.save_hyperparameters({
            **{group: dataclasses.asdict(getattr(self, group)) for group in ("network", "sac", "optim", "runtime")},
            "aux_losses": aux_losses,
            "aux_embed_actions_rewards": aux_embed_actions_rewards})
        self.automatic_optimization = False
        self.learner: SACLearner | None = None
        #: The auxiliary-loss weighting rule: a weighting callback installs itself here in its ``setup``;
        #: with none, every auxiliary weight is 1.
        self.aux_weighting: AuxWeightingProtocol | None = None
        self.guard = NonFiniteGuard(self.runtime.nonfinite, self.runtime.max_nonfinite_skips)
        self._clock: tuple[float, int, float] | None = None
        self._actor_metrics: dict[str, torch.Tensor] = {}
        self._params: list[torch.nn.Parameter] | None = None
        self.losses_fn = None  # learner.losses, or its torch.compile'd form (``compile``); set in build()
        self._graphed: GraphedUpdate | None = None  # ``cudagraphs``: made at the first update
        self._heldout: tuple[Any, int] | None = None  # (batch, seed) of heldout_main_loss, kept for resample=False
        self._make_learner = None  # () -> a new SACLearner of these settings; set in build(), used by resets
        self._run_seed = 0  # the run's seed, mixed into each reset's seed (set in build, saved with reset_every)
        self.lean_steps = False  # call backward/step directly (modules/lean_step.py); decided at each fit's start
        self.lr_schedule = None  # ``optim.lr_decay_to``: the LambdaLR stepped after each optimizer step (update.py)

    @classmethod
    def from_settings(cls, **settings: Any) -> SACModule:
        """A module from flat settings (``hidden_dim=256, actor_lr=3e-4``, as older configs and checkpoints spell
        them) or nested ones (``network={"hidden_dim": 256}``); unknown names are refused in one line."""
        nested = nest_model_settings(settings)
        unknown = sorted(set(nested) - set(init_defaults(cls)))
        check(not unknown, f"model: unknown setting(s) {', '.join(unknown)}; allowed: the fields of "
              f"{', '.join(init_defaults(cls))} (a2ls fit --help)")
        return cls(**nested)

    #: Can give per-example auxiliary losses and example features (the weighting contract, weighting.py).
    per_example_losses = True

    # --- construction --------------------------------------------------------------------------------
    @property
    def required_slice_length(self) -> int:
        """States per replay slice this module needs: 2 for SAC, more for an auxiliary loss's window."""
        return max([2, *(recipe.window for recipe in self.aux_specs.values())])

    def build(self, obs_shape: tuple[int, ...], action_dim: int) -> None:
        """Create the networks for observations of ``obs_shape`` and ``action_dim`` actions (idempotent)."""
        if self.learner is not None:
            return
        net = self.network
        if len(obs_shape) == 3:
            check(net.crop_size <= min(obs_shape[1:]),
                  f"model.network.crop_size={net.crop_size} must be <= the image size {obs_shape[1]}")
        feature_dim = obs_shape[0] if net.encoder == "identity" else net.feature_dim

        def make_learner() -> SACLearner:
            # The auxiliary heads first, then the learner: the order (and so the random draws) of construction.
            aux = build_aux_losses(self.aux_specs, feature_dim, action_dim, self.hparams.aux_embed_actions_rewards)
            return SACLearner(tuple(obs_shape), action_dim, net, self.sac, aux_losses=aux)

        self.learner = make_learner()
        self._make_learner = make_learner
        self._run_seed = torch.initial_seed()  # the seed of seed_everything: resets differ between seeds
        self.losses_fn = torch.compile(self.learner.losses, dynamic=False) if self.runtime.compile \
            else self.learner.losses
        self._env_spec = (tuple(obs_shape), int(action_dim))

    def aux_loss_names(self) -> list[str]:
        """Names of the auxiliary losses (known before any update: weighting callbacks check their settings)."""
        return list(self.aux_specs)

    def configure_callbacks(self) -> list[pl.Callback]:
        # The run's work at its start (pre-flight, crash-safe writer, DDP setting) is a callback's, not the module's;
        # returned here so that a plain Trainer in a notebook gets it as `a2ls fit` does.
        return [RunSetup()]

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        self.guard.last_checkpoint = lambda: last_checkpoint(trainer)  # looked up only for a failure's message
        check_lr_schedule(self.optim, trainer.max_steps, self.runtime.cudagraphs)
        dm = trainer.datamodule
        if self.sac.reward_norm_g_max is not None:  # before any step is collected (warm-up runs at the first batch)
            check(hasattr(dm, "track_returns"), f"model.sac.reward_norm_g_max={self.sac.reward_norm_g_max} needs a "
                  f"datamodule that tracks returns (ReplayDataModule), not {type(dm).__name__}")
            dm.track_returns(self.sac.discount)
        self.build(dm.observation_shape, dm.action_dim)
        if self.aux_weighting is None:
            self.aux_weighting = UnitWeights()

    def on_train_start(self) -> None:
        # After setup and the callbacks' own setup: the trainer's callback list is final here.
        self.lean_steps = wrappers_idle(self.trainer, self)
        self.lr_schedule = self.lr_schedulers()  # restored from a checkpoint by now; None without lr_decay_to

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None:  # resuming a run (not `load_from_checkpoint`): same settings or refuse
            dm = self.trainer.datamodule
            data = getattr(dm, "hparams", None) if dm is not None else None
            defaults = {"model": model_defaults(), "data": init_defaults(type(dm)) if data else {}}
            compare_with_checkpoint(checkpoint, self.hparams, data, defaults,
                                    resolve_data=getattr(type(dm), "resolve_settings", None) if data else None)
        if self.learner is None and "env_spec" in checkpoint:
            self.build(*checkpoint["env_spec"])
        self.guard.load_state_dict(checkpoint.get("nonfinite_guard", {}))
        self._run_seed = checkpoint.get("reset_run_seed", self._run_seed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()
        checkpoint["env_spec"] = self._env_spec
        checkpoint["nonfinite_guard"] = self.guard.state_dict()
        if self.sac.reset_every:  # a resumed run resets to the same values
            checkpoint["reset_run_seed"] = self._run_seed

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if any update so far, or any parameter, is non-finite (before a save)."""
        self.guard.check()
        if self.learner is not None:
            self.guard.check_parameters(self.named_parameters(), self.global_step)

    def reward_scale(self) -> float | None:
        """What this update's rewards are divided by (``sac.reward_norm_g_max``), or None (raw rewards)."""
        g_max = self.sac.reward_norm_g_max
        return None if g_max is None else self.trainer.datamodule.reward_scale(g_max)

    def shared_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters shared by the main (critic) loss and the auxiliary losses: the encoder."""
        return list(self.learner.encoder.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # A captured optimizer step keeps its step counts on the device (CUDA only; same arithmetic).
        capturable = self.runtime.cudagraphs and self.device.type == "cuda"
        optimizer = make_optimizer(self.learner, self.optim, self.device, capturable)
        if self.optim.lr_decay_to is None:
            return optimizer
        # Stepped by run_update (manual optimization: Lightning only saves and restores it).
        schedule = lr_schedule(optimizer, self.optim, self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- acting -----------------------------------------------------------------------------------
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False):
        """Policy for collection: ``[N, *obs_shape]`` → ``[N, A]`` on the CPU (no grad, fp32)."""
        with torch.autocast(self.device.type, enabled=False):
            return self.learner.act(obs.to(self.device), deterministic, generator).cpu()

    def act_deterministic(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.act(obs, generator, deterministic=True)

    # --- training ----------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """One update, or, at an integer replay ratio ``k > 1``, the ``k`` updates that share one agent step (the
        datamodule's ``updates_per_batch``): Lightning's per-step cost (hooks, logging, progress) is then paid once
        per group, not once per update. The group's updates run exactly as ungrouped ones would (the same batches,
        each drawn right before its update, an evaluation where one falls due, the weighting rule's
        ``after_update`` after each), so results do not depend on the grouping (tested)."""
        trainer, data = self.trainer, self.trainer.datamodule
        group = getattr(data, "updates_per_batch", 1)
        while True:
            run_update(self, batch)
            # The guard's flag is read here, where the next collection step would wait for the device anyway; a
            # diverged policy is never evaluated (it would report a return of 0: one-step PhysicsError episodes).
            self.guard.check()
            # Evaluation has one owner, the datamodule's Evaluator (schedule, env, logging, listeners). It runs
            # here, inside the update, so that every callback's `on_train_batch_end` (a scheduled save, a save on a
            # signal) sees the update *with* its evaluation: a resumed run then evaluates at the same env steps.
            data.evaluate_if_due(self.act_deterministic)
            done = trainer.global_step
            if group == 1 or done % group == 0 or 0 < trainer.max_steps <= done:
                return  # the group's last update: the weighting callback's on_train_batch_end takes it from here
            self.aux_weighting.after_update()  # what that hook does after every ungrouped update
            count_logging_step(trainer)  # logs land on the update that made them
            batch = data.transfer_batch_to_device(data.next_batch(), self.device, 0)

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> torch.Tensor:
        """The critic loss on a held-out replay batch with the current networks: a scalar tensor, no grad
        (``with_graph=True``: with its graph, for a rule that differentiates it, e.g. per-example credit).

        ``resample=True`` draws a new batch (``replay.sample()``, the replay's own seeded generator, so resumes
        stay exact) and keeps it; ``resample=False`` scores the kept batch again. Each batch gets a fixed seed
        (from the update count and the rank) under which the random operations (pixel crops, the next action's
        sample) run in a forked generator: the values before and after an update see the same crops and samples,
        so their difference measures the update, not sampling noise, and the global generator is left as it was.
        Run in the Trainer's precision context (as ``training_step``). "Held out": drawn apart from the training
        batch (not excluded from training: it may share transitions with past or future training batches).

        Cost (only the critic's forward on one batch, see :meth:`SACLearner.main_loss`): on the CPU benchmark
        config (``configs/benchmark_cheetah_state_cpu.yaml``: mlp encoder, hidden 256, batch 256, five auxiliary
        losses, one thread, CPU time) 2.6 ms per call with ``resample=True`` (0.1 ms of it the replay draw), 2.3 ms
        with ``resample=False``, against 14.1 ms for a whole FixedWeights ``training_step``: the two calls of an
        RL-AUX update are about a third of an update.
        """
        if resample or self._heldout is None:
            if not resample:
                raise RuntimeError("heldout_main_loss(resample=False) before any held-out batch was drawn")
            batch = self.trainer.datamodule.replay.sample().to(self.device)
            seed = (7919 * (self.trainer.global_step + 1) + 104729 * self.global_rank) % (2**31)
            self._heldout = (batch, seed)
        batch, seed = self._heldout
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.trainer.precision_plugin.forward_context(), \
                torch.set_grad_enabled(with_graph):
            torch.manual_seed(seed)
            loss = self.learner.main_loss(batch).float()
            return loss if with_graph else loss.detach()

    def graphed_update(self, optimizer: torch.optim.Optimizer, weighting: AuxWeightingProtocol) -> GraphedUpdate:
        """This module's whole update (losses, ``weighting``, backward, ``optimizer`` step, target EMA) as a
        :class:`GraphedUpdate` (``cudagraphs``; ``scripts/gpu_benchmark.py`` times the same object)."""
        sac, learner = self.sac, self.learner
        return GraphedUpdate(self.losses_fn, weighting, self.shared_parameters(),
                             [p for p in self.parameters() if p.requires_grad], optimizer,
                             lambda: learner.update_targets(sac.critic_tau, sac.encoder_tau))

    def graphed_update_for(self, optimizer: torch.optim.Optimizer) -> GraphedUpdate:
        """The :class:`GraphedUpdate` of this run (made at its first update, with the installed weighting rule)."""
        if self._graphed is None:
            self._graphed = self.graphed_update(optimizer, self.aux_weighting)
        return self._graphed

    def after_update(self, update: int, main: dict, aux: dict, metrics: dict) -> None:
        """Bookkeeping after an update's step: the actor's metrics, logging, a reset when one is due."""
        if "actor" in main:  # kept for logging: log steps need not fall on actor updates
            self._actor_metrics = {"train/actor_loss": main["actor"].detach(),
                                   "train/temperature_loss": main["temperature"].detach(),
                                   "train/entropy": metrics.pop("entropy")}
        if (update + 1) % self.trainer.log_every_n_steps == 0:
            self.guard.check()  # never log the values of a diverged update
            self._log_train(main["critic"], aux, metrics)
        if reset_due(update, self.sac.reset_every):  # after the update's step and target EMA
            reset_learner(self.learner, self._make_learner, self.sac.reset_scope,
                          reset_seed(self._run_seed, update), self.optimizers().optimizer)

    def _log_train(self, critic: torch.Tensor, aux: dict, metrics: dict) -> None:
        values = {"train/critic_loss": critic.detach(), **self._actor_metrics}
        values.update({f"train/aux_{k}_loss": v.detach() for k, v in aux.items()})
        values.update({f"train/{k}": v for k, v in metrics.items()})
        if self.guard.mode == "skip":
            values["train/nonfinite_skips"] = float(self.guard.skips)
        counters = self.trainer.datamodule.counters()
        values["train/env_steps"] = counters["env_steps"]
        values["train/episodes"] = counters["episodes"]
        values["train/physics_errors"] = counters["physics_errors"]
        if not math.isnan(counters["episode_return"]):
            values["train/episode_return"] = counters["episode_return"]
        self.log_dict(values, on_step=True, on_epoch=False)
        now, update, env_steps = time.perf_counter(), self.trainer.global_step, counters["env_steps"]
        if self._clock is not None:
            t0, u0, e0 = self._clock
            dt = max(now - t0, 1e-9)
            self.log_dict({"env_steps/s": (env_steps - e0) / dt, "updates/s": (update - u0) / dt},
                          on_step=True, on_epoch=False, prog_bar=True)
        self._clock = (now, update, env_steps)

    def gradients(self) -> list[torch.Tensor]:
        """The gradients of the trainable parameters that got one this update (what the guard checks)."""
        if self._params is None:
            self._params = [p for p in self.parameters() if p.requires_grad]
        return [p.grad for p in self._params if p.grad is not None]



def check_precision(precision: str) -> None:
    """Refuse fp16 (Lightning itself turns ``16-mixed`` into ``bf16-mixed`` on a CPU)."""
    check_trainer(_PrecisionOnly(precision))


class _PrecisionOnly:
    max_steps, log_every_n_steps = 1, 1

    def __init__(self, precision: str) -> None:
        self.precision = precision


def model_defaults() -> dict[str, Any]:
    """Every model setting's default, flat (``hidden_dim``, ``aux_losses``, ...): what an older checkpoint may not
    record, in the form two runs' settings are compared in."""
    return {**field_defaults(), "aux_losses": None, "aux_embed_actions_rewards": False}


def init_defaults(cls: type) -> dict[str, Any]:
    """Default values of ``cls.__init__``'s arguments (settings an older checkpoint may not record)."""
    import inspect

    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}
