"""What the ``a2ls`` command prints for an exception: one line, and the exit code.

Bad input (ours, Lightning's, jsonargparse's, PyYAML's, a checkpoint that cannot be read) exits 2; a failure
during work that leaves the last good state intact (divergence, a full disk) exits 1. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from argparse import ArgumentError

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from a2ls_lightning.files import WriteError
from a2ls_lightning.modules.guard import NonFiniteError
from a2ls_lightning.validation import closest, one_line

BAD_INPUT, FAILED = 2, 1
_PEER_GONE = re.compile(
    r"Connection closed by peer|Connection reset by peer|remote worker|NCCL communicator was aborted")
_NO_CLASS = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NO_SHORT_CLASS = re.compile(r"Expected a path but (\w+) either not accessible or invalid")
#: Where a short class name given to ``--trainer.callbacks`` (``OLAux``) is looked for a suggestion.
_CALLBACKS = "a2ls_lightning.callbacks"


def describe(err: BaseException) -> tuple[int, str] | None:
    """``(exit code, one line)`` for a known kind of error, ``None`` for a bug (shown with its traceback)."""
    if isinstance(err, (NonFiniteError, WriteError, FloatingPointError)):
        return FAILED, one_line(err)
    if isinstance(err, RuntimeError) and _PEER_GONE.search(str(err)):
        # DDP: another rank failed and closed its connections; its own message says why.
        return FAILED, f"stopped because another rank failed (see its message): {one_line(err)[:200]}"
    if isinstance(err, ArgumentError):
        return BAD_INPUT, parse_error(str(err))
    if isinstance(err, yaml.YAMLError):
        return BAD_INPUT, f"config: not valid YAML: {one_line(err)}"
    if isinstance(err, (ValueError, MisconfigurationException)):
        return BAD_INPUT, one_line(err)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return BAD_INPUT, one_line(err)
    if isinstance(err, ImportError):  # e.g. an accelerator or class path whose package is not installed
        return BAD_INPUT, one_line(err)
    return None


def parse_error(message: str) -> str:
    """jsonargparse's message, often a multi-line dump of every alternative of a union, as one useful line.

    Keeps the key it names and the most specific reason: for a callback or other ``class_path`` value, the
    problem reported for the class that was given, not the list of every type it is not.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    head = lines[0]
    key = re.search(r'[Kk]ey "([^"]+)"', head)
    raw = [line for line in message.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(raw) if "Problem with given class_path" in line), None)
    if first is not None:
        # The lines nested under the first alternative (the class that was given) say what is wrong with it.
        indent = len(raw[first]) - len(raw[first].lstrip())
        nested = [raw[first].strip()]
        for line in raw[first + 1:]:
            if len(line) - len(line.lstrip()) <= indent:
                break
            nested.append(line.strip())
        reason = " ".join(nested)
        reason = re.sub(r"- Problem with given class_path '([^']+)':", r"\1:", reason)
        reason = re.sub(r'Parser key "([^"]+)":', r"\1:", reason)
        return one_line(f"{key.group(1)}: {reason}" if key else f"{head} {reason}") + _class_hint(reason)
    config_file = re.search(r"(?:Unable to load config|Problem in default config file) ['\"]?([^'\":]+)", head)
    if config_file:
        return one_line(head)
    if key and len(lines) > 1:
        hint = _class_hint(message) if "callbacks" in key.group(1) else ""  # a short name is looked for there
        return one_line(f"{key.group(1)}: {' '.join(lines[1:3])}") + hint
    return one_line(" ".join(lines[:3]))


def _class_hint(message: str) -> str:
    """``; did you mean 'a2ls_lightning.callbacks.OLAux'?`` for a misspelt class, ``""`` when none is close.

    For a class path (``a2ls_lightning.callbacks.OLAx``) the candidates are the classes in its module's
    ``__all__`` (for ``a2ls_lightning.callbacks``: the weighting callbacks and the others); for a short name
    (``OLAx``, which jsonargparse resolves among imported subclasses) those of ``a2ls_lightning.callbacks``.
    Modules are looked up in ``sys.modules`` only: jsonargparse imported them while resolving the value, and an
    error message must not import anything.
    """
    found = _NO_CLASS.search(message)
    module_name, name = (found[1], found[2]) if found else (_CALLBACKS, None)
    if name is None:
        short = _NO_SHORT_CLASS.search(message)
        name = short[1] if short else None
    module = sys.modules.get(module_name)
    if name is None or module is None:
        return ""
    classes = [n for n in getattr(module, "__all__", ()) if isinstance(getattr(module, n, None), type)]
    close = closest(name, classes)
    return f"; did you mean '{module_name}.{close}'?" if close is not None else ""
