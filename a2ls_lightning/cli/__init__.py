"""The ``a2ls`` command, on top of every other layer: ``fit`` (LightningCLI over :class:`SACModule` and
:class:`ReplayDataModule`, and its other verbs), ``losses`` and ``search`` (the auxiliary-loss search).

``a2ls fit`` with no ``--config`` runs the quickstart (state cheetah-run, CPU-sized networks); any other
config file or flag overrides it. Bad settings stop the run before training with one line that names the field.
Nothing else in the package imports this module.
"""

from __future__ import annotations

import os
import sys

from a2ls_lightning.builder import A2LSCLI, QUICKSTART
from a2ls_lightning.data.datamodule import ReplayDataModule
from a2ls_lightning.modules.agent import SACModule


def _print_losses() -> None:
    from a2ls_lightning.modules.auxiliary import format_presets_table

    print(format_presets_table())


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``a2ls`` console script: ``fit`` (and LightningCLI's other verbs), ``losses``, ``search``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["losses"]:
            _print_losses()
        elif argv[:1] == ["search"]:
            from a2ls_lightning.cli.search import main as search_main

            search_main(argv[1:])
        elif argv[:1] == ["plot"]:
            from a2ls_lightning.cli.plot import main as plot_main

            plot_main(argv[1:])
        else:
            A2LSCLI(
                SACModule,
                ReplayDataModule,
                seed_everything_default=1,
                parser_kwargs={"fit": {"default_config_files": [str(QUICKSTART)]}},
                save_config_kwargs={"overwrite": True},
                args=args,  # None: LightningCLI reads sys.argv itself
            )
    except ValueError as err:  # our validation errors: one line, no traceback (A2LS_DEBUG=1 shows it)
        if os.environ.get("A2LS_DEBUG"):
            raise
        print(f"a2ls: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
