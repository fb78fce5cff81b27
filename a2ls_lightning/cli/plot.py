"""``a2ls plot``: compare groups of runs from their TensorBoard event files.

    a2ls plot --group sac='runs/sac/*' --group a2v='runs/a2v/*' [--tag eval/return] [--out plot.png] [--force]
    a2ls plot runs/sac runs/a2v          # each folder is a group: its sub-folders are its runs

Each ``--group LABEL=GLOB`` is a glob of run folders (one folder per run, e.g. one per seed; its event files are
found recursively). Each positional ``FOLDER`` is a group labelled by its name whose runs are its sub-folders that
hold event files (e.g. the ``seed_<n>`` folders of ``a2ls fit --seeds``), or the folder itself when none does.
A run without the ``--tag`` scalars (a run that never evaluated) is skipped with one line. Curves are aligned on
their env steps: a group whose runs were evaluated at different env steps (another budget or schedule, a run still
training) is said so in one line naming its runs, each run is drawn on its own x with the band only where all
share x, and the table marks the group. Writes the curves to ``--out`` (default: ``plot.png`` in the first FOLDER)
and the table of final value and AULC to ``<out stem>.md``, and prints the table; an existing output stops the
command before any work unless ``--force``. Bad input raises a one-line ``ValueError`` naming the option (the ``a2ls``
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
    """argparse whose errors are one-line ``ValueError``s (``--help`` still prints and exits 0), without prefix
    matching, naming the closest option to an unknown one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str):  # type: ignore[override]
        from a2ls_lightning.validation import unknown_option_hint

        raise ValueError(message + unknown_option_hint(message, self))


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
                        help="a group of runs: a glob of run folders (one run each; event files found recursively) "
                        "or of benchmark records (*.json); several globs joined with '|'. Repeat for each group; a "
                        "bare GLOB is its own label. Quote the glob for the shell.")
    parser.add_argument("--tag", default="eval/return", help="scalar to compare (default: %(default)s)")
    parser.add_argument("--x-tag", default="eval/env_steps",
                        help="env-step scalar logged with --tag; the logged step (updates) when a run lacks it "
                        "(default: %(default)s)")
    parser.add_argument("--out", default=None, help="PNG to write; the table goes next to it as <stem>.md "
                        "(default: plot.png in the first FOLDER, else in the working folder)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the files that --out (and --aggregate, --json) would write; without it an "
                        "existing one stops the command before any work")
    parser.add_argument("--title", default="", help="plot title (default: none)")
    parser.add_argument("--ylabel", default=None, help="y-axis label (default: the --tag)")
    parser.add_argument("--digits", type=int, default=1, help="decimals in the table (default: %(default)s)")
    stats = parser.add_argument_group(
        "aggregates across tasks and seeds (rliable: pip install 'a2ls_lightning[stats]')")
    stats.add_argument("--aggregate", action="store_true",
                       help="also the IQM and mean of normalised scores with stratified-bootstrap 95%% CIs, the "
                       "probability of improvement over --baseline, and performance profiles (<stem>_profile.png)")
    stats.add_argument("--score", choices=("final", "aulc"), default="final",
                       help="score of a run: its last evaluation or the mean of its evaluations (default: final)")
    stats.add_argument("--reference", action="append", default=[], metavar="TASK=VALUE",
                       help="normalise TASK's scores by VALUE (default: 1000, DMC's maximum return)")
    stats.add_argument("--baseline", default=None, help="group the others are compared with (default: the first)")
    stats.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default: %(default)s)")
    stats.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    stats.add_argument("--json", default=None, metavar="FILE", help="write every aggregate figure to FILE (JSON)")
    return parser


def _split_group(spec: str) -> tuple[str, str]:
    label, sep, pattern = spec.partition("=")
    if not sep:
        return spec, spec
    if not label or not pattern:
        raise ValueError(f"--group {spec}: expected LABEL=GLOB")
    return label, pattern


def _group_runs(spec: str, pattern: str) -> list[Path]:
    from a2ls_lightning.plotting import event_files, is_record

    # Several globs may be joined with '|' (e.g. records of one variant kept in two folders).
    matches = sorted({m for part in pattern.split("|") for m in glob.glob(os.path.expanduser(part), recursive=True)})
    runs = [Path(m) for m in matches if is_record(m) or (Path(m).is_dir() and event_files(m))]
    if not runs:
        what = "no folder" if not matches else f"{len(matches)} path(s) but no folder"
        raise ValueError(f"--group {spec}: matched {what} with TensorBoard event files (or benchmark record)")
    return runs


