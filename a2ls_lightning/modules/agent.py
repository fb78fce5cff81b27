"""SACModule: the LightningModule that wires SAC (+ auxiliary losses) into a ``Trainer``; the algorithm is in
:mod:`a2ls_lightning.modules.learner` and :mod:`a2ls_lightning.modules.sac`.

One gradient update per ``training_step`` with *one* optimizer (parameter groups for encoder, critic, actor and
temperature), so ``trainer.max_steps`` counts gradient updates (Lightning counts every ``optimizer.step()``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from a2ls_lightning.modules.encoders import BLOCK_ENCODERS, ENCODERS
from a2ls_lightning.modules.graphed import GraphedUpdate
from a2ls_lightning.modules.guard import NONFINITE_MODES, NonFiniteGuard
from a2ls_lightning.modules.lean_step import counted_step, wrappers_idle
from a2ls_lightning.modules.learner import SACLearner
from a2ls_lightning.modules.resets import RESET_SCOPES, reset_due, reset_learner, reset_seed
from a2ls_lightning.modules.run_checks import (
    check_strategy,
    check_trainer,
    compare_with_checkpoint,
    install_crash_safe_checkpoints,
    last_checkpoint,
    preflight,
)
from a2ls_lightning.modules.sac import NUM_Q
from a2ls_lightning.validation import check, check_choice, check_integer, check_number, one_line
from a2ls_lightning.weighting import AuxWeightingProtocol, UnitWeights


class SACModule(pl.LightningModule):
    """Soft actor-critic with optional A2LS auxiliary losses; defaults are the A2LS/CURL hyperparameters.

    For a per-example weighting rule (``per_example = True``: ``RLAux``) each auxiliary loss is computed per
    example (``[B]``, one per replay window) and the rule gets the online features of each window's first state as
    ``example_features`` (``[B, feature_dim]``); :meth:`heldout_main_loss` scores a second replay batch. Every other
    rule runs the code path it always ran.

    Args:
        encoder: observation encoder: ``pixel`` (conv, for pixels), ``mlp``, ``ofe`` or ``identity`` (state).
        feature_dim: encoder output width (50 in CURL/A2LS).
        encoder_hidden_dim: hidden width of the ``mlp``/``ofe`` encoders (40 in A2LS).
        encoder_layers: conv layers (pixel, default 4) or dense layers (ofe, default 1); null for the default.
        num_filters: channels of each conv layer (pixel).
        hidden_dim: width of the two hidden layers of the actor and of each Q-network (1024 in the papers).
        crop_size: random-crop side for pixel observations (84 from 100-pixel renders).
        actor_lr: Adam learning rate of the actor (1e-3; the papers use 2e-4 on cheetah).
        critic_lr: Adam learning rate of the twin critic.
        encoder_lr: Adam learning rate of the shared encoder and the auxiliary heads; null: ``critic_lr``.
        alpha_lr: Adam learning rate of the temperature.
        actor_beta1: Adam β1 of actor, critic and encoder.
        alpha_beta1: Adam β1 of the temperature (0.5 in CURL).
        init_temperature: initial entropy temperature α.
        target_entropy: entropy target; null: ``-|A|``.
        discount: γ.
        critic_tau: EMA rate of the target Q-networks.
        encoder_tau: EMA rate of the target encoder (also the auxiliary losses' target encoder).
        actor_update_freq: update the actor and the temperature every this many updates.
        target_update_freq: update the EMA targets every this many updates.
        log_std_min: lower bound of the actor's log standard deviation.
        log_std_max: upper bound of the actor's log standard deviation.
        aux_losses: auxiliary losses by name: an ``AuxLossSpec``, a preset name (``a2_winner_v``) or the text
            form (see ``a2ls losses``); empty means plain SAC.
        aux_embed_actions_rewards: embed each input action and reward of the auxiliary losses to
            ``feature_dim`` with a small MLP before the predictor (as the A2LS code does); off: raw inputs.
        nonfinite: what a non-finite loss, gradient or parameter does: ``stop`` the run at that update (nothing is
            saved after it; the message names the last good checkpoint) or ``skip`` the update (its optimizer step;
            counted in ``train/nonfinite_skips``; costs one host sync per update).
        max_nonfinite_skips: with ``nonfinite=skip``, stop after this many non-finite updates in a row.
        compile: ``torch.compile`` the loss computation of an update (the losses of ``SACLearner.losses``,
            compiled once in ``build``, ``dynamic=False``: one graph per batch shape and per actor/no-actor update);
            on CUDA this fuses the many small ops of the encoder, critic, actor and auxiliary losses into few
            kernels. The weighting rule and the backward/optimizer step run eagerly. Weighting rules that
            differentiate each loss on its own (``OLAux``, ``CosineGating``: they walk each loss's graph) fall back
            to the eager losses; ``FixedWeights`` and ``GradientBalancing`` use the compiled ones.
            Results equal eager ones within float tolerance only (compiled random sampling differs from eager
            unless ``torch._inductor.config.fallback_random`` is set). The first updates pay the compile time.
        cudagraphs: capture the whole update (losses, weighting, backward, Adam with ``capturable=True``, target
            EMA) as CUDA graphs, one per update kind, after 3 eager updates of each kind (see
            :mod:`a2ls_lightning.modules.graphed`); with ``compile``, the compiled losses are captured. Needs
            ``nonfinite=stop``, one device (no DDP) and no fp16 loss scaling; ``OLAux`` and ``CosineGating`` run
            eagerly. Without CUDA the same update function runs uncaptured (a warning says so). Lightning's
            ``on_before_backward``, ``on_after_backward`` and ``on_before_optimizer_step`` hooks do not run for
            graphed updates.
        critic_blocks: SimBa residual blocks (pre-LayerNorm → Linear 4× wider → ReLU → Linear, added to the
            input; Lee et al. 2024) of each Q-network, between a Linear embedding and a final LayerNorm; 0: the
            plain two-hidden-layer MLP.
        actor_blocks: SimBa residual blocks of the actor; 0: the plain MLP.
        encoder_blocks: SimBa residual blocks in the trunk of the ``mlp``/``ofe`` state encoder (its output,
            ``feature_dim`` wide, is unchanged, so the auxiliary losses attach as before); 0: none.
        critic_block_width: width of the critic's residual networks; null: ``hidden_dim``.
        actor_block_width: width of the actor's residual network; null: ``hidden_dim``.
        encoder_block_width: width of the encoder's residual trunk; null: ``encoder_hidden_dim``.
        obs_norm: normalise state observations by their running mean and variance (updated from each training
            batch, before its losses; summed over DDP ranks; saved in checkpoints), clipped to ±10; state only.
        weight_decay: AdamW weight decay per group (encoder with the auxiliary heads, critic, actor; not the
            temperature); 0: plain Adam, as without the option.
        num_q: Q-networks: 2 (clipped double Q: the minimum of the two) or 1 (one Q-network, SimBa's setting on
            DMC).
        target_entropy_coef: target entropy ``-coef·|A|`` (SimBa: 0.5); null: ``target_entropy``'s rule. Not
            together with ``target_entropy``.
        fused_adam: the fused Adam/AdamW step (``fused=True``: one kernel per step), 0.5 ms faster per update on
            the CPU benchmark config (0.60 vs 1.08 ms, one thread; end to end 1.06-1.16× CleanRL's SAC against
            1.01-1.07× with the default, on a shared 2-core CPU). Equal to the default's foreach step up to
            rounding (1e-9 relative after one update), but runs then take other trajectories, as under another seed
            (state cheetah-run, seeds 1-4: final return 232.6 ± 35.7 fused vs 284.8 ± 20.6 foreach, Welch p 0.08);
            not the default, so that every stored result stays reproducible bit for bit. Refused in one line where
            this torch cannot fuse Adam on the device.
        reset_every: re-initialise part of the agent every this many updates, keeping the replay (primacy bias,
            Nikishin et al. 2022); 0: never.
        reset_scope: what a reset re-initialises: ``last`` (the last layer of the actor and of each Q-network,
            and the target Q-networks') or ``all`` (encoder, actor, critic, targets, auxiliary heads, temperature;
            not the observation statistics). The reset parameters' Adam state starts afresh.
    """

    def __init__(
        self,
        encoder: str = "mlp",
        feature_dim: int = 50,
        encoder_hidden_dim: int = 40,
        encoder_layers: int | None = None,
        num_filters: int = 32,
        hidden_dim: int = 1024,
        crop_size: int = 84,
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        encoder_lr: float | None = None,
        alpha_lr: float = 1e-4,
        actor_beta1: float = 0.9,
        alpha_beta1: float = 0.5,
        init_temperature: float = 0.1,
        target_entropy: float | None = None,
        discount: float = 0.99,
        critic_tau: float = 0.01,
        encoder_tau: float = 0.05,
        actor_update_freq: int = 2,
        target_update_freq: int = 2,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        aux_losses: Mapping[str, Any] | None = None,
        aux_embed_actions_rewards: bool = False,
        nonfinite: str = "stop",
        max_nonfinite_skips: int = 10,
        compile: bool = False,
        cudagraphs: bool = False,
        critic_blocks: int = 0,
        actor_blocks: int = 0,
        encoder_blocks: int = 0,
        critic_block_width: int | None = None,
        actor_block_width: int | None = None,
        encoder_block_width: int | None = None,
        obs_norm: bool = False,
        weight_decay: float = 0.0,
        num_q: int = 2,
        target_entropy_coef: float | None = None,
        fused_adam: bool = False,
        reset_every: int = 0,
        reset_scope: str = "last",
    ) -> None:
        super().__init__()
        check(encoder in ENCODERS, f"encoder={encoder!r} is unknown; allowed: {', '.join(ENCODERS)}")
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("encoder_lr", encoder_lr),
                            ("alpha_lr", alpha_lr), ("actor_beta1", actor_beta1), ("alpha_beta1", alpha_beta1),
                            ("init_temperature", init_temperature), ("target_entropy", target_entropy),
                            ("discount", discount), ("critic_tau", critic_tau), ("encoder_tau", encoder_tau),
                            ("log_std_min", log_std_min), ("log_std_max", log_std_max)):
            check(value is None or (isinstance(value, (int, float)) and math.isfinite(value)),
                  f"{name}={value} must be a finite number")
        check_choice("nonfinite", nonfinite, NONFINITE_MODES)
        check(max_nonfinite_skips >= 1, f"max_nonfinite_skips={max_nonfinite_skips} must be >= 1")
        check(not (cudagraphs and nonfinite == "skip"), "cudagraphs=true needs nonfinite=stop: a skipped update is "
              "decided on the host before the optimizer step, which a captured update cannot do")
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("alpha_lr", alpha_lr)):
            check(value > 0, f"{name}={value} must be > 0")
        check(encoder_lr is None or encoder_lr > 0, f"encoder_lr={encoder_lr} must be > 0 or null")
        for name, value in (("feature_dim", feature_dim), ("hidden_dim", hidden_dim), ("num_filters", num_filters),
                            ("encoder_hidden_dim", encoder_hidden_dim), ("crop_size", crop_size),
                            ("actor_update_freq", actor_update_freq), ("target_update_freq", target_update_freq)):
            check(value >= 1, f"{name}={value} must be >= 1")
        check(encoder_layers is None or encoder_layers >= 1, f"encoder_layers={encoder_layers} must be >= 1 or null")
        check(init_temperature > 0, f"init_temperature={init_temperature} must be > 0")
        check(0 < discount <= 1, f"discount={discount} must be in (0, 1]")
        for name, value in (("critic_tau", critic_tau), ("encoder_tau", encoder_tau)):
            check(0 < value <= 1, f"{name}={value} must be in (0, 1]")
        for name, value in (("actor_beta1", actor_beta1), ("alpha_beta1", alpha_beta1)):
            check(0 <= value < 1, f"{name}={value} must be in [0, 1)")
        check(log_std_min < log_std_max, f"log_std_min={log_std_min} must be < log_std_max={log_std_max}")
        _check_backbone(encoder, critic_blocks, actor_blocks, encoder_blocks, critic_block_width, actor_block_width,
                        encoder_block_width, obs_norm, weight_decay, num_q, target_entropy, target_entropy_coef,
                        reset_every, reset_scope)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.aux_specs = _coerce_aux_losses(aux_losses)
        check(num_q == 2 or "adversarial" not in map(str, self.aux_specs.values()),
              "num_q=1: the adversarial experiment loss needs two Q-networks; allowed with it: num_q=2")
        self.learner: SACLearner | None = None
        #: The auxiliary-loss weighting rule: a weighting callback installs itself here in its ``setup``;
        #: with none, every auxiliary weight is 1.
        self.aux_weighting: AuxWeightingProtocol | None = None
        self.guard = NonFiniteGuard(nonfinite, max_nonfinite_skips)
        self._clock: tuple[float, int, float] | None = None
        self._actor_metrics: dict[str, torch.Tensor] = {}
        self._params: list[torch.nn.Parameter] | None = None
        self._losses_fn = None  # learner.losses, or its torch.compile'd form (``compile``); set in build()
        self._graphed: GraphedUpdate | None = None  # ``cudagraphs``: made at the first update
        self._heldout: tuple[Any, int] | None = None  # (batch, seed) of heldout_main_loss, kept for resample=False
        self._make_learner = None  # () -> a new SACLearner of these settings; set in build(), used by resets
        self._run_seed = 0  # the run's seed, mixed into each reset's seed (set in build, saved with reset_every)
        self._lean_steps = False  # call backward/step directly (modules/lean_step.py); decided at each fit's start

    #: Can give per-example auxiliary losses and example features (the weighting contract, weighting.py).
    per_example_losses = True

    # --- construction --------------------------------------------------------------------------------
    @property
    def required_slice_length(self) -> int:
        """States per replay slice this module needs: 2 for SAC, the longest auxiliary horizon + 1."""
        from a2ls_lightning.modules.auxiliary import AuxLossSpec, required_window

        # Experiment losses read state 0 only (and the critic's s_1): the SAC minimum covers them.
        return max(2, required_window([s for s in self.aux_specs.values() if isinstance(s, AuxLossSpec)]))

    def build(self, obs_shape: tuple[int, ...], action_dim: int) -> None:
        """Create the networks for observations of ``obs_shape`` and ``action_dim`` actions (idempotent)."""
        if self.learner is not None:
            return
        hp = self.hparams
        if len(obs_shape) == 3:
            check(hp.crop_size <= min(obs_shape[1:]),
                   f"crop_size={hp.crop_size} must be <= the image size {obs_shape[1]}")
        layers = hp.encoder_layers or (4 if hp.encoder == "pixel" else 1)
        feature_dim = obs_shape[0] if hp.encoder == "identity" else hp.feature_dim
        target_entropy = -float(action_dim) if hp.target_entropy is None else hp.target_entropy
        if hp.target_entropy_coef is not None:
            target_entropy = -float(hp.target_entropy_coef) * action_dim
        settings = dict(
            obs_shape=tuple(obs_shape),
            action_dim=action_dim,
            encoder=hp.encoder,
            feature_dim=hp.feature_dim,
            encoder_hidden_dim=hp.encoder_hidden_dim,
            encoder_layers=layers,
            num_filters=hp.num_filters,
            hidden_dim=hp.hidden_dim,
            crop_size=hp.crop_size,
            init_temperature=hp.init_temperature,
            target_entropy=target_entropy,
            discount=hp.discount,
            log_std_bounds=(hp.log_std_min, hp.log_std_max),
            **{name: hp[name] for name in BACKBONE_SETTINGS},
        )

        def make_learner() -> SACLearner:
            # The auxiliary heads first, then the learner: the order (and so the random draws) of construction.
            aux = _build_aux_modules(self.aux_specs, feature_dim, action_dim, hp.aux_embed_actions_rewards)
            return SACLearner(**settings, aux_losses=aux)

        self.learner = make_learner()
        self._make_learner = make_learner
        self._run_seed = torch.initial_seed()  # the seed of seed_everything: resets differ between seeds
        self._losses_fn = torch.compile(self.learner.losses, dynamic=False) if hp.compile else self.learner.losses
        self._env_spec = (tuple(obs_shape), int(action_dim))

    def aux_loss_names(self) -> list[str]:
        """Names of the auxiliary losses (known before any update: weighting callbacks check their settings)."""
        return list(self.aux_specs)

    def setup(self, stage: str) -> None:
        check_trainer(self.trainer)
        preflight(self.trainer)  # before the first env step: every folder this run writes to is writable
        install_crash_safe_checkpoints(self.trainer)
        trainer = self.trainer
        self.guard.last_checkpoint = lambda: last_checkpoint(trainer)  # looked up only for a failure's message
        dm = self.trainer.datamodule
        self.build(dm.observation_shape, dm.action_dim)
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy):
            # The actor and the temperature get gradients only every `actor_update_freq` updates; DDP must be told
            # that some parameters may go unused in an iteration (their grads then stay None and Adam skips them).
            strategy._ddp_kwargs["find_unused_parameters"] = True
        check_strategy(self.trainer, self.hparams.cudagraphs)
        if self.hparams.cudagraphs and strategy.root_device.type != "cuda":
            rank_zero_warn("model.cudagraphs=true without a CUDA device: the update runs as one uncaptured "
                           "function (what CUDA would capture)", category=UserWarning)
        if self.aux_weighting is None:
            self.aux_weighting = UnitWeights()

    def on_train_start(self) -> None:
        # After setup and the callbacks' own setup: the trainer's callback list is final here.
        self._lean_steps = wrappers_idle(self.trainer, self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None:  # resuming a run (not `load_from_checkpoint`): same settings or refuse
            dm = self.trainer.datamodule
            data = getattr(dm, "hparams", None) if dm is not None else None
            defaults = {"model": init_defaults(type(self)), "data": init_defaults(type(dm)) if data else {}}
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
        if self.hparams.reset_every:  # a resumed run resets to the same values
            checkpoint["reset_run_seed"] = self._run_seed

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if any update so far, or any parameter, is non-finite (before a save)."""
        self.guard.check()
        if self.learner is not None:
            self.guard.check_parameters(self.named_parameters(), self.global_step)

    def shared_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters shared by the main (critic) loss and the auxiliary losses: the encoder."""
        return list(self.learner.encoder.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp, learner = self.hparams, self.learner
        betas = (hp.actor_beta1, 0.999)
        groups = [
            {"params": [*learner.encoder.parameters(), *learner.aux_losses.parameters()],
             "lr": hp.encoder_lr or hp.critic_lr, "name": "encoder"},
            {"params": list(learner.critic.parameters()), "lr": hp.critic_lr, "name": "critic"},
            {"params": learner.actor_parameters(), "lr": hp.actor_lr, "name": "actor"},
            {"params": [learner.log_alpha], "lr": hp.alpha_lr, "betas": (hp.alpha_beta1, 0.999), "name": "alpha"},
        ]
        # A captured optimizer step keeps its step counts on the device (CUDA only; same arithmetic).
        capturable = bool(hp.cudagraphs) and self.device.type == "cuda"
        options: dict[str, Any] = {"betas": betas, "capturable": capturable}
        if hp.fused_adam:
            check_fused_adam(self.device, capturable)
            options["fused"] = True
        else:
            # torch picks the per-tensor loop on a CPU (foreach only on CUDA); the foreach step is the same
            # arithmetic (scripts/check_identical.py: the same digest) and 15% faster here (1.38 vs 1.62 ms per
            # step on the 425k parameters of the benchmark config with one auxiliary loss, one thread).
            options["foreach"] = True
        groups = [g for g in groups if g["params"]]
        if hp.weight_decay > 0:
            for group in groups:  # decoupled decay on the networks; the temperature is a scalar, not a weight
                group["weight_decay"] = 0.0 if group["name"] == "alpha" else hp.weight_decay
            return torch.optim.AdamW(groups, **options)
        return torch.optim.Adam(groups, **options)

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
            self._update(batch)
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
            # Lightning counts logging steps in batches; ours are updates (logs land on the update that made them).
            trainer.fit_loop.epoch_loop._batches_that_stepped += 1
            batch = data.transfer_batch_to_device(data.next_batch(), self.device, 0)

    def _update(self, batch: Mapping[str, torch.Tensor]) -> None:
        """One gradient update (losses, weighting, backward, guard, optimizer step, targets, logging)."""
        hp = self.hparams
        update = self.trainer.global_step  # updates done so far (one optimizer step each)
        self.learner.observe(batch)  # running observation statistics (obs_norm), before the losses read them
        update_actor = update % hp.actor_update_freq == 0
        # A rule that walks each loss's own graph cannot see through a compiled or captured graph: it gets the
        # eager losses and the eager update.
        per_loss = getattr(self.aux_weighting, "needs_loss_graphs", False)
        # A per-example rule (RL-AUX) gets [B] losses from the eager learner; every other rule takes the path below
        # the `if`, untouched (bit-identical to a module without per-example losses).
        per_example = getattr(self.aux_weighting, "per_example", False)
        if hp.cudagraphs and not per_loss and not per_example:
            self._graphed_step(batch, update, update_actor)
            return
        if per_example:
            main, aux, metrics = self.learner.losses(batch, update_actor=update_actor, per_example=True)
            features = metrics.pop("example_features")  # [B, F], detached
            critic = self.aux_weighting.combine(main["critic"], aux, self.shared_parameters(),
                                                example_features=features)
            aux = {name: loss.detach().mean() for name, loss in aux.items()}  # the guard and the logs take scalars
        else:
            losses_fn = self.learner.losses if per_loss else self._losses_fn
            main, aux, metrics = losses_fn(batch, update_actor=update_actor)
            critic = self.aux_weighting.combine(main["critic"], aux, self.shared_parameters())
        total = critic + main.get("actor", 0.0) + main.get("temperature", 0.0)
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        if self._lean_steps:  # what manual_backward would do here (see modules/lean_step.py)
            total.backward()
        else:
            self.manual_backward(total)
        ok = self.guard.observe(update, _named_losses(main, aux), self._grads())
        if self.guard.mode == "skip" and self.guard.skip(update, ok):
            opt.zero_grad(set_to_none=True)  # the update is dropped whole: no step, no target update
            return
        if self._lean_steps:  # LightningOptimizer.step without the layers that would only pass the call on
            counted_step(opt, opt.optimizer.step)
        else:
            opt.step()
        if update % hp.target_update_freq == 0:
            self.learner.update_targets(hp.critic_tau, hp.encoder_tau)
        self._after_update(update, main, aux, metrics)

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
        hp, learner = self.hparams, self.learner
        return GraphedUpdate(self._losses_fn, weighting, self.shared_parameters(),
                             [p for p in self.parameters() if p.requires_grad], optimizer,
                             lambda: learner.update_targets(hp.critic_tau, hp.encoder_tau))

    def _graphed_step(self, batch: Mapping[str, torch.Tensor], update: int, update_actor: bool) -> None:
        """One update through :class:`GraphedUpdate` (``cudagraphs``): the step runs inside the graph."""
        hp = self.hparams
        opt = self.optimizers()
        if self._graphed is None:
            self._graphed = self.graphed_update(opt.optimizer, self.aux_weighting)
        main, aux, metrics, grad_norm = self._graphed(batch, update_actor, update % hp.target_update_freq == 0)
        self.guard.observe(update, _named_losses(main, aux), [grad_norm])
        counted_step(opt)  # the step itself ran in the graph: only Lightning's counting is left to do
        self._after_update(update, main, aux, metrics)

    def _after_update(self, update: int, main: dict, aux: dict, metrics: dict) -> None:
        if "actor" in main:  # kept for logging: log steps need not fall on actor updates
            self._actor_metrics = {"train/actor_loss": main["actor"].detach(),
                                   "train/temperature_loss": main["temperature"].detach(),
                                   "train/entropy": metrics.pop("entropy")}
        if (update + 1) % self.trainer.log_every_n_steps == 0:
            self.guard.check()  # never log the values of a diverged update
            self._log_train(main["critic"], aux, metrics)
        if reset_due(update, self.hparams.reset_every):  # after the update's step and target EMA
            reset_learner(self.learner, self._make_learner, self.hparams.reset_scope,
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

    def _grads(self) -> list[torch.Tensor]:
        if self._params is None:
            self._params = [p for p in self.parameters() if p.requires_grad]
        return [p.grad for p in self._params if p.grad is not None]



#: The backbone settings :class:`SACModule` passes on to :class:`SACLearner` as they are.
BACKBONE_SETTINGS = ("critic_blocks", "actor_blocks", "encoder_blocks", "critic_block_width", "actor_block_width",
                     "encoder_block_width", "num_q", "obs_norm")


def _check_backbone(encoder: str, critic_blocks: int, actor_blocks: int, encoder_blocks: int,
                    critic_block_width: int | None, actor_block_width: int | None, encoder_block_width: int | None,
                    obs_norm: bool, weight_decay: float, num_q: int, target_entropy: float | None,
                    target_entropy_coef: float | None, reset_every: int, reset_scope: str) -> None:
    """One-line ``ValueError`` for a bad backbone setting of :class:`SACModule` (each names its field)."""
    for name, value in (("critic_blocks", critic_blocks), ("actor_blocks", actor_blocks),
                        ("encoder_blocks", encoder_blocks), ("reset_every", reset_every)):
        check_integer(name, value, 0)
    for name, value in (("critic_block_width", critic_block_width), ("actor_block_width", actor_block_width),
                        ("encoder_block_width", encoder_block_width)):
        if value is not None:
            check_integer(name, value, 1)
    # The pixel encoder's head already is Linear → LayerNorm on a 35·35·32-wide conv output; a residual
    # embedding of that width would be the largest layer of the agent, for no published gain: state encoders only.
    check(encoder_blocks == 0 or encoder in BLOCK_ENCODERS,
          f"encoder_blocks={encoder_blocks} needs encoder={' or '.join(BLOCK_ENCODERS)}, not {encoder!r}")
    check(not (obs_norm and encoder == "pixel"),
          "obs_norm=true normalises state observations; not allowed with encoder='pixel' (pixels: obs_norm=false)")
    check_number("weight_decay", weight_decay, low=0)
    check_choice("num_q", num_q, NUM_Q)
    if target_entropy_coef is not None:
        check_number("target_entropy_coef", target_entropy_coef, low=0, strict=True)
        check(target_entropy is None, f"target_entropy_coef={target_entropy_coef} and target_entropy={target_entropy} "
              "both set the target entropy; allowed: one of them (the other null)")
    check_choice("reset_scope", reset_scope, RESET_SCOPES)


def _fused_adam_step(device: torch.device, capturable: bool) -> None:
    """One fused Adam step on a 1-element parameter on ``device``: raises where torch cannot do it."""
    param = torch.zeros(1, device=device, requires_grad=True)
    param.grad = torch.ones_like(param)
    torch.optim.Adam([param], fused=True, capturable=capturable).step()


def check_fused_adam(device: torch.device, capturable: bool = False) -> None:
    """One-line ``ValueError`` unless this torch can run a fused (``capturable`` with ``cudagraphs``) Adam step on
    ``device`` (AdamW shares Adam's fused kernel)."""
    try:
        _fused_adam_step(device, capturable)
    except Exception as err:  # noqa: BLE001 (whatever torch raises, the user gets one line naming the setting)
        what = f"{device} (capturable, for cudagraphs)" if capturable else str(device)
        raise ValueError(f"model.fused_adam=true: torch {torch.__version__} cannot fuse Adam on {what}: "
                         f"{one_line(err)}") from None


def _named_losses(main: dict, aux: dict) -> dict:
    """The guard's names of an update's losses: ``critic loss``, ``aux <name> loss``, ..."""
    return {f"{k} loss": v for k, v in main.items()} | {f"aux {k} loss": v for k, v in aux.items()}


def check_precision(precision: str) -> None:
    """Refuse fp16 (Lightning itself turns ``16-mixed`` into ``bf16-mixed`` on a CPU)."""
    check_trainer(_PrecisionOnly(precision))


class _PrecisionOnly:
    max_steps, log_every_n_steps = 1, 1

    def __init__(self, precision: str) -> None:
        self.precision = precision


def init_defaults(cls: type) -> dict[str, Any]:
    """Default values of ``cls.__init__``'s arguments (settings an older checkpoint may not record)."""
    import inspect

    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _coerce_aux_losses(aux_losses: Mapping[str, Any] | None) -> dict:
    if not aux_losses:
        return {}
    from a2ls_lightning.modules.aux_spec import EXPERIMENT_LOSSES
    from a2ls_lightning.modules.auxiliary import AuxLossSpec
    from a2ls_lightning.modules.harmful import ExperimentLossSpec

    out = {}
    for name, value in dict(aux_losses).items():
        if isinstance(value, ExperimentLossSpec) or (isinstance(value, str) and value.strip() in EXPERIMENT_LOSSES):
            out[str(name)] = value if isinstance(value, ExperimentLossSpec) else ExperimentLossSpec(value.strip())
            continue
        try:
            out[str(name)] = AuxLossSpec.coerce(value)
        except ValueError as err:
            raise ValueError(f"aux_losses.{name}: {err}") from None
    return out


def _build_aux_modules(specs: dict, feature_dim: int, action_dim: int, embed_actions_rewards: bool) -> dict:
    if not specs:
        return {}
    from a2ls_lightning.modules.auxiliary import AuxLoss
    from a2ls_lightning.modules.harmful import ExperimentLossSpec, make_experiment_loss

    return {name: make_experiment_loss(spec, feature_dim) if isinstance(spec, ExperimentLossSpec)
            else AuxLoss(spec, feature_dim, action_dim, embed_actions_rewards) for name, spec in specs.items()}
