"""``a2ls plot``: compare groups of runs from their TensorBoard event files.

    a2ls plot --group sac='runs/sac/*' --group a2v='runs/a2v/*' [--tag eval/return] [--out plot.png]
    a2ls plot runs/sac runs/a2v          # each folder is a group: its sub-folders are its runs

Each ``--group LABEL=GLOB`` is a glob of run folders (one folder per run, e.g. one per seed; its event files are
found recursively). Each positional ``FOLDER`` is a group labelled by its name whose runs are its sub-folders that
hold event files (e.g. the ``seed_<n>`` folders of ``a2ls fit --seeds``), or the folder itself when none does.
A run without the ``--tag`` scalars (a run that never evaluated) is skipped with one line. Writes the mean ± std curves to ``--out`` and the table of final value and AULC to
``<out stem>.md``, and prints the table. Bad input raises a one-line ``ValueError`` naming the option (the ``a2ls``
command prints it as ``a2ls: error: ...`` and exits 2).
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a2ls_lightning.plotting import Curve

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line ``ValueError``s (``--help`` still prints and exits 0)."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="a2ls plot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare groups of runs from their TensorBoard event files: the mean ± std\n"
        "(over the runs of a group) of an evaluation curve against env steps as a PNG,\n"
        "and a Markdown table of its final value and AULC (mean over the evaluations),\n"
        "printed and written next to the PNG as <stem>.md.",
        epilog="examples:\n"
        "  a2ls plot --group sac='runs/sac/*' --group a2v='runs/a2v/*' --out compare.png\n"
        "  a2ls plot --group 'runs/quickstart/lightning_logs/version_*' --title quickstart\n"
        "  a2ls plot runs/quickstart          # the seed_<n> folders of `a2ls fit --seeds` (or the run itself)",
    )
    parser.add_argument("folders", nargs="*", metavar="FOLDER",
                        help="a group per folder, labelled by its name: its sub-folders holding event files are its "
                        "runs (the folder itself when none does)")
    parser.add_argument("--group", action="append", default=[], metavar="LABEL=GLOB",
                        help="a group of runs: a glob of run folders (one run each; event files found recursively). "
                        "Repeat for each group; a bare GLOB is its own label. Quote the glob for the shell.")
    parser.add_argument("--tag", default="eval/return", help="scalar to compare (default: %(default)s)")
    parser.add_argument("--x-tag", default="eval/env_steps",
                        help="env-step scalar logged with --tag; the logged step (updates) when a run lacks it "
                        "(default: %(default)s)")
    parser.add_argument("--out", default="plot.png", help="PNG to write; the table goes next to it as <stem>.md "
                        "(default: %(default)s)")
    parser.add_argument("--title", default="", help="plot title (default: none)")
    parser.add_argument("--ylabel", default=None, help="y-axis label (default: the --tag)")
    parser.add_argument("--digits", type=int, default=1, help="decimals in the table (default: %(default)s)")
    return parser


def _split_group(spec: str) -> tuple[str, str]:
    label, sep, pattern = spec.partition("=")
    if not sep:
        return spec, spec
    if not label or not pattern:
        raise ValueError(f"--group {spec}: expected LABEL=GLOB")
    return label, pattern


def _group_runs(spec: str, pattern: str) -> list[Path]:
    from a2ls_lightning.plotting import event_files

    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    runs = [Path(m) for m in matches if Path(m).is_dir() and event_files(m)]
    if not runs:
        what = "no folder" if not matches else f"{len(matches)} path(s) but no folder"
        raise ValueError(f"--group {spec}: matched {what} with TensorBoard event files")
    return runs


def _folder_runs(folder: str) -> list[Path]:
    """The runs of a positional FOLDER: its sub-folders with event files, else the folder itself."""
    from a2ls_lightning.plotting import event_files

    path = Path(os.path.expanduser(folder))
    if not path.is_dir():
        raise ValueError(f"FOLDER {folder}: not a folder")
    runs = [sub for sub in sorted(path.iterdir()) if sub.is_dir() and event_files(sub)]
    if not runs and event_files(path):
        runs = [path]
    if not runs:
        raise ValueError(f"FOLDER {folder}: holds no TensorBoard event files")
    return runs


def main(argv: list[str]) -> None:
    """``a2ls plot`` (``argv`` without the ``plot`` word)."""
    args = _parser().parse_args(argv)
    if args.digits < 0:
        raise ValueError(f"--digits={args.digits}: must be >= 0")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: must end in .png")
    if not out.parent.is_dir():
        raise ValueError(f"--out {args.out}: folder {out.parent} does not exist")
    if not args.group and not args.folders:
        raise ValueError("give FOLDER arguments or --group LABEL=GLOB (see a2ls plot --help)")
    sources = [(*_split_group(spec), spec) for spec in args.group]
    sources += [(Path(folder.rstrip("/")).name or folder, folder, folder) for folder in args.folders]
    from a2ls_lightning.plotting import eval_curve, markdown_table, plot_groups, read_scalars

    groups: dict[str, list[Curve]] = {}
    x_in_updates = False
    for label, pattern, spec in sources:
        if label in groups:
            raise ValueError(f"group {spec}: label {label!r} given twice")
        curves = []
        runs = _folder_runs(pattern) if spec in args.folders else _group_runs(spec, pattern)
        for run in runs:
            scalars = read_scalars(run, tags=(args.tag, args.x_tag))
            if args.tag not in scalars:
                print(f"a2ls plot: skipping {run}: no {args.tag!r} scalars (it never evaluated; see --tag)")
                continue
            x_in_updates |= args.x_tag not in scalars
            curves.append(eval_curve(scalars, args.tag, args.x_tag))
        if not curves:
            raise ValueError(f"group {spec}: none of its {len(runs)} run(s) has {args.tag!r} scalars (see --tag)")
        groups[label] = curves
    xlabel = "env steps" + (" (updates where --x-tag was not logged)" if x_in_updates else "")
    plot_groups(groups, out, title=args.title, ylabel=args.ylabel or args.tag, xlabel=xlabel)
    table = markdown_table(groups, digits=args.digits)
    out.with_suffix(".md").write_text(f"{table}\n\n![{args.tag}]({out.name})\n")
    print(table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
