"""Building a configured ``Trainer``, :class:`SACModule` and :class:`ReplayDataModule` from an ``a2ls fit`` config.

What the ``a2ls`` command and the loss search share: one LightningCLI class (one seed for everything), the
quickstart config underneath every run, and :func:`instantiate`, which builds the three objects of a config
dict exactly as ``a2ls fit`` would, without training. Nothing here imports the command line.
"""

from __future__ import annotations

import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from a2ls_lightning.data.datamodule import ReplayDataModule
from a2ls_lightning.modules.agent import SACModule
from a2ls_lightning.validation import one_line

__all__ = ["A2LSCLI", "QUICKSTART", "instantiate"]

#: The defaults under every run: state cheetah-run with CPU-sized networks (``a2ls fit`` with no ``--config``).
QUICKSTART = Path(__file__).parent / "configs" / "quickstart.yaml"


class A2LSCLI(LightningCLI):
    """LightningCLI with one seed for everything (``seed_everything`` feeds ``data.seed``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("seed_everything", "data.seed")


def instantiate(config: dict[str, Any]) -> A2LSCLI:
    """Model, datamodule and trainer of an ``a2ls fit`` config, as ``a2ls fit`` would build them (no training).

    Args:
        config: ``{"seed_everything": ..., "trainer": {...}, "model": {...}, "data": {...}}``; what it leaves
            out comes from the quickstart config.

    Returns:
        The CLI object: ``.model``, ``.datamodule`` and ``.trainer``.

    Raises:
        ValueError: one line naming the bad key or value.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")  # args given on purpose
            return A2LSCLI(SACModule, ReplayDataModule, run=False, args=config, save_config_callback=None,
                           seed_everything_default=int(config.get("seed_everything", 1)),
                           parser_kwargs={"default_config_files": [str(QUICKSTART)], "exit_on_error": False})
    except ValueError as err:
        raise ValueError(one_line(err)) from None
    except (ArgumentError, TypeError, KeyError) as err:
        raise ValueError(f"config: {one_line(err)}") from None
