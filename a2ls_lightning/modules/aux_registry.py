"""One interface for auxiliary losses, and the registry (name → recipe) that every way of naming one goes through.

An auxiliary loss is an ``nn.Module`` that follows :class:`AuxiliaryLoss`: it says which states of a replay window
it reads through the online and the target (EMA) encoder, and turns one update's :class:`AuxContext` into a loss
(a scalar, or ``[B]`` per example). The learner encodes the states every loss needs once, builds the context, and
calls each loss the same way; it never asks what kind of loss it holds.

A *recipe* builds the module once the networks' sizes are known (:class:`AuxLossRecipe`): an
:class:`~a2ls_lightning.modules.aux_spec.AuxLossSpec` of the A2LS space is one, so are the experiment losses and
whatever a user registers. :func:`resolve_aux_loss` turns what a config holds (a preset name, the spec text, a
registered name, a recipe) into a recipe. Registering a loss of your own:

    >>> from torch import nn
    >>> class LatentReward(nn.Module):          # predicts r_t from the online features of s_t
    ...     online_offsets, target_offsets, window = (0,), (), 2
    ...     def __init__(self, feature_dim: int, action_dim: int) -> None:
    ...         super().__init__()
    ...         self.head = nn.Linear(feature_dim + action_dim, 1)
    ...     def compute(self, ctx: "AuxContext", reduction: str = "mean"):
    ...         x = torch.cat([ctx.online((0,))[:, 0], ctx.action[:, 0].float()], dim=-1)
    ...         error = (self.head(x) - ctx.reward[:, 0].float()).pow(2).squeeze(-1)   # [B]
    ...         return error if reduction == "none" else error.mean()
    >>> register_aux_loss("latent_reward", lambda feature_dim, action_dim, **_: LatentReward(feature_dim, action_dim),
    ...                   description="predict r_t from (s_t, a_t)")
    >>> # SACModule(aux_losses={"lr": "latent_reward"}) now trains it beside SAC's losses.

This module imports no torch at import time (``a2ls losses`` lists the registry at once); built-in losses import
their classes when built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from a2ls_lightning.modules.aux_spec import PRESET_TEXTS, AuxLossSpec, format_spec_table
from a2ls_lightning.validation import did_you_mean

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["AuxContext", "AuxLossRecipe", "AuxiliaryLoss", "RegisteredLoss", "aux_loss_names", "build_aux_losses",
           "format_losses_table", "register_aux_loss", "resolve_aux_loss", "resolve_aux_losses"]


@dataclass
class AuxContext:
    """What one update offers its auxiliary losses, for a batch of ``B`` windows of ``L`` states.

    Attributes:
        features: ``[B, n_online, F]`` online-encoder features of the states at ``online_offsets`` (with gradient).
        target_features: ``[B, n_target, F]`` target-encoder features at ``target_offsets`` (no gradient).
        online_offsets: window offsets of ``features``' columns (always holds 0).
        target_offsets: window offsets of ``target_features``' columns (always holds 1).
        batch: the replay batch: ``observation [B, L, ...]``, ``action [B, L, A]``, ``reward [B, L, 1]``,
            ``episode [B, L]``, ``step [B, L]``, ...
        target_q: ``[B, 1]`` the critic's Bellman target (detached).
        critic: the Q-network module (for losses that read it, e.g. the adversarial experiment loss).
    """

    features: Tensor
    target_features: Tensor
    online_offsets: list[int]
    target_offsets: list[int]
    batch: Mapping[str, Tensor]
    target_q: Tensor
    critic: nn.Module
    _columns: dict = field(default_factory=dict, repr=False)

    @property
    def action(self) -> Tensor:
        """``[B, L, A]`` raw actions; ``action[:, t]`` was taken in state ``t``."""
        return self.batch["action"]

    @property
    def reward(self) -> Tensor:
        """``[B, L, 1]`` raw rewards of the steps ``t → t+1``."""
        return self.batch["reward"]

    @property
    def episode(self) -> Tensor:
        """``[B, L]`` episode ids of the window's states."""
        return self.batch["episode"]

    @property
    def step(self) -> Tensor:
        """``[B, L]`` steps within the episode."""
        return self.batch["step"]

    def online(self, offsets: tuple[int, ...]) -> Tensor:
        """``[B, len(offsets), F]`` online features of the states at ``offsets`` (each declared by the loss)."""
        return self.features[:, self._index("online", offsets, self.online_offsets)]

    def target(self, offsets: tuple[int, ...]) -> Tensor:
        """``[B, len(offsets), F]`` target-encoder features of the states at ``offsets``."""
        return self.target_features[:, self._index("target", offsets, self.target_offsets)]

    def _index(self, kind: str, offsets: tuple[int, ...], available: list[int]) -> list[int]:
        key = (kind, tuple(offsets))
        if key not in self._columns:
            self._columns[key] = [available.index(o) for o in offsets]
        return self._columns[key]


