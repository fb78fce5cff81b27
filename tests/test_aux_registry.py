"""One interface for auxiliary losses: presets, the spec's text, experiment losses and a user's own loss all resolve
through the registry, and the learner calls each the same way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from a2ls_lightning.modules.agent import SACModule
from a2ls_lightning.modules.aux_registry import (
    AuxContext,
    AuxiliaryLoss,
    RegisteredLoss,
    format_losses_table,
    register_aux_loss,
    resolve_aux_loss,
)
from a2ls_lightning.modules.aux_spec import AuxLossSpec


class _LatentReward(nn.Module):
    """A user's loss: predict r_t from the online features of s_t and a_t."""

    online_offsets, target_offsets = (0,), ()

    def __init__(self, feature_dim: int, action_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(feature_dim + action_dim, 1)

    def compute(self, ctx: AuxContext, reduction: str = "mean") -> torch.Tensor:
        x = torch.cat([ctx.online((0,))[:, 0], ctx.action[:, 0].float()], dim=-1)
        error = (self.head(x) - ctx.reward[:, 0].float()).pow(2).squeeze(-1)  # [B]
        return error if reduction == "none" else error.mean()


def _batch(b: int = 8, length: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"observation": torch.randn(b, length, 17, generator=g), "action": torch.rand(b, length, 6, generator=g),
            "reward": torch.rand(b, length, 1, generator=g), "terminated": torch.zeros(b, length, 1, dtype=torch.bool),
            "episode": torch.zeros(b, length, dtype=torch.long), "step": torch.arange(length).repeat(b, 1)}


def test_every_way_of_naming_a_loss_resolves_through_the_registry():
    assert resolve_aux_loss("a2_winner_v") == AuxLossSpec.preset("a2_winner_v")
    assert resolve_aux_loss("h=1 s0,a0 -> s1 mse") == AuxLossSpec.parse("h=1 s0,a0 -> s1 mse")
    assert isinstance(resolve_aux_loss("adversarial"), RegisteredLoss)
    with pytest.raises(ValueError, match=r"^aux_losses: .*did you mean 'noise_target'"):
        resolve_aux_loss("noise_targt")


def test_a_users_registered_loss_trains_beside_sac(monkeypatch):
    from a2ls_lightning.modules import aux_registry

    monkeypatch.setattr(aux_registry, "_REGISTRY", dict(aux_registry._REGISTRY))  # leave no trace in other tests
    register_aux_loss("latent_reward", lambda feature_dim, action_dim, **_: _LatentReward(feature_dim, action_dim),
                      window=2, description="predict r_t from (s_t, a_t)")
    assert "latent_reward" in format_losses_table() and "predict r_t" in format_losses_table()
    torch.manual_seed(0)
    module = SACModule.from_settings(hidden_dim=32, feature_dim=8, encoder_hidden_dim=8,
                                     aux_losses={"lr": "latent_reward", "fwd": "forward_dynamics"})
    module.build((17,), 6)
    assert isinstance(module.learner.aux_losses["lr"], AuxiliaryLoss)
    assert module.required_slice_length == 2
    _, aux, _ = module.learner.losses(_batch(), update_actor=False)
    per_example = module.learner.losses(_batch(), update_actor=False, per_example=True)[1]
    assert per_example["lr"].shape == (8,)
    torch.testing.assert_close(per_example["lr"].mean(), aux["lr"])
    aux["lr"].backward()
    assert module.learner.aux_losses["lr"].head.weight.grad.abs().sum() > 0  # its own head learns
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.learner.encoder.parameters())
    with pytest.raises(ValueError, match="is an A2LS preset"):
        register_aux_loss("curl", lambda **_: None)
