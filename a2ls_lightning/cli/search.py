"""``a2ls search``: run (or resume, or join) a search, and ``a2ls search report``.

    a2ls search --config configs/search_smoke.yaml [--workers 2] [--storage URL] [--study NAME] [--run-dir DIR]
    a2ls search report --storage URL --study NAME [--out DIR] [--top 10]
    a2ls search report --config configs/search_smoke.yaml            # storage and study from the config
    a2ls search fidelity [--records docs/benchmarks/runs] [--target aulc] [--held-out]   # which cheap score ranks well

Everything is checked before the first candidate trains: bad settings raise a one-line ``ValueError`` naming the
field (the ``a2ls`` command prints it as ``a2ls: error: ...``). ``python -m a2ls_lightning.cli search ...`` is the
same command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from a2ls_lightning.cli.parsing import OneLineArgumentParser
from a2ls_lightning.files import ensure_writable
from a2ls_lightning.search.objective import budget_for, identity_config, quiet
from a2ls_lightning.search.report import write_report
from a2ls_lightning.search.runner import describe_url, open_study, run_search
from a2ls_lightning.search.sampler import Ledger
from a2ls_lightning.search.settings import SearchSettings, load_search_config

__all__ = ["main"]


def _run_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="a2ls search", description="Evolutionary search of auxiliary losses "
                                     "(A2LS). Run the same command again to resume; run it on several machines with "
                                     "one --storage database URL to share the work.",
                                     epilog="The report: a2ls search report --help")
    parser.add_argument("--config", required=True, help="search config: an `a2ls fit` config plus a `search:` section")
    parser.add_argument("--workers", type=int, help="worker processes on this machine (overrides search.workers)")
    parser.add_argument("--storage", help="database URL shared by all workers (overrides search.storage)")
    parser.add_argument("--study", help="study name (overrides search.study_name)")
    parser.add_argument("--run-dir", help="folder of the embedded database, logs and report (search.run_dir)")
    return parser


def _report_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="a2ls search report", description="Top candidates, fitness per stage "
                                     "(PNG) and pattern analysis of a search, as markdown.")
    parser.add_argument("--config", help="the search config (gives storage and study when they are not given)")
    parser.add_argument("--storage", help="database URL of the search")
    parser.add_argument("--study", help="study name")
    parser.add_argument("--out", help="folder for report.md, stages.png and base.yaml (default: next to the study: "
                        "<run_dir>/report, or beside a SQLite database file)")
    parser.add_argument("--top", type=int, default=10, help="candidates in the top table")
    parser.add_argument("--olaux-top", type=int, default=5,
                        help="distinct best candidates trained together under OL-AUX by <out>/olaux.yaml")
    return parser


def _fidelity(argv: list[str]) -> None:
    parser = OneLineArgumentParser(prog="a2ls search fidelity", description="Rank correlation (Spearman, Kendall; "
                                   "bootstrap 95% CIs) between cheap scores of stored runs and their 100k-step "
                                   "result, within one setting and pooled across settings.")
    parser.add_argument("--records", default="docs/benchmarks/runs", help="folder of <setting>/<variant>/seed<N>.json")
    parser.add_argument("--target", default="aulc", help="the 100k-step result: aulc or final (mean over seeds)")
    parser.add_argument("--held-out", action="store_true", help="target over the seeds the cheap score did not use")
    parser.add_argument("--within", default="full", help="the setting of the per-task columns (full: state "
                        "cheetah-run)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20_000, 30_000, 50_000], help="cheap env steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of a cheap score")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    args = parser.parse_args(argv)
    from a2ls_lightning.search.fidelity import METRICS, default_fidelities, fidelity_markdown, load_records
    from a2ls_lightning.validation import check, check_choice, check_integer

    check_choice("--target", args.target, METRICS)
    for value in args.steps:
        check_integer("--steps", value, 1)
    for value in args.seeds:
        check_integer("--seeds", value, 1)
    check_integer("--reps", args.reps, 10)
    curves = load_records(args.records)
    settings = sorted({c.setting for c in curves})
    check(args.within in settings, f"--within={args.within!r} is not a setting of {args.records}; allowed: "
          f"{', '.join(settings)}")
    print(fidelity_markdown(curves, default_fidelities(args.steps, args.seeds), args.within, args.target,
                            args.held_out, reps=args.reps))


def _load(config: str, **overrides: object):
    base, settings = load_search_config(config)
    return base, settings.replace(**overrides)


def _report(argv: list[str]) -> None:
    args = _report_parser().parse_args(argv)
    settings = _load(args.config)[1] if args.config else SearchSettings()
    settings = settings.replace(storage=args.storage, study_name=args.study)
    if args.storage is None and args.config is None:
        raise ValueError("storage: give --storage URL (or --config of the search)")
    out = args.out or str(_report_dir(args.config, settings))
    if args.olaux_top < 1:
        raise ValueError(f"a2ls search report: --olaux-top={args.olaux_top} must be >= 1")
    print(write_report(settings.storage_url, settings.study_name, out, top=args.top, olaux_top=args.olaux_top))
    print(f"report written to {out}/report.md, {out}/stages.png, {out}/base.yaml and {out}/olaux.yaml")


def _report_dir(config: str | None, settings: SearchSettings) -> Path:
    """Next to the study: ``<run_dir>/report`` with a config, else beside an embedded SQLite database."""
    if config is None and settings.storage_url.startswith("sqlite:///"):
        return Path(settings.storage_url[len("sqlite:///"):]).parent / "report"
    if config is None:
        return Path("runs") / settings.study_name / "report"
    return Path(settings.run_dir) / "report"


def _search(argv: list[str]) -> None:
    args = _run_parser().parse_args(argv)
    quiet()
    base, settings = _load(args.config, workers=args.workers, storage=args.storage, study_name=args.study,
                           run_dir=args.run_dir)
    field = "search.stage_budgets" if settings.stage_budgets else "search.budget_env_steps"
    by_steps = {steps: budget_for(base, steps, field) for steps in sorted(set(settings.budgets))}
    budgets = [by_steps[steps] for steps in settings.budgets]
    # Before any training: the run folder (logs, report) and an embedded database's folder are writable.
    ensure_writable(settings.run_dir, "search.run_dir")
    if settings.storage_url.startswith("sqlite:///"):
        ensure_writable(Path(settings.storage_url[len("sqlite:///"):]).parent, "search.storage (its folder)")
    study = open_study(settings, identity_config(base))
    done = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    stages = "; ".join(f"{p} x {k} seed(s) x {b.env_steps} env steps ({b.max_steps} updates)"
                       for p, k, b in zip(settings.populations, settings.seed_counts, budgets))
    print(f"a2ls search: study {settings.study_name!r} in {describe_url(settings.storage_url)}; "
          f"{settings.stages} stages: {stages}{'; plus SAC on the same seeds each stage' if settings.baseline else ''}"
          f"; {settings.workers} worker(s) here; {done} finished trials already", flush=True)
    complete = Ledger(study.get_trials(deepcopy=False), settings.slots, settings.stages).complete
    codes = [0] if complete else run_search(base, settings, budgets)
    out = Path(settings.run_dir) / "report"
    write_report(settings.storage_url, settings.study_name, out)
    print(f"a2ls search: report in {out}/report.md (a2ls search report --storage '{settings.storage_url}' "
          f"--study {settings.study_name})")
    if any(codes):
        raise SystemExit(1)


def main(argv: list[str]) -> None:
    """``a2ls search ...`` (``argv`` is everything after ``search``).

    Raises:
        ValueError: a bad setting, unreachable storage or conflicting study, in one line, before any training.
    """
    argv = list(argv)
    if argv[:1] == ["report"]:
        _report(argv[1:])
    elif argv[:1] == ["fidelity"]:
        _fidelity(argv[1:])
    else:
        _search(argv)