@runtime_checkable
class AuxiliaryLoss(Protocol):
    """The interface of an auxiliary-loss module (an ``nn.Module``; its parameters train with the encoder's group).

    Attributes:
        online_offsets: window offsets of the states it reads through the online encoder.
        target_offsets: window offsets of the states it reads through the target encoder.
    """

    online_offsets: tuple[int, ...]
    target_offsets: tuple[int, ...]

    def compute(self, ctx: AuxContext, reduction: str = "mean") -> Tensor:
        """The loss: a float scalar, or ``[B]`` (one per window, whose mean is the scalar) with ``"none"``."""
        ...


@runtime_checkable
class AuxLossRecipe(Protocol):
    """What a config names: builds the loss module once the sizes are known. ``str()`` gives its config form.
    (An :class:`~a2ls_lightning.modules.aux_spec.AuxLossSpec` is built by :func:`build_aux_losses` itself.)

    Attributes:
        window: consecutive states a replay window must hold for it (2: ``s_t`` and ``s_t+1``).
    """

    window: int

    def build(self, feature_dim: int, action_dim: int, embed_actions_rewards: bool = False) -> nn.Module:
        ...


@dataclass(frozen=True)
class RegisteredLoss:
    """A registered loss: ``factory(feature_dim=..., action_dim=..., embed_actions_rewards=...)`` → the module."""

    name: str
    factory: Callable[..., Any]
    window: int = 2
    description: str = ""
    harmful: bool = False

    def build(self, feature_dim: int, action_dim: int, embed_actions_rewards: bool = False) -> nn.Module:
        return self.factory(feature_dim=feature_dim, action_dim=action_dim,
                            embed_actions_rewards=embed_actions_rewards)

    def __str__(self) -> str:
        return self.name


_REGISTRY: dict[str, RegisteredLoss] = {}