def _folder_runs(folder: str) -> list[Path]:
    """The runs of a positional FOLDER: its sub-folders with event files, else the folder itself."""
    from a2ls_lightning.plotting import event_files

    path = Path(os.path.expanduser(folder))
    if not path.is_dir():
        raise ValueError(f"FOLDER {folder}: not a folder")
    records = sorted(path.rglob("*.json"))  # a folder of benchmark records (docs/benchmarks/runs/...)
    if records and not event_files(path):
        return records
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
    if args.out is None:  # beside the runs it shows, not in whatever folder the command was typed in
        first = Path(os.path.expanduser(args.folders[0])) if args.folders else None
        args.out = str(first / "plot.png") if first is not None and first.is_dir() else "plot.png"
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: must end in .png")
    if not out.parent.is_dir():
        raise ValueError(f"--out {args.out}: folder {out.parent} does not exist")
    if not args.group and not args.folders:
        raise ValueError("give FOLDER arguments or --group LABEL=GLOB (see a2ls plot --help)")
    sources = [(*_split_group(spec), spec) for spec in args.group]
    sources += [(Path(folder.rstrip("/")).name or folder, folder, folder) for folder in args.folders]
    reference = _references(args.reference)
    if args.reps < 1:
        raise ValueError(f"--reps={args.reps}: must be >= 1")
    targets = [out, out.with_suffix(".md")]
    if args.aggregate:
        targets += [out.with_name(f"{out.stem}_profile.png")] + ([Path(args.json)] if args.json else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        raise ValueError(f"--out {args.out}: {', '.join(existing)} exist(s) (an earlier a2ls plot?); give --force to "
                         "overwrite, or another --out")
    if args.aggregate:
        from a2ls_lightning.stats import _rliable

        _rliable()  # before any work: one line saying what to install
    from a2ls_lightning.plotting import eval_curve, load_run, markdown_table, plot_groups, same_schedule

    groups: dict[str, list[Curve]] = {}
    members: dict[str, list[Path]] = {}
    x_in_updates = False
    for label, pattern, spec in sources:
        if label in groups:
            raise ValueError(f"group {spec}: label {label!r} given twice")
        curves = []
        runs = _folder_runs(pattern) if spec in args.folders else _group_runs(spec, pattern)
        kept = []
        for run in runs:
            scalars, _ = load_run(run, tags=(args.tag, args.x_tag))
            if args.tag not in scalars:
                print(f"a2ls plot: skipping {run}: no {args.tag!r} scalars (it never evaluated; see --tag)")
                continue
            x_in_updates |= args.x_tag not in scalars
            curves.append(eval_curve(scalars, args.tag, args.x_tag))
            kept.append(run)
        if not curves:
            raise ValueError(f"group {spec}: none of its {len(runs)} run(s) has {args.tag!r} scalars (see --tag)")
        if not same_schedule(curves):  # said before the table: its final and AULC then mix budgets
            shown = ", ".join(f"{run} ({len(x)} evaluations, last at {x[-1]:.0f})" for run, (x, _) in zip(kept, curves))
            print(f"a2ls plot: group {label}: its runs were evaluated at different env steps (another budget or "
                  f"schedule): {shown}; each is drawn on its own x, the mean ± std only where all share x")
        groups[label] = curves
        members[label] = kept
    if args.baseline is not None and args.baseline not in groups:
        raise ValueError(f"--baseline {args.baseline}: not a group; groups: {', '.join(groups)}")
    xlabel = "env steps" + (" (updates where --x-tag was not logged)" if x_in_updates else "")
    plot_groups(groups, out, title=args.title, ylabel=args.ylabel or args.tag, xlabel=xlabel)
    table = markdown_table(groups, digits=args.digits)
    text = f"{table}\n\n![{args.tag}]({out.name})\n"
    written = [out, out.with_suffix(".md")]
    if args.aggregate:
        section, extra = _aggregate_section(args, members, reference, out)
        text += "\n" + section
        written += extra
    out.with_suffix(".md").write_text(text)
    print(table)
    if args.aggregate:
        print("\n" + section)
    print(f"\nwrote {', '.join(map(str, written))}")


def _references(specs: list[str]) -> dict[str, float]:
    reference = {}
    for spec in specs:
        task, sep, value = spec.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not task or not number > 0:
            raise ValueError(f"--reference {spec}: expected TASK=VALUE with VALUE > 0")
        reference[task] = number
    return reference


def _aggregate_section(args: argparse.Namespace, members: dict[str, list[Path]], reference: dict[str, float],
                       out: Path) -> tuple[str, list[Path]]:
    """The Markdown section of the rliable aggregates, the profile PNG and the JSON (``--aggregate``)."""
    import json

    import numpy as np

    from a2ls_lightning.plotting import aggregate_runs, plot_performance_profiles
    from a2ls_lightning.stats import format_aggregate_table

    result = aggregate_runs(members, score=args.score, reference=reference, reps=args.reps, seed=args.seed,
                            tag=args.tag, x_tag=args.x_tag)
    baseline = args.baseline or next(iter(members))
    profile = out.with_name(f"{out.stem}_profile.png")
    plot_performance_profiles({k: np.asarray(v) for k, v in result["scores"].items()}, profile, reps=args.reps,
                              seed=args.seed)
    notes = [f"score: {'last evaluation' if args.score == 'final' else 'mean of the evaluations (AULC)'} of "
             f"{args.tag}, divided per task by {', '.join(f'{t} {v:g}' for t, v in result['reference'].items())}",
             f"tasks: {', '.join(result['tasks'])}; stratified bootstrap, {args.reps} replications, seed {args.seed}"]
    for task, ends in result["mixed_budgets"].items():
        notes.append(f"{task}: runs end at different env steps ({', '.join(f'{e:.0f}' for e in ends)}): their scores "
                     "mix budgets")
    if result["dropped_tasks"]:
        notes.append(f"left out (not in every group): {', '.join(result['dropped_tasks'])}")
    dropped = {k: v for k, v in result["dropped_runs"].items() if v}
    if dropped:
        notes.append("runs left out to keep the same number per task: "
                     + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    section = ("Aggregates (rliable): IQM and mean of normalised scores with 95% CIs; P(X > Y): probability that "
               "a run of X scores higher than a run of Y on a random task.\n\n"
               + "".join(f"- {note}\n" for note in notes) + "\n"
               + format_aggregate_table(result["groups"], baseline) + f"\n\n![profiles]({profile.name})\n")
    extra = [profile]
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items()}, indent=1) + "\n")
        extra.append(Path(args.json))
    return section, extra
