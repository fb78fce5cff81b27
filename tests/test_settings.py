"""Typed settings: one place per setting, validated where declared, shared by the module and the learner; older
flat configs, commands and checkpoints still read."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from a2ls_lightning.modules.agent import SACModule
from a2ls_lightning.modules.settings import (
    SETTING_GROUPS,
    NetworkSettings,
    OptimizerSettings,
    RuntimeSettings,
    SACSettings,
    flatten_model_settings,
    nest_model_settings,
)
from a2ls_lightning.modules.settings_legacy import upgrade_args, upgrade_config


def test_the_module_and_the_learner_hold_the_same_settings_objects():
    module = SACModule(NetworkSettings(hidden_dim=32, feature_dim=8, encoder_hidden_dim=8))
    module.build((17,), 6)
    assert module.learner.network is module.network
    widths = {p.shape[0] for name, p in module.learner.critic.named_parameters() if name.endswith("weight")}
    assert 32 in widths and 1024 not in widths  # the critic was built from these settings


def test_no_constructor_takes_more_than_fifteen_arguments():
    import inspect

    from a2ls_lightning.modules.learner import SACLearner

    for cls in (SACModule, SACLearner, *SETTING_GROUPS.values()):
        if dataclasses.is_dataclass(cls):
            continue  # a settings group is a record of fields, each a documented CLI key
        assert len(inspect.signature(cls.__init__).parameters) - 1 <= 15, cls


@pytest.mark.parametrize("group,kwargs,fragment", [
    (NetworkSettings, dict(hidden_dim=0), "model.network.hidden_dim=0 must be an integer >= 1"),
    (NetworkSettings, dict(encoder="cnn"), "model.network.encoder='cnn' is unknown; allowed: "),
    (SACSettings, dict(discount=1.5), "model.sac.discount=1.5 must be in (0, 1]"),
    (SACSettings, dict(critic_tau=float("nan")), "model.sac.critic_tau=nan must be a finite number"),
    (OptimizerSettings, dict(actor_lr=0.0), "model.optim.actor_lr=0.0 must be > 0"),
    (OptimizerSettings, dict(alpha_beta1=1.0), "model.optim.alpha_beta1=1.0 must be in [0, 1)"),
    (RuntimeSettings, dict(nonfinite="ignore"), "model.runtime.nonfinite='ignore' is not allowed; allowed: stop, skip"),
    (RuntimeSettings, dict(cudagraphs=True, nonfinite="skip"), "model.runtime.cudagraphs=true needs nonfinite=stop"),
])
def test_each_field_is_validated_where_it_is_declared(group, kwargs, fragment):
    with pytest.raises(ValueError) as err:
        group(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_flat_settings_of_older_configs_are_read_into_their_groups():
    flat = {"hidden_dim": 64, "actor_lr": 3e-4, "discount": 0.98, "compile": False, "aux_losses": {"f": "curl"}}
    nested = nest_model_settings(flat)
    assert nested == {"network": {"hidden_dim": 64}, "optim": {"actor_lr": 3e-4}, "sac": {"discount": 0.98},
                      "runtime": {"compile": False}, "aux_losses": {"f": "curl"}}
    assert flatten_model_settings(nested) == flat
    module = SACModule.from_settings(**flat)
    assert module.network.hidden_dim == 64 and module.optim.actor_lr == 3e-4 and module.sac.discount == 0.98
    with pytest.raises(ValueError, match="unknown setting"):
        SACModule.from_settings(hidden_dims=64)


def test_flat_command_lines_and_config_files_are_upgraded_with_a_note(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": {"hidden_dim": 64, "aux_losses": {"f": "curl"}}, "data": {"seed": 2}}))
    args = upgrade_args(["fit", "--config", str(old), "--model.actor_lr=3e-4", "--model.network.feature_dim", "8"])
    assert args[:2] == ["fit", "--config"] and args[3:] == ["--model.optim.actor_lr=3e-4",
                                                            "--model.network.feature_dim", "8"]
    assert yaml.safe_load(args[2]) == {"model": {"network": {"hidden_dim": 64}, "aux_losses": {"f": "curl"}},
                                       "data": {"seed": 2}}
    note = capsys.readouterr().err
    assert "model.hidden_dim → model.network.hidden_dim" in note and "model.actor_lr → model.optim.actor_lr" in note
    assert upgrade_config({"model": {"network": {"hidden_dim": 1}}}) == {"model": {"network": {"hidden_dim": 1}}}
    assert capsys.readouterr().err == ""  # today's spelling: no note
