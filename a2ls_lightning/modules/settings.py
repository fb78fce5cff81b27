"""The settings of :class:`~a2ls_lightning.modules.agent.SACModule`, in four frozen dataclasses, one per concern.

Each field is declared once, with its type, default, one-line documentation (``a2ls fit --help`` shows it as
``--model.<group>.<field>``) and its validation. The module and the learner hold the same objects; nothing copies
their fields. A new option is one field here, its use, and its test.

    --model.network.hidden_dim 256 --model.optim.actor_lr 3e-4 --model.sac.discount 0.98 --model.runtime.compile true

Older configs, commands and checkpoints spell the settings flat (``model.hidden_dim``); :func:`nest_model_settings`
reads them (every field name is unique across the groups), so they keep working.

Examples:
    >>> NetworkSettings(hidden_dim=256).hidden_dim
    256
    >>> nest_model_settings({"hidden_dim": 256, "actor_lr": 3e-4})
    {'network': {'hidden_dim': 256}, 'optim': {'actor_lr': 0.0003}}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from a2ls_lightning.modules.encoders import BLOCK_ENCODERS, ENCODERS
from a2ls_lightning.modules.guard import NONFINITE_MODES
from a2ls_lightning.modules.resets import RESET_SCOPES
from a2ls_lightning.modules.sac import NUM_Q
from a2ls_lightning.validation import check, check_choice, check_integer, check_number

__all__ = ["NetworkSettings", "OptimizerSettings", "RuntimeSettings", "SACSettings", "SETTING_GROUPS",
           "flatten_model_settings", "nest_model_settings", "settings_of"]


def _finite(group: str, names: tuple[str, ...], obj: Any) -> None:
    for name in names:
        value = getattr(obj, name)
        check(value is None or (not isinstance(value, bool) and isinstance(value, (int, float))
                                and math.isfinite(value)), f"model.{group}.{name}={value!r} must be a finite number")


@dataclass(frozen=True)
class NetworkSettings:
    """The networks: encoder, actor and Q-networks (widths, depths, SimBa residual blocks).

    Args:
        encoder: observation encoder: ``pixel`` (conv, for pixels), ``mlp``, ``ofe`` or ``identity`` (state).
        feature_dim: encoder output width (50 in CURL/A2LS).
        encoder_hidden_dim: hidden width of the ``mlp``/``ofe`` encoders (40 in A2LS).
        encoder_layers: conv layers (pixel, default 4) or dense layers (ofe, default 1); null for the default.
        num_filters: channels of each conv layer (pixel).
        hidden_dim: width of the two hidden layers of the actor and of each Q-network (1024 in the papers).
        crop_size: random-crop side for pixel observations (84 from 100-pixel renders).
        log_std_min: lower bound of the actor's log standard deviation.
        log_std_max: upper bound of the actor's log standard deviation.
        critic_blocks: SimBa residual blocks (pre-LayerNorm → Linear 4× wider → ReLU → Linear, added to the input;
            Lee et al. 2024) of each Q-network, between a Linear embedding and a final LayerNorm; 0: the plain
            two-hidden-layer MLP.
        actor_blocks: SimBa residual blocks of the actor; 0: the plain MLP.
        encoder_blocks: SimBa residual blocks in the trunk of the ``mlp``/``ofe`` state encoder (its output,
            ``feature_dim`` wide, is unchanged, so the auxiliary losses attach as before); 0: none.
        critic_block_width: width of the critic's residual networks; null: ``hidden_dim``.
        actor_block_width: width of the actor's residual network; null: ``hidden_dim``.
        encoder_block_width: width of the encoder's residual trunk; null: ``encoder_hidden_dim``.
        num_q: Q-networks: 2 (clipped double Q: the minimum of the two) or 1 (SimBa's setting on DMC).
        obs_norm: normalise state observations by their running mean and variance (updated from each training
            batch, before its losses; summed over DDP ranks; saved in checkpoints), clipped to ±10; state only.
        critic_bins: 0: each Q-network outputs its Q-value (squared Bellman error); ``K >= 2``: the categorical
            critic of SimbaV2 (Lee et al. 2025; 101 there): ``K`` logits on atoms evenly spaced on
            [critic_min_value, critic_max_value], trained by cross-entropy against the C51 projection of the soft
            target; the actor maximises the expectation. Values beyond the range are clipped into it: pair with
            ``sac.reward_norm_g_max``.
        critic_min_value: lowest atom of the categorical critic (SimbaV2: -5, the return bound).
        critic_max_value: highest atom of the categorical critic (SimbaV2: 5).
        hyperspherical: SimbaV2's hyperspherical actor and Q-networks: weight rows and features on the unit sphere
            (weights projected back after each optimizer step), learnable scalers, LERP residual blocks
            (``actor_blocks``/``critic_blocks`` of them, widths as for SimBa blocks); not the encoder.
        input_shift: with ``hyperspherical``, the constant appended to each network's input before its
            l2-normalisation (SimbaV2: 3), so that the input's norm is not lost.
    """

    encoder: str = "mlp"
    feature_dim: int = 50
    encoder_hidden_dim: int = 40
    encoder_layers: int | None = None
    num_filters: int = 32
    hidden_dim: int = 1024
    crop_size: int = 84
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    critic_blocks: int = 0
    actor_blocks: int = 0
    encoder_blocks: int = 0
    critic_block_width: int | None = None
    actor_block_width: int | None = None
    encoder_block_width: int | None = None
    num_q: int = 2
    obs_norm: bool = False
    critic_bins: int = 0
    critic_min_value: float = -5.0
    critic_max_value: float = 5.0
    hyperspherical: bool = False
    input_shift: float = 3.0

    def __post_init__(self) -> None:
        check(self.encoder in ENCODERS, f"model.network.encoder={self.encoder!r} is unknown; allowed: "
              f"{', '.join(ENCODERS)}")
        for name in ("feature_dim", "hidden_dim", "num_filters", "encoder_hidden_dim", "crop_size"):
            check_integer(f"model.network.{name}", getattr(self, name), 1)
        if self.encoder_layers is not None:
            check_integer("model.network.encoder_layers", self.encoder_layers, 1)
        _finite("network", ("log_std_min", "log_std_max"), self)
        check(self.log_std_min < self.log_std_max, f"model.network.log_std_min={self.log_std_min} must be < "
              f"log_std_max={self.log_std_max}")
        for name in ("critic_blocks", "actor_blocks", "encoder_blocks"):
            check_integer(f"model.network.{name}", getattr(self, name), 0)
        for name in ("critic_block_width", "actor_block_width", "encoder_block_width"):
            if getattr(self, name) is not None:
                check_integer(f"model.network.{name}", getattr(self, name), 1)
        # The pixel encoder's head already is Linear → LayerNorm on a 35·35·32-wide conv output; a residual
        # embedding of that width would be the largest layer of the agent, for no published gain: state encoders.
        check(self.encoder_blocks == 0 or self.encoder in BLOCK_ENCODERS,
              f"model.network.encoder_blocks={self.encoder_blocks} needs encoder={' or '.join(BLOCK_ENCODERS)}, "
              f"not {self.encoder!r}")
        check(not (self.obs_norm and self.encoder == "pixel"), "model.network.obs_norm=true normalises state "
              "observations; not allowed with encoder='pixel' (pixels: obs_norm=false)")
        check_choice("model.network.num_q", self.num_q, NUM_Q)
        check(isinstance(self.critic_bins, int) and not isinstance(self.critic_bins, bool)
              and (self.critic_bins == 0 or self.critic_bins >= 2),
              f"model.network.critic_bins={self.critic_bins!r} must be 0 (off) or an integer >= 2")
        _finite("network", ("critic_min_value", "critic_max_value"), self)
        _finite("network", ("input_shift",), self)
        check(self.critic_min_value < self.critic_max_value, f"model.network.critic_min_value={self.critic_min_value}"
              f" must be < critic_max_value={self.critic_max_value}")

    @property
    def shift(self) -> float | None:
        """The hyperspherical networks' input shift, or None when they are off."""
        return float(self.input_shift) if self.hyperspherical else None

    @property
    def layers(self) -> int:
        """Encoder layers with the default filled in: 4 conv layers for ``pixel``, 1 dense layer otherwise."""
        return self.encoder_layers or (4 if self.encoder == "pixel" else 1)


@dataclass(frozen=True)
class SACSettings:
    """The SAC algorithm: temperature, discount, target networks, update schedule, resets.

    Args:
        init_temperature: initial entropy temperature α.
        target_entropy: entropy target; null: ``-|A|``.
        target_entropy_coef: target entropy ``-coef·|A|`` (SimBa: 0.5); null: ``target_entropy``'s rule. Not
            together with ``target_entropy``.
        discount: γ.
        critic_tau: EMA rate of the target Q-networks.
        encoder_tau: EMA rate of the target encoder (also the auxiliary losses' target encoder).
        actor_update_freq: update the actor and the temperature every this many updates.
        target_update_freq: update the EMA targets every this many updates.
        reset_every: re-initialise part of the agent every this many updates, keeping the replay (primacy bias,
            Nikishin et al. 2022); 0: never.
        reset_scope: what a reset re-initialises: ``last`` (the last layer of the actor and of each Q-network, and
            the target Q-networks') or ``all`` (encoder, actor, critic, targets, auxiliary heads, temperature; not
            the observation statistics). The reset parameters' Adam state starts afresh.
        reward_norm_g_max: divide every reward of an update by ``max(std(G), max|G| / g_max)``, with ``G`` the
            discounted return of the training episodes so far (running statistics of each collected step's
            ``G_t = r_t + γ·G_{t-1}``, kept by the collector and saved with it; SimbaV2, Lee et al. 2025: 5), so
            that returns stay within ±g_max; null: raw rewards. Under DDP each rank uses its own collector's
            statistics. Evaluation returns are the raw ones.
    """

    init_temperature: float = 0.1
    target_entropy: float | None = None
    target_entropy_coef: float | None = None
    discount: float = 0.99
    critic_tau: float = 0.01
    encoder_tau: float = 0.05
    actor_update_freq: int = 2
    target_update_freq: int = 2
    reset_every: int = 0
    reset_scope: str = "last"
    reward_norm_g_max: float | None = None

    def __post_init__(self) -> None:
        _finite("sac", ("init_temperature", "target_entropy", "discount", "critic_tau", "encoder_tau"), self)
        check(self.init_temperature > 0, f"model.sac.init_temperature={self.init_temperature} must be > 0")
        check(0 < self.discount <= 1, f"model.sac.discount={self.discount} must be in (0, 1]")
        for name in ("critic_tau", "encoder_tau"):
            check(0 < getattr(self, name) <= 1, f"model.sac.{name}={getattr(self, name)} must be in (0, 1]")
        for name in ("actor_update_freq", "target_update_freq"):
            check_integer(f"model.sac.{name}", getattr(self, name), 1)
        if self.target_entropy_coef is not None:
            check_number("model.sac.target_entropy_coef", self.target_entropy_coef, low=0, strict=True)
            check(self.target_entropy is None, f"model.sac.target_entropy_coef={self.target_entropy_coef} and "
                  f"target_entropy={self.target_entropy} both set the target entropy; allowed: one of them (the "
                  "other null)")
        check_integer("model.sac.reset_every", self.reset_every, 0)
        check_choice("model.sac.reset_scope", self.reset_scope, RESET_SCOPES)
        if self.reward_norm_g_max is not None:
            check_number("model.sac.reward_norm_g_max", self.reward_norm_g_max, low=0, strict=True)

    def resolved_target_entropy(self, action_dim: int) -> float:
        """The entropy target for ``action_dim`` actions: ``-coef·|A|``, the given value, or ``-|A|``."""
        if self.target_entropy_coef is not None:
            return -float(self.target_entropy_coef) * action_dim
        return -float(action_dim) if self.target_entropy is None else float(self.target_entropy)


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimiser: one Adam (AdamW with ``weight_decay``) with a parameter group per part.

    Args:
        actor_lr: learning rate of the actor (1e-3; the papers use 2e-4 on cheetah).
        critic_lr: learning rate of the Q-networks.
        encoder_lr: learning rate of the shared encoder and the auxiliary heads; null: ``critic_lr``.
        alpha_lr: learning rate of the temperature.
        actor_beta1: Adam β1 of actor, critic and encoder.
        alpha_beta1: Adam β1 of the temperature (0.5 in CURL).
        weight_decay: AdamW weight decay per group (encoder with the auxiliary heads, critic, actor; not the
            temperature); 0: plain Adam.
        fused_adam: the fused Adam/AdamW step (``fused=True``: one kernel per step), 0.5 ms faster per update on the
            CPU benchmark config (0.60 vs 1.08 ms, one thread). Equal to the default's foreach step up to rounding
            (1e-9 relative after one update), but runs then take other trajectories, as under another seed; not
            the default, so that every stored result stays reproducible bit for bit. Refused in one line where
            this torch cannot fuse Adam on the device. May change when a run resumes.
        lr_decay_to: decay the learning rates of the encoder, critic and actor linearly over the run, from their
            value to this fraction of it at ``trainer.max_steps`` (SimbaV2: 0.5, 1e-4 to 5e-5; Lee et al. 2025);
            null: constant. The temperature's rate stays constant. Not with ``runtime.cudagraphs``.
    """

    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    encoder_lr: float | None = None
    alpha_lr: float = 1e-4
    actor_beta1: float = 0.9
    alpha_beta1: float = 0.5
    weight_decay: float = 0.0
    fused_adam: bool = False
    lr_decay_to: float | None = None

    def __post_init__(self) -> None:
        _finite("optim", ("actor_lr", "critic_lr", "alpha_lr", "encoder_lr", "lr_decay_to"), self)
        check(self.lr_decay_to is None or 0 <= self.lr_decay_to <= 1, f"model.optim.lr_decay_to={self.lr_decay_to} "
              "must be in [0, 1] (the final fraction of each learning rate) or null")
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            check(getattr(self, name) > 0, f"model.optim.{name}={getattr(self, name)} must be > 0")
        check(self.encoder_lr is None or self.encoder_lr > 0, f"model.optim.encoder_lr={self.encoder_lr} must be > 0 "
              "or null")
        for name in ("actor_beta1", "alpha_beta1"):
            _finite("optim", (name,), self)
            check(0 <= getattr(self, name) < 1, f"model.optim.{name}={getattr(self, name)} must be in [0, 1)")
        check_number("model.optim.weight_decay", self.weight_decay, low=0)


@dataclass(frozen=True)
class RuntimeSettings:
    """How an update runs: divergence handling and compilation. These change no result's meaning, and may change
    when a run resumes.

    Args:
        nonfinite: what a non-finite loss, gradient or parameter does: ``stop`` the run at that update (nothing is
            saved after it; the message names the last good checkpoint) or ``skip`` the update (its optimizer step;
            counted in ``train/nonfinite_skips``; costs one host sync per update).
        max_nonfinite_skips: with ``nonfinite=skip``, stop after this many non-finite updates in a row.
        compile: ``torch.compile`` the loss computation of an update (``dynamic=False``: one graph per batch shape
            and per actor/no-actor update); the weighting rule and the backward/optimizer step run eagerly. Rules
            that differentiate each loss on its own (``OLAux``, ``CosineGating``) fall back to the eager losses.
            Results equal eager ones within float tolerance only. The first updates pay the compile time.
        cudagraphs: capture the whole update (losses, weighting, backward, Adam with ``capturable=True``, target
            EMA) as CUDA graphs, one per update kind, after 3 eager updates of each kind. Needs ``nonfinite=stop``,
            one device (no DDP) and no fp16 loss scaling; ``OLAux`` and ``CosineGating`` run eagerly. Without CUDA
            the same update function runs uncaptured (a warning says so). Lightning's ``on_before_backward``,
            ``on_after_backward`` and ``on_before_optimizer_step`` hooks do not run for graphed updates.
    """

    nonfinite: str = "stop"
    max_nonfinite_skips: int = 10
    compile: bool = False
    cudagraphs: bool = False

    def __post_init__(self) -> None:
        check_choice("model.runtime.nonfinite", self.nonfinite, NONFINITE_MODES)
        check_integer("model.runtime.max_nonfinite_skips", self.max_nonfinite_skips, 1)
        check(not (self.cudagraphs and self.nonfinite == "skip"), "model.runtime.cudagraphs=true needs nonfinite=stop:"
              " a skipped update is decided on the host before the optimizer step, which a captured update cannot do")


#: The groups of :class:`SACModule`'s settings: ``--model.<group>.<field>``.
SETTING_GROUPS: dict[str, type] = {"network": NetworkSettings, "sac": SACSettings, "optim": OptimizerSettings,
                                   "runtime": RuntimeSettings}

#: Each field's group (field names are unique across the groups): how a flat, older setting is read.
_GROUP_OF: dict[str, str] = {f.name: group for group, cls in SETTING_GROUPS.items() for f in dataclasses.fields(cls)}
assert len(_GROUP_OF) == sum(len(dataclasses.fields(c)) for c in SETTING_GROUPS.values()), "field names must differ"


def settings_of(group: str, value: Any) -> Any:
    """``value`` as the group's dataclass: an instance passes through; a mapping (a checkpoint's or a notebook's
    ``{"hidden_dim": 256}``) is validated into one, naming an unknown key in one line."""
    cls = SETTING_GROUPS[group]
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    check(isinstance(value, Mapping), f"model.{group}={value!r} must be a {cls.__name__} or a mapping of its fields")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, value)) - known)
    check(not unknown, f"model.{group}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**dict(value))


def nest_model_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Model settings with every flat field of an older config or checkpoint (``hidden_dim``) moved into its group
    (``network: {hidden_dim: ...}``); nested groups and other keys (``aux_losses``) are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        group = _GROUP_OF.get(str(key))
        if group is None:
            if key in SETTING_GROUPS and isinstance(value, Mapping):
                out.setdefault(key, {}).update(dict(value))
            else:
                out[key] = value
        else:
            target = out.setdefault(group, {})
            if dataclasses.is_dataclass(target):  # a group given as an object and a flat field beside it
                target = out[group] = dataclasses.asdict(target)
            target[key] = value
    return out


def flatten_model_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{group: {field: value}}`` (dataclasses or mappings) and flat fields alike → ``{field: value}``: the form two
    runs' settings are compared in (field names are unique across the groups)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SETTING_GROUPS and value is not None:
            flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value))
        else:
            flat[key] = value
    return flat


def group_of(field: str) -> str | None:
    """The group of a field (``hidden_dim`` → ``network``), or ``None`` for a top-level or unknown name."""
    return _GROUP_OF.get(field)


def field_defaults() -> dict[str, Any]:
    """Every field's default, flat (settings an older checkpoint may not record)."""
    return {f.name: f.default for cls in SETTING_GROUPS.values() for f in dataclasses.fields(cls)}
