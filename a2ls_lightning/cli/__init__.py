"""The ``a2ls`` command, on top of every other layer: ``fit`` (LightningCLI over :class:`SACModule` and
:class:`ReplayDataModule`; ``--seeds`` for many seeds at once), ``evaluate`` (a checkpoint's policy, and video),
``losses``, ``search`` (the auxiliary-loss search), ``plot`` and ``export`` (a policy for torch alone).

``a2ls fit`` with no ``--config`` runs the quickstart (state cheetah-run, CPU-sized networks); any other
config file or flag overrides it. Every bad input stops the command before any work with one line that names the
field or file (exit 2), and a failure during training (divergence, a full disk) with one line naming the last good
checkpoint (exit 1); ``A2LS_DEBUG=1`` shows the traceback. Nothing else in the package imports this module.

Heavy packages (torch, Lightning, dm_control, matplotlib) are imported only by the verbs that need them, so
``a2ls --help``, ``a2ls losses`` and every ``--help`` of our own verbs start at once
(``python scripts/benchmark_startup.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from a2ls_lightning.validation import RunComplete

COMMANDS = (
    ("fit", ("train SAC with optional auxiliary losses (no --config: the quickstart, state cheetah-run); "
             "`a2ls fit --help` lists every setting; `--seeds 1,2,3 --jobs 2` trains several seeds at once")),
    ("evaluate", "play a checkpoint's policy: returns of N episodes, a JSON record, optionally a video"),
    ("losses", "list the auxiliary-loss presets (A2-winner, A2-winner-v, CURL, forward dynamics, ...)"),
    ("search", "evolutionary search of auxiliary losses on Optuna; `a2ls search report` summarises one"),
    ("plot", "compare runs: mean ± std of eval/return against env steps (PNG) and a table of final value and AULC"),
    ("export", "write a checkpoint's policy with torch.export, to run with torch alone (torch.export.load)"),
)


def _print_help() -> None:
    names = ",".join(name for name, _ in COMMANDS)
    width = max(len(name) for name, _ in COMMANDS)
    print(f"usage: a2ls {{{names}}} ...\n\nSample-efficient reinforcement learning with auxiliary losses (SAC, "
          "A2LS losses, OL-AUX) on PyTorch Lightning and TorchRL.\n\ncommands:")
    for name, text in COMMANDS:
        print(f"  {name.ljust(width)}  {text}")
    print("\nEvery command has --help. Bad settings stop before any work with one line (A2LS_DEBUG=1: traceback).")


def _print_losses(argv: list[str]) -> None:
    from a2ls_lightning.cli.parsing import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="a2ls losses", description="The auxiliary-loss presets: name, horizon, "
                                   "inputs -> targets, operator. Use a name (or the text form) in "
                                   "--model.aux_losses, e.g. --model.aux_losses='{a2v: a2_winner_v}'.")
    parser.parse_args(argv)
    from a2ls_lightning.modules.aux_registry import format_losses_table

    print(format_losses_table())


def _check_config_files(argv: list[str]) -> None:
    """Read every ``--config`` file first: a YAML error names the file and line (jsonargparse names neither)."""
    import yaml

    from a2ls_lightning.cli.parsing import config_paths

    for path in config_paths(argv):
        if not Path(path).is_file():
            raise ValueError(f"config: {path} does not exist")
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
            raise ValueError(f"config: {path} is not valid YAML:{where} {getattr(err, 'problem', None) or err}")\
                from None


def _fit_and_other_verbs(args: list[str] | None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    _check_config_files(argv)
    if argv[:1] == ["fit"] and any(a == "--seeds" or a.startswith("--seeds=") for a in argv):
        from a2ls_lightning.cli.multi import main as multi_main

        multi_main(argv[1:])
        return
    runner_only = [a.partition("=")[0] for a in argv if a.partition("=")[0] in ("--jobs", "--seeds_root")]
    if argv[:1] == ["fit"] and runner_only:
        raise ValueError(f"{runner_only[0]}: only with --seeds (e.g. a2ls fit --seeds 1,2,3 {runner_only[0]} ...)")
    from a2ls_lightning.cli.multi import SEEDS_HELP
    from a2ls_lightning.builder import A2LSCLI, QUICKSTART
    from a2ls_lightning.data.datamodule import ReplayDataModule
    from a2ls_lightning.modules.agent import SACModule

    A2LSCLI(
        SACModule,
        ReplayDataModule,
        seed_everything_default=1,
        # exit_on_error=False: jsonargparse raises instead of printing its usage; `describe` makes it one line.
        parser_kwargs={"exit_on_error": False,
                       "fit": {"default_config_files": [str(QUICKSTART)], "epilog": SEEDS_HELP}},
        save_config_kwargs={"overwrite": True},
        args=args,  # None: LightningCLI reads sys.argv itself
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``a2ls`` console script: ``fit`` (and LightningCLI's other verbs), ``evaluate``,
    ``losses``, ``search``, ``plot``, ``export``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            _print_help()
        elif argv[:1] == ["losses"]:
            _print_losses(argv[1:])
        elif argv[:1] == ["evaluate"]:
            from a2ls_lightning.cli.evaluate import main as evaluate_main

            evaluate_main(argv[1:])
        elif argv[:1] == ["search"]:
            from a2ls_lightning.cli.search import main as search_main

            search_main(argv[1:])
        elif argv[:1] == ["export"]:
            from a2ls_lightning.cli.export import main as export_main

            export_main(argv[1:])
        elif argv[:1] == ["plot"]:
            from a2ls_lightning.cli.plot import main as plot_main

            plot_main(argv[1:])
        else:
            _fit_and_other_verbs(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except RunComplete as done:  # nothing to do is not an error
        print(f"a2ls: {done}", file=sys.stderr)
        raise SystemExit(0) from None
    except Exception as err:
        from a2ls_lightning.cli.errors import describe
        from a2ls_lightning.files import remove_created_folders

        remove_created_folders()  # a refused run leaves no empty folders behind
        described = describe(err)
        if described is None or os.environ.get("A2LS_DEBUG"):
            raise
        code, text = described
        print(f"a2ls: error: {text}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
