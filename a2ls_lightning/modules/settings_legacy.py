"""Older spellings of the model settings, read as today's: flat keys (``model.hidden_dim``, a2ls 0.1) become the
grouped keys of :mod:`a2ls_lightning.modules.settings` (``model.network.hidden_dim``).

Applied to the command line, to ``--config`` files and to config dicts before LightningCLI parses them, so every
older config, command and stored benchmark record still runs; a one-line note says what was read and how to print
the new form. Checkpoints are read by :func:`~a2ls_lightning.modules.settings.nest_model_settings` directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from a2ls_lightning.modules.settings import group_of, nest_model_settings

__all__ = ["upgrade_args", "upgrade_config"]


def _note(where: str, keys: list[str]) -> None:
    moved = ", ".join(f"model.{k} → model.{group_of(k)}.{k}" for k in keys[:3]) + (", ..." if len(keys) > 3 else "")
    print(f"a2ls: note: {where} spells model settings flat, as a2ls 0.1 did; read as {moved} "
          "(--print_config shows the new form)", file=sys.stderr)


def _flat_keys(model: Any) -> list[str]:
    return [str(k) for k in model if group_of(str(k))] if isinstance(model, dict) else []


def upgrade_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``config`` with its ``model`` section (or ``fit.model``) nested; a note when anything moved."""
    out = dict(config)
    for holder in (out, out.get("fit") if isinstance(out.get("fit"), dict) else None):
        if holder is not None and _flat_keys(holder.get("model")):
            _note(where, _flat_keys(holder["model"]))
            if holder is not out:
                holder = out["fit"] = dict(holder)
            holder["model"] = nest_model_settings(holder["model"])
    return out


def _upgrade_option(arg: str) -> tuple[str, str | None]:
    """``--model.hidden_dim[=v]`` → ``--model.network.hidden_dim[=v]``; the moved key, or ``None``."""
    name, eq, value = arg.partition("=")
    if not name.startswith("--model."):
        return arg, None
    key = name[len("--model."):]
    group = group_of(key)
    return (f"--model.{group}.{key}{eq}{value}", key) if group else (arg, None)


def upgrade_args(args: list[str]) -> list[str]:
    """Command-line arguments with flat model options and flat ``--config`` files in today's spelling."""
    out, moved = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += [arg, _upgrade_config_file(args[i + 1])]
            i += 2
            continue
        if arg.startswith(("--config=", "-c=")):
            flag, path = arg.split("=", 1)
            out.append(f"{flag}={_upgrade_config_file(path)}")
        else:
            arg, key = _upgrade_option(arg)
            out.append(arg)
            moved += [key] if key else []
        i += 1
    if moved:
        _note("the command line", moved)
    return out


def _upgrade_config_file(path: str) -> str:
    """``path``, or the upgraded YAML text of a flat config file (jsonargparse takes either)."""
    file = Path(path)
    try:
        config = yaml.safe_load(file.read_text()) if file.is_file() else None
    except (OSError, yaml.YAMLError):
        return path  # the CLI's own checks report an unreadable file
    if not isinstance(config, dict):
        return path
    upgraded = upgrade_config(config, str(path))
    return path if upgraded == config else yaml.safe_dump(upgraded, sort_keys=False)
