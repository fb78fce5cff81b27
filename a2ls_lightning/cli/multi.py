"""``a2ls fit --seeds 1,2,3 --jobs 2 [fit arguments]``: the same run for several seeds at once (see
:func:`a2ls_lightning.runs.multirun.run_seeds`), each into ``<root>/seed_<n>/`` where ``<root>`` is
``<trainer.default_root_dir>_seeds`` (``--seeds_root`` to choose another).

    a2ls fit --seeds 1,2,3 --jobs 2 --config configs/benchmark_cheetah_state_cpu.yaml
    a2ls plot runs/benchmark_seeds        # the seeds' mean ± std

The root is beside the single run's folder, never inside it: seeds written into ``runs/quickstart/`` would be one
group with the quickstart run itself for ``a2ls plot runs/quickstart``, mixing budgets. A ``--seeds_root`` that
holds a single run's files is refused. The printed ``a2ls plot`` command names exactly the seeds of the call.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

#: Where a run goes when neither the arguments nor a config file say (the quickstart's folder).
DEFAULT_ROOT = "runs/quickstart"
_OWN = ("--seeds", "--jobs", "--seeds_root", "--threads")


#: Shown under ``a2ls fit --help``: these options are the runner's, not LightningCLI's.
SEEDS_HELP = (
    "Many seeds at once: --seeds SEEDS (e.g. 1,2,3 or 1-5) trains the same run once per seed, one process each, "
    "into <seeds_root>/seed_<n>/, resumably, and prints a table and the a2ls plot command of those seeds; "
    "--jobs N processes at a time (default: 2); --seeds_root DIR the seeds' folder (default: "
    "<trainer.default_root_dir>_seeds, beside a single run's folder, never inside it); --threads N torch CPU threads "
    "per process (default: 1 with --seeds). Example: a2ls fit --seeds 1,2,3 --jobs 2 --trainer.max_steps 2000")


def split_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``({"--seeds": "1,2", ...}, the remaining fit arguments)``."""
    own: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, sep, value = arg.partition("=")
        if name in _OWN:
            if not sep:
                if i + 1 >= len(argv):
                    raise ValueError(f"a2ls fit {name}: expected a value")
                value = argv[i + 1]
                i += 1
            own[name] = value
        else:
            rest.append(arg)
        i += 1
    return own, rest


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` or ``"1-5"`` (inclusive) → seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise ValueError(f"--seeds={text!r}: expected integers like 1,2,3 or 1-5") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds={text!r}: give distinct seeds >= 0")
    return seeds


def root_dir(fit_args: list[str]) -> str:
    """The run's ``trainer.default_root_dir``: the last one given on the command line, else in the last config
    file that sets it, else the quickstart's."""
    import yaml

    from a2ls_lightning.cli.parsing import config_paths

    for i in range(len(fit_args) - 1, -1, -1):
        name, sep, value = fit_args[i].partition("=")
        if name == "--trainer.default_root_dir":
            return value if sep else fit_args[i + 1]
    for path in reversed(config_paths(fit_args)):
        trainer = (yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}
        if trainer.get("default_root_dir"):
            return str(trainer["default_root_dir"])
    return DEFAULT_ROOT


def seeds_root(fit_args: list[str]) -> str:
    """The default root of ``--seeds``: ``<trainer.default_root_dir>_seeds`` (``runs/quickstart_seeds``)."""
    return root_dir(fit_args).rstrip("/") + "_seeds"


def check_seeds_root(root: str) -> None:
    """Refuse a root that holds a single run's files (event files or checkpoints outside ``seed_<n>/``)."""
    path = Path(root)
    if not path.is_dir():
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith("seed_") or child.name.startswith("."):
            continue
        if child.name == "lightning_logs" or child.name.startswith("events.out.tfevents") or child.suffix == ".ckpt":
            raise ValueError(f"--seeds_root {root}: holds a single run's files ({child}); the seeds go into a folder "
                             "of their own (give another --seeds_root)")


def plot_command(root: str, seeds: list[int]) -> str:
    """``a2ls plot`` of exactly these seeds: the root where its ``seed_<n>`` folders are these, else a group."""
    present = {p.name for p in Path(root).glob("seed_*") if p.is_dir()}
    if present == {f"seed_{s}" for s in seeds}:
        return f"a2ls plot {root}"
    label = Path(root).name or "seeds"
    return f"a2ls plot --group '{label}=" + "|".join(f"{root}/seed_{s}" for s in seeds) + "'"


def main(argv: list[str]) -> None:
    """``argv``: the arguments after ``fit``."""
    from a2ls_lightning.runs.multirun import results_table, run_seeds
    from a2ls_lightning.runs.supervise import forwarding_signals

    own, fit_args = split_arguments(argv)
    seeds = parse_seeds(own["--seeds"])
    try:
        jobs = int(own.get("--jobs", "2"))
        threads = int(own.get("--threads", "1"))
    except ValueError:
        raise ValueError(f"a2ls fit --seeds: --jobs and --threads take integers (got {own})") from None
    if jobs < 1 or threads < 1:
        raise ValueError(f"a2ls fit --seeds: --jobs={jobs} and --threads={threads} must be >= 1")
    root = own.get("--seeds_root") or seeds_root(fit_args)
    check_seeds_root(root)
    print(f"a2ls: {len(seeds)} seeds into {root}/seed_<n>/, {jobs} at a time, {threads} thread(s) each", flush=True)
    with forwarding_signals(reraise=False) as stop:  # the table first, then stop by the signal (below)
        results = run_seeds(fit_args, seeds, root, jobs=jobs, threads=threads)
    print(results_table(results))
    print(f"\nplot them: {plot_command(root, seeds)}")
    if stop.signum:  # end as the signal would have ended us, so a shell loop around this command stops too
        sys.stdout.flush()
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        raise SystemExit(128 + stop.signum)  # not reached where the signal ends the process at once
    codes = [r.exit_code for r in results if r.exit_code]
    if codes:
        raise SystemExit(max(codes))  # e.g. 143: a seed was preempted; the same command resumes it
    sys.stdout.flush()
