"""A small real auxiliary-loss search on state cheetah-run, sized for a 2-core machine (about an hour), then a
comparison of the best loss found against A2-winner-v and plain SAC on the same budget.

    python scripts/search_demo.py                       # the full demo: writes docs/search_demo.md and its PNGs
    python scripts/search_demo.py --scale tiny --out /tmp/demo   # a 2-minute check that everything runs

Steps (each resumes when the script is run again: the search from its study, the comparison from JSON files):

1. ``a2ls search`` with the config below (written to ``<run_dir>/search.yaml``): ``--population`` candidates
   for ``--stages`` stages, each trained for ``--budget`` env steps on one seed, 2 workers;
2. the search report (top candidates, fitness per stage, pattern table);
3. the best candidate, A2-winner-v and plain SAC, each trained on ``--compare-seeds`` *fresh* seeds (101, 102, ...;
   the search's own seed would favour the winner) with the same budget; mean ± std of AULC and final return;
4. the report's ``olaux.yaml`` (the top ``--olaux-top`` distinct candidates together, weighted by OL-AUX) on the
   first ``--olaux-seeds`` of those seeds, against the best candidate alone with a fixed weight of 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The comparison variant of step 4: the report's olaux.yaml.
OLAUX_VARIANT = "top candidates + OL-AUX"

#: The base training run of the demo: the CPU benchmark's networks (256 wide) with a smaller batch and warm-up.
FULL_BASE = {
    "seed_everything": 1,
    "trainer": {"log_every_n_steps": 200},
    "model": {"encoder": "mlp", "hidden_dim": 256, "actor_lr": 1.0e-3, "critic_lr": 1.0e-3},
    "data": {"task": "cheetah-run", "from_pixels": False, "action_repeat": 4, "batch_size": 128, "capacity": 100000,
             "warmup_steps": 500, "eval_interval": 5000, "eval_episodes": 3},
}
#: Tiny networks for ``--scale tiny`` (proves the pipeline in minutes; the numbers mean nothing).
TINY_BASE = {
    "seed_everything": 1,
    "trainer": {"log_every_n_steps": 50},
    "model": {"encoder": "mlp", "hidden_dim": 32, "feature_dim": 16, "encoder_hidden_dim": 16},
    "data": {"task": "cheetah-run", "from_pixels": False, "batch_size": 32, "capacity": 5000, "warmup_steps": 50,
             "eval_interval": 600, "eval_episodes": 1},
}
SCALES = {
    "full": {"base": FULL_BASE, "population": 8, "stages": 3, "budget": 50000, "compare_seeds": 3, "olaux_seeds": 3},
    "tiny": {"base": TINY_BASE, "population": 2, "stages": 2, "budget": 1200, "compare_seeds": 1, "olaux_seeds": 1},
}


def _search_config(base: dict, args: argparse.Namespace, run_dir: Path) -> dict:
    search = {
        "population": args.population, "stages": args.stages, "survivor_fraction": 0.25, "max_horizon": 10,
        "seed_presets": ["forward_dynamics"], "crossover_probability": 0.1, "budget_env_steps": args.budget,
        "seeds_per_candidate": 1, "fitness": "aulc", "study_name": f"search-demo-{args.scale}",
        "run_dir": str(run_dir), "workers": args.workers, "heartbeat_interval": 10, "grace_period": 60,
    }
    return {**base, "search": search}


def _train(job: tuple[dict, str, dict, int, int, str]) -> dict:
    """One comparison run (in a worker process): the curve of ``variant`` on ``seed`` (and, for the OL-AUX
    variant, its weights at the end, read from the run's TensorBoard log)."""
    base, variant, aux, seed, budget_steps, root = job
    import torch

    from a2ls_lightning.plotting import read_scalars
    from a2ls_lightning.search.objective import budget_for, quiet, train_run

    torch.set_num_threads(1)
    quiet()
    start = time.time()
    keep_logs = variant == OLAUX_VARIANT
    curve = train_run(base, aux, seed, budget_for(base, budget_steps), root, keep_logs=keep_logs)
    result = {"variant": variant, "seed": seed, "aux_losses": aux, "curve": curve, "seconds": time.time() - start}
    if keep_logs:
        scalars = read_scalars(root)
        result["weights"] = {tag.split("/", 1)[1]: series[-1][1] for tag, series in scalars.items()
                             if tag.startswith("aux_weight/")}
    return result


def _compare(base: dict, best: str, olaux: dict, args: argparse.Namespace, run_dir: Path) -> list[dict]:
    """Train (or read back) every comparison run; ``olaux`` is the report's ``olaux.yaml``."""
    # The OL-AUX run takes olaux.yaml's losses and callbacks; the budget (max_steps) and folders are the
    # same as every other run's (set by train_run), so it is `a2ls fit --config olaux.yaml` on another seed.
    olaux_base = {**base, "trainer": {**(base.get("trainer") or {}), "callbacks": olaux["trainer"]["callbacks"]}}
    variants = {"best found": (base, {"best": best}, args.compare_seeds),
                "a2_winner_v": (base, {"a2v": "a2_winner_v"}, args.compare_seeds),
                "sac": (base, {}, args.compare_seeds),
                OLAUX_VARIANT: (olaux_base, dict(olaux["model"]["aux_losses"]), args.olaux_seeds)}
    jobs, results = [], []
    for name, (variant_base, aux, seeds) in variants.items():
        for seed in range(101, 101 + seeds):
            path = run_dir / "compare" / f"{name.replace(' ', '_')}-seed{seed}.json"
            stored = json.loads(path.read_text()) if path.exists() else None
            if stored is not None and stored["aux_losses"] == aux:
                results.append(stored)
            else:
                root = run_dir / "compare" / "logs" / path.stem  # one folder per run: its log is read back
                jobs.append((path, (variant_base, name, aux, seed, args.budget, str(root))))
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for (path, _), result in zip(jobs, pool.map(_train, [job for _, job in jobs])):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
            print(f"compare: {result['variant']} seed {result['seed']}: final {result['curve'][-1][1]:.1f} "
                  f"in {result['seconds'] / 60:.1f} min", flush=True)
            results.append(result)
    return results


def _row(variant: str, runs: list[dict]) -> str:
    from a2ls_lightning.search.objective import curve_fitness

    aulc = np.array([curve_fitness(r["curve"], "aulc") for r in runs])
    final = np.array([curve_fitness(r["curve"], "final") for r in runs])
    losses = list(runs[0]["aux_losses"].values())
    loss = f"`{losses[0]}`" if len(losses) == 1 else (f"{len(losses)} losses" if losses else "none (plain SAC)")
    minutes = np.mean([r["seconds"] for r in runs]) / 60
    seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
    return (f"| {variant} | {loss} | {seeds} | {aulc.mean():.1f} ± {aulc.std():.1f} | "
            f"{final.mean():.1f} ± {final.std():.1f} | {minutes:.1f} |")


def _olaux_markdown(results: list[dict], olaux: dict) -> str:
    """Step 4: OL-AUX over the top candidates vs the best candidate alone, on the same seeds."""
    runs = [r for r in results if r["variant"] == OLAUX_VARIANT]
    if not runs:
        return ""
    seeds = {r["seed"] for r in runs}
    best = [r for r in results if r["variant"] == "best found" and r["seed"] in seeds]
    losses = "\n".join(f"- `{name}`: `{text}`" for name, text in olaux["model"]["aux_losses"].items())
    callback = olaux["trainer"]["callbacks"][-1]
    rows = ["| variant | loss | seeds | AULC (mean ± std) | final eval return (mean ± std) | minutes/run |",
            "|---|---|---|---|---|---|", _row(OLAUX_VARIANT, runs)]
    if best:
        rows.append(_row("best found, fixed weight 1", best))
    weights = _final_weights(runs)
    return ("\n\n## The best losses together, weighted by OL-AUX\n\n"
            "The report's `olaux.yaml` (callback "
            f"`{callback['class_path'] if isinstance(callback, dict) else callback}`"
            f" with its defaults) trains these {len(olaux['model']['aux_losses'])} distinct candidates at once:\n\n"
            f"{losses}\n\n" + "\n".join(rows) + "\n\n" + weights)


def _final_weights(runs: list[dict]) -> str:
    """OL-AUX's weights at the end of each run (mean over seeds, range)."""
    names = sorted({k for r in runs for k in r.get("weights", {})})
    if not names:
        return ""
    lines = ["OL-AUX's weights at the end of training (mean over seeds; min-max):", ""]
    for name in names:
        values = np.array([r["weights"][name] for r in runs if name in r.get("weights", {})])
        lines.append(f"- `{name}`: {values.mean():.2f} ({values.min():.2f}-{values.max():.2f})")
    return "\n".join(lines)


def _comparison_markdown(results: list[dict], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["| variant | loss | seeds | AULC (mean ± std) | final eval return (mean ± std) | minutes/run |",
            "|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in ("best found", "a2_winner_v", "sac", OLAUX_VARIANT):
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        rows.append(_row(variant, runs))
        n = min(len(r["curve"]) for r in runs)
        steps = np.array([p[0] for p in runs[0]["curve"][:n]])
        values = np.array([[p[1] for p in r["curve"][:n]] for r in runs])
        ax.plot(steps, values.mean(0), marker="o", label=f"{variant} (n={len(runs)})")
        ax.fill_between(steps, values.mean(0) - values.std(0), values.mean(0) + values.std(0), alpha=0.2)
    ax.set_xlabel("env steps (action repeat included)")
    ax.set_ylabel("eval return")
    ax.set_title("best found, OL-AUX over the top candidates, A2-winner-v, SAC (fresh seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--population", type=int, help="candidates per stage (full: 8)")
    parser.add_argument("--stages", type=int, help="stages (full: 3)")
    parser.add_argument("--budget", type=int, help="env steps per candidate and comparison run (full: 50000)")
    parser.add_argument("--compare-seeds", type=int, help="fresh seeds per comparison variant (full: 3)")
    parser.add_argument("--olaux-seeds", type=int, help="seeds of the OL-AUX comparison (full: 3)")
    parser.add_argument("--olaux-top", type=int, default=5, help="candidates olaux.yaml trains together")
    parser.add_argument("--workers", type=int, default=2, help="processes (one CPU thread each)")
    parser.add_argument("--run-dir", default=None,
                        help="study, logs, comparison runs (default runs/search_demo_<scale>)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where search_demo.md and its PNGs go")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    for key in ("population", "stages", "budget", "compare_seeds", "olaux_seeds"):
        if getattr(args, key) is None:
            setattr(args, key, scale[key])
    run_dir = Path(args.run_dir or ROOT / "runs" / f"search_demo_{args.scale}").resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from a2ls_lightning.cli.search import main as search_main
    from a2ls_lightning.search.report import load_results, write_report

    config = _search_config(scale["base"], args, run_dir)
    config_path = run_dir / "search.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.time()
    search_main(["--config", str(config_path)])
    search_minutes = (time.time() - start) / 60
    storage, study = f"sqlite:///{run_dir / 'search.db'}", config["search"]["study_name"]
    report_dir = run_dir / "report"
    report = write_report(storage, study, report_dir, olaux_top=args.olaux_top)
    olaux = yaml.safe_load((report_dir / "olaux.yaml").read_text())
    (out / "search_demo_stages.png").write_bytes((report_dir / "stages.png").read_bytes())
    best = max(load_results(storage, study).scored, key=lambda s: s.fitness)
    start = time.time()
    results = _compare(scale["base"], str(best.spec), olaux, args, run_dir)
    compare_minutes = (time.time() - start) / 60
    table = _comparison_markdown(results, out / "search_demo_compare.png")
    report = report.replace("(stages.png)", "(search_demo_stages.png)")
    report = report.split("## Training the winner")[0].rstrip()
    olaux_text = _olaux_markdown(results, olaux).replace(str(ROOT) + os.sep, "")
    report = report.replace("# Auxiliary-loss search", "## Search", 1).replace("\n## ", "\n### ")
    shown = config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path
    text = (f"# Auxiliary-loss search demo (state cheetah-run, {args.scale} scale)\n\n"
            f"Made by `python scripts/search_demo.py --scale {args.scale}` on this project's 2-core CPU machine: "
            f"{args.population} candidates x {args.stages} stages, {args.budget} env steps per candidate, "
            f"{args.workers} workers; search {search_minutes:.0f} min, comparison {compare_minutes:.0f} min "
            f"(0 when resumed from stored runs). Search config: `{shown}`.\n\n"
            f"{report}\n\n## Best found vs A2-winner-v vs SAC\n\n"
            f"Same base config and budget; fresh seeds {', '.join(str(101 + k) for k in range(args.compare_seeds))} "
            f"(not the search's seed).\n\n{table}\n\n![comparison](search_demo_compare.png)\n{olaux_text}\n")
    (out / "search_demo.md").write_text(text)
    print(text)
    print(f"written: {out / 'search_demo.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