def register_aux_loss(name: str, factory: Callable[..., Any], window: int = 2, description: str = "",
                      harmful: bool = False) -> RegisteredLoss:
    """Make ``name`` usable wherever a loss is named (``aux_losses={"x": name}``, ``--model.aux_losses``).

    Args:
        name: the name; must not shadow a preset of the A2LS space.
        factory: called with keyword arguments ``feature_dim``, ``action_dim``, ``embed_actions_rewards``; returns
            an ``nn.Module`` following :class:`AuxiliaryLoss`.
        window: consecutive states per replay window the loss reads (its largest offset + 1; at least 2).
        description: one line for ``a2ls losses``.
        harmful: listed apart, as a loss built to hurt (experiments on weighting rules).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_aux_loss: name={name!r} must be an identifier")
    if name in PRESET_TEXTS:
        raise ValueError(f"register_aux_loss: {name!r} is an A2LS preset; choose another name")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"register_aux_loss: window={window!r} must be an integer >= 2")
    entry = RegisteredLoss(name, factory, window, description, harmful)
    _REGISTRY[name] = entry
    return entry


def _adversarial(**_: Any) -> Any:
    from a2ls_lightning.modules.harmful import AdversarialLoss

    return AdversarialLoss()


def _noise_target(feature_dim: int, **_: Any) -> Any:
    from a2ls_lightning.modules.harmful import NoiseTargetLoss

    return NoiseTargetLoss(feature_dim)


register_aux_loss("adversarial", _adversarial, harmful=True,
                  description="the negated critic loss through the shared encoder only (OL-AUX's harmful toy task)")
register_aux_loss("noise_target", _noise_target, harmful=True,
                  description="regress a fixed random target per stored transition (memorisation)")


def resolve_aux_loss(value: Any, field_name: str = "aux_losses") -> AuxLossRecipe:
    """A recipe for what a config or a caller names: a recipe (kept), a registered name, a preset name, the spec's
    text form or mapping form (``AuxLossSpec.coerce``). A one-line ``ValueError`` names ``field_name`` otherwise."""
    if isinstance(value, (AuxLossSpec, RegisteredLoss)) or (
            not isinstance(value, (str, Mapping)) and isinstance(value, AuxLossRecipe)):
        return value
    if isinstance(value, str) and value.strip() in _REGISTRY:
        return _REGISTRY[value.strip()]
    try:
        return AuxLossSpec.coerce(value)
    except ValueError as err:
        hint = did_you_mean(value, [*_REGISTRY]) if isinstance(value, str) and " " not in value.strip() else ""
        raise ValueError(f"{field_name}: {err}{hint}") from None


def aux_loss_names() -> dict[str, str]:
    """Every name a loss can be given by: presets, then registered losses, each with its description."""
    return {**{name: text for name, text in PRESET_TEXTS.items()},
            **{name: entry.description for name, entry in _REGISTRY.items()}}


def is_harmful(recipe: Any) -> bool:
    """Whether a recipe names a loss built to hurt (an experiment loss)."""
    return bool(getattr(recipe, "harmful", False))


def format_losses_table(registry: Mapping[str, RegisteredLoss] | None = None) -> str:
    """``a2ls losses``: the presets' table, then registered losses, then the losses known to hurt."""
    entries = _REGISTRY if registry is None else registry
    lines = [format_spec_table()]
    own = [e for e in entries.values() if not e.harmful]
    if own:
        lines += ["", "Registered losses:"] + [f"  {e.name.ljust(14)}{e.description}" for e in own]
    lines += ["", "Experiment losses, known to HURT (to test weighting rules, not to train agents):"]
    lines += [f"  {e.name.ljust(14)}{e.description}" for e in entries.values() if e.harmful]
    return "\n".join(lines)


def resolve_aux_losses(aux_losses: Mapping[str, Any] | None) -> dict[str, AuxLossRecipe]:
    """``{name: recipe}`` for a module's ``aux_losses`` setting (one line naming ``aux_losses.<name>`` if bad)."""
    return {str(name): resolve_aux_loss(value, f"aux_losses.{name}") for name, value in dict(aux_losses or {}).items()}


def build_aux_losses(recipes: Mapping[str, AuxLossRecipe], feature_dim: int, action_dim: int,
                     embed_actions_rewards: bool = False) -> dict[str, nn.Module]:
    """The modules of ``recipes``, built in their order (the order of their random initialisation)."""
    return {name: _build(recipe, feature_dim, action_dim, embed_actions_rewards) for name, recipe in recipes.items()}


def _build(recipe: Any, feature_dim: int, action_dim: int, embed_actions_rewards: bool) -> nn.Module:
    if isinstance(recipe, AuxLossSpec):  # the spec language stays free of torch: its module is built here
        from a2ls_lightning.modules.auxiliary import AuxLoss

        return AuxLoss(recipe, feature_dim, action_dim, embed_actions_rewards)
    return recipe.build(feature_dim, action_dim, embed_actions_rewards)
