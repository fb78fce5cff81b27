"""Periodic resets against the primacy bias (Nikishin et al. 2022, "The Primacy Bias in Deep Reinforcement
Learning"): every ``reset_every`` updates, part of the agent is re-initialised while the replay is kept.

Scopes (``SACModule(reset_scope=...)``):

* ``last``: the last ``Linear`` of the actor and of each Q-network, and of the target Q-networks (which get the
  new online values, as at construction);
* ``all``: every parameter and buffer of the learner: encoder, actor (and its head), critic, their targets, the
  auxiliary heads and the temperature. The running observation statistics are not reset: they describe the
  replay, which is kept.

The new values are those of a freshly constructed learner (the same constructor, so the same initialisation
scheme), built under :func:`torch.random.fork_rng` with a seed made of a fixed offset, the run's seed and the
update number: a resumed run resets to the same values as an uninterrupted one, different seeds of an experiment
get different values, and the training RNG stream is left where it was. Tensors are overwritten in place, so the
optimizer (and a captured CUDA graph) keeps pointing at them. The optimizer state of the reset parameters is
zeroed in place: Adam's first step after that is exactly its first step on a fresh parameter (step 0, zero
moments), while the state tensors a CUDA graph captured stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

#: Allowed ``reset_scope`` values.
RESET_SCOPES = ("last", "all")
#: Mixed into the seed of a reset's initialisation, away from the small seeds runs use.
RESET_SEED_OFFSET = 1_000_003
#: Tensors no scope resets (state-dict name prefixes within the learner): the observation statistics.
KEPT = ("obs_normalizer.",)


def reset_due(update: int, every: int) -> bool:
    """Whether update ``update`` (0-based) ends with a reset: ``(update + 1) % every == 0`` (never for 0)."""
    return every > 0 and (update + 1) % every == 0


def reset_seed(run_seed: int, update: int) -> int:
    """The seed of the re-initialisation after ``update`` in the run seeded ``run_seed`` (a 63-bit integer)."""
    return (RESET_SEED_OFFSET + 7919 * (run_seed % 2**40) + update) % 2**63


def _last_linear(module: nn.Module) -> nn.Module:
    # The last Linear; a hyperspherical network (no nn.Linear) resets its output head, its last module.
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else module.net[-1] if hasattr(module, "net") else module[-1]


def _pairs(live: nn.Module, fresh: nn.Module, scope: str) -> list[tuple[nn.Module, nn.Module]]:
    """(live, fresh) modules whose tensors the scope resets."""
    if scope == "all":
        return [(live, fresh)]
    pairs = [(_last_linear(live.actor), _last_linear(fresh.actor))]
    for name in ("critic", "target_critic"):
        pairs += [(_last_linear(a), _last_linear(b))
                  for a, b in zip(getattr(live, name).q_networks(), getattr(fresh, name).q_networks())]
    return pairs


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


@torch.no_grad()
def reset_learner(learner: nn.Module, make_fresh: Callable[[], nn.Module], scope: str, seed: int,
                  optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Re-initialise the ``scope`` of ``learner`` in place from ``make_fresh()`` built under ``seed``.

    Args:
        learner: the live ``SACLearner``.
        make_fresh: builds a new learner with the same settings (on the CPU; its values are copied over).
        scope: ``last`` or ``all`` (module docstring).
        seed: the seed the fresh learner is built under (:func:`reset_seed`).
        optimizer: its state for the reset parameters is zeroed in place.

    Returns:
        The parameters that were reset.
    """
    if scope not in RESET_SCOPES:
        raise ValueError(f"reset_scope={scope!r} is not allowed; allowed: {', '.join(RESET_SCOPES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = make_fresh()
    reset: list[nn.Parameter] = []
    for live_module, fresh_module in _pairs(learner, fresh, scope):
        fresh_tensors = dict(_tensors(fresh_module))
        for name, tensor in _tensors(live_module):
            if name.startswith(KEPT):
                continue
            tensor.copy_(fresh_tensors[name])
            if isinstance(tensor, nn.Parameter):
                reset.append(tensor)
    for param in reset:
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, torch.Tensor):
                value.zero_()
    return reset
