"""Learning benchmark: state cheetah-run, 100k env steps (action repeat 4), CPU-sized networks, several seeds.

Every (variant, seed) is a real ``a2ls fit`` run of ``configs/benchmark_cheetah_state_cpu.yaml`` in its own process,
trained by the package's per-seed runner (``a2ls_lightning.runs.run_seed``, as ``a2ls fit --seeds``) in a persistent
folder under ``runs/benchmarks/``, so an interrupted run resumes from its ``last.ckpt``; its evaluation curve is kept
as JSON under ``docs/benchmarks/runs/`` so an interrupted benchmark resumes where it stopped and suites share runs
(plain SAC is the baseline of all three). The summary table (mean ± std of the last
``eval/return`` and of the area under the evaluation curve) goes to ``docs/benchmark_<suite>.md`` and the curves to
``docs/benchmark_<suite>.png``, both drawn and computed by :mod:`a2ls_lightning.plotting` (as ``a2ls plot`` does).

    python scripts/benchmark_learning.py --suite core --seeds 1 2 3 --jobs 2
    python scripts/benchmark_learning.py --suite aux --seeds 1 2 3 --jobs 2
    python scripts/benchmark_learning.py --suite olaux --seeds 1 2 3 --jobs 2
    python scripts/benchmark_learning.py --suite rlaux --seeds 1 2 3 --jobs 2      # RL-AUX vs fixed vs OL-AUX
    python scripts/benchmark_learning.py --suite harmful --seeds 1 2 3 4 5 --jobs 2
    python scripts/benchmark_learning.py --suite harmful --seeds 1 2 3 4 5 --variants harmful_rlaux
    python scripts/benchmark_learning.py --suite harmful --seeds 1 2 3 4 5 --variants harmful_rlaux_credit \
        harmful_lookahead --jobs 1                                  # per-example credit (RL-AUX, look-ahead)
    python scripts/benchmark_learning.py --suite rlaux --seeds 1 2 3 --variants five_rlaux_credit five_lookahead
    python scripts/benchmark_learning.py --suite core --report-only     # tables and plots from stored runs
    python scripts/benchmark_learning.py --suite core --report-only --compare sac a2_winner_v forward_dynamics
                                                                        # + docs/compare_core.png/.md
    python scripts/benchmark_learning.py --suite planet --jobs 1 --shard 0/2   # the six PlaNet tasks, half of them

The ``planet`` suite runs the same protocol (100k env steps, 1000 warm-up agent steps, CPU-sized networks,
evaluation every 10k env steps over 10 episodes) on the six PlaNet-benchmark tasks at the papers' action
repeats; its records live under ``docs/benchmarks/runs/planet/<task>/`` except cheetah-run's, which is the
protocol of the other suites and shares their records. Runs already recorded are skipped, so a suite can be
stopped, restarted and split over machines with ``--shard i/n``.

The ``pixels`` suite is A2LS's headline at CPU scale: SAC from pixels (``pixel_sac``), + CURL (``pixel_curl``) and
+ A2-winner (``pixel_a2_winner``) with ``configs/benchmark_pixels_cpu.yaml`` (64-pixel renders cropped to 56,
16 filters, 256-wide networks, batch 32; the papers' action repeats and learning rates, 100k env steps) on
cheetah-run and cartpole-swingup (``--tasks`` adds ball_in_cup-catch). Its records live under
``docs/benchmarks/runs/pixels/<task>/<variant>/``; each run trains in a persistent folder
``runs/benchmarks/pixels/<task>/<variant>/seed<n>/`` (git-ignored) with a checkpoint every 2000 updates, and a
run cut short (machine stopped, process killed) resumes from its ``last.ckpt`` when the suite is started again:

    python scripts/benchmark_learning.py --suite pixels --seeds 1 2 3 --jobs 1
    python scripts/benchmark_learning.py --suite pixels --tasks cheetah-run cartpole-swingup ball_in_cup-catch
    python scripts/benchmark_learning.py --suite pixels --report-only     # docs/benchmark_pixels.md and .png

The ``frontier`` suite trains ``configs/frontier_state.yaml`` (SimBa's SAC choices at CPU scale) on cheetah-run and
walker-walk: SAC-frontier, + five losses fixed, + five losses OL-AUX; tune with other seeds than the table's:

    python scripts/benchmark_learning.py --suite frontier --seeds 1 2 3 --jobs 2
    python scripts/benchmark_learning.py --suite frontier --seeds 4 --tasks cheetah-run --variants frontier_sac
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from a2ls_lightning.plotting import (
    Curve,
    eval_curve,
    event_files,
    markdown_table,
    mean_std,
    plot_groups,
    read_scalars,
    summarize,
    welch_p_value,
)
from a2ls_lightning.runs.supervise import forwarding_signals

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "benchmark_cheetah_state_cpu.yaml"
RUNS = ROOT / "docs" / "benchmarks" / "runs"

FIVE = ("{fwd: forward_dynamics, inv: inverse_dynamics, rew: reward_prediction, rec: state_reconstruction, "
        "a2v: a2_winner_v}")
VARIANTS: dict[str, list[str]] = {
    "sac": [],
    "a2_winner_v": ["--model.aux_losses={a2v: a2_winner_v}"],
    "forward_dynamics": ["--model.aux_losses={fwd: forward_dynamics}"],
    "five_fixed": [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.FixedWeights"],
    "five_gradient_balancing": [f"--model.aux_losses={FIVE}",
                                "--trainer.callbacks+=a2ls_lightning.callbacks.GradientBalancing"],
    # OL-AUX's default: Algorithm 1's scale-free rule at lr 1e-4 (named explicitly so the record says it).
    "five_olaux": [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                   "--trainer.callbacks.lr=1e-4"],
    # The scale-free rule at the 50x larger step size that was the default before (the weights grow to ~1000).
    "five_olaux_lr5e-3": [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                          "--trainer.callbacks.lr=5e-3"],
    # The default, trained on log(L_critic + 0.02) as the authors' re-implementation does (same weight update).
    "five_olaux_log_critic": [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                              "--trainer.callbacks.lr=1e-4", "--trainer.callbacks.train_log_main=true"],
    # OL-AUX's rule of version 0.1: dot products with the raw critic gradient (not scale-free), its lr 5e-3.
    "five_olaux_v01": [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                       "--trainer.callbacks.log_main=false", "--trainer.callbacks.lr=5e-3"],
}
#: The harmful-loss suite: the five useful losses, two losses built to hurt (modules/harmful.py) and the two losses
#: a single-seed search ranked first and second that lose to SAC on fresh seeds (docs/search_demo.md: the top one's
#: AULC 84.2 ± 14.0 vs SAC's 88.6 ± 11.8 on seeds 101-103).
NINE = ("{fwd: forward_dynamics, inv: inverse_dynamics, rew: reward_prediction, rec: state_reconstruction, "
        "a2v: a2_winner_v, adv: adversarial, noise: noise_target, top1: 'h=1 s0,a0 -> s1,a0 mse', "
        "top2: 'h=7 s4,a3,a5,r4 -> s1,s3,s6,r5 inner +neg'}")
HARMFUL_RULES = {"fixed": "FixedWeights", "gradient_balancing": "GradientBalancing", "cosine_gating": "CosineGating",
                 "olaux": "OLAux"}
for _rule, _callback in HARMFUL_RULES.items():
    VARIANTS[f"harmful_{_rule}"] = [f"--model.aux_losses={NINE}",
                                    f"--trainer.callbacks+=a2ls_lightning.callbacks.{_callback}"]
VARIANTS["harmful_olaux"].append("--trainer.callbacks.lr=1e-4")  # OL-AUX's default, named as in five_olaux
# RL-AUX's column (per-example weights): --suite harmful --variants harmful_rlaux; reported once it has records.
VARIANTS["harmful_rlaux"] = [f"--model.aux_losses={NINE}", "--trainer.callbacks+=a2ls_lightning.callbacks.RLAux"]
# RL-AUX on the five useful losses (its defaults: the authors' weight grid, a reward every 4 updates).
# harmful_rlaux and five_rlaux were recorded with version 0.3's RLAux (credit="batch", a uniform start); the pair
# below names the per-example credit of version 0.4 (RLAux's default since) and the look-ahead rule explicitly.
VARIANTS["five_rlaux"] = [f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.RLAux"]
for _losses, _suite in ((NINE, "harmful"), (FIVE, "five")):
    VARIANTS[f"{_suite}_rlaux_credit"] = [f"--model.aux_losses={_losses}",
                                          "--trainer.callbacks+=a2ls_lightning.callbacks.RLAux",
                                          "--trainer.callbacks.credit=example", "--trainer.callbacks.initial_weight=1.0",
                                          "--trainer.callbacks.lr=1e-3"]
    VARIANTS[f"{_suite}_lookahead"] = [f"--model.aux_losses={_losses}",
                                       "--trainer.callbacks+=a2ls_lightning.callbacks.LookaheadWeights"]
# The fused Adam step (faster; equal to the default foreach step up to rounding) against the foreach step under the
# same code, both named explicitly: "sac"'s records were made by earlier versions of the package, so only this pair
# isolates the Adam step (would the fused step make a safe default?).
VARIANTS["sac_fused"] = ["--model.fused_adam=true"]
VARIANTS["sac_foreach"] = ["--model.fused_adam=false"]
SUITES = {
    "core": ["sac"],
    "fused_adam": ["sac_foreach", "sac_fused", "sac"],
    "aux": ["sac", "a2_winner_v", "forward_dynamics"],
    "olaux": ["sac", "five_fixed", "five_gradient_balancing", "five_olaux", "five_olaux_lr5e-3",
              "five_olaux_log_critic", "five_olaux_v01"],
    # The reference (five useful losses, fixed: shared with the olaux suite) first, then the rules on nine losses.
    "harmful": ["five_fixed", *(f"harmful_{rule}" for rule in HARMFUL_RULES)],
    # RL-AUX's per-example weights against one weight per loss (fixed; OL-AUX), on the five useful losses.
    "rlaux": ["sac", "five_fixed", "five_olaux", "five_rlaux"],
}
#: The PlaNet benchmark's tasks and the action repeats of the PlaNet/CURL/A2LS papers.
PLANET_TASKS = {"cartpole-swingup": 8, "reacher-easy": 4, "cheetah-run": 4, "finger-spin": 2,
                "ball_in_cup-catch": 4, "walker-walk": 2}
PLANET_VARIANTS = ["sac", "a2_winner_v", "forward_dynamics", "five_fixed"]
#: The pixels suite: its own config, the papers' action repeats and (CURL, A2LS) learning rates per task.
PIXEL_CONFIG = DEFAULT_PIXEL_CONFIG = ROOT / "configs" / "benchmark_pixels_cpu.yaml"  # --pixel-config replaces it
PIXEL_TASKS = {"cheetah-run": 4, "cartpole-swingup": 8, "ball_in_cup-catch": 4}
PIXEL_DEFAULT_TASKS = ["cheetah-run", "cartpole-swingup"]
PIXEL_LR = {"cheetah-run": None, "cartpole-swingup": 1e-3, "ball_in_cup-catch": 1e-3}  # None: the config's 2e-4
PIXEL_VARIANTS = ["pixel_sac", "pixel_curl", "pixel_a2_winner"]
VARIANTS.update({"pixel_sac": [], "pixel_curl": ["--model.aux_losses={curl: curl}"],
                 "pixel_a2_winner": ["--model.aux_losses={a2w: a2_winner}"]})
#: The frontier suite (configs/frontier_state.yaml: SimBa's SAC choices at CPU scale): per task its action repeat and
#: replay ratio, chosen so that both tasks spend about the same updates (cheetah-run 4 and 2: 48000; walker-walk, whose
#: PlaNet repeat is 2, at ratio 1: 49000); tuning runs use seeds other than 1-3 (``--seeds 4``).
FRONTIER_CONFIG = ROOT / "configs" / "frontier_state.yaml"
FRONTIER_TASKS = {"cheetah-run": (4, 2), "walker-walk": (2, 1)}
FRONTIER_VARIANTS = ["frontier_sac", "frontier_five_fixed", "frontier_five_olaux"]
VARIANTS.update({"frontier_sac": [],
                 "frontier_five_fixed": [f"--model.aux_losses={FIVE}",
                                         "--trainer.callbacks+=a2ls_lightning.callbacks.FixedWeights"],
                 "frontier_five_olaux": [f"--model.aux_losses={FIVE}",
                                         "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                                         "--trainer.callbacks.lr=1e-4"]})
#: SimBa's repository (results/*.csv, 10 seeds, 100k env steps): SAC + SimBa, and SAC as SimBa ran it; mean ± std.
SIMBA_PUBLISHED = {"cheetah-run": ("559 ± 43", "329 ± 43"), "walker-walk": ("951 ± 32", "783 ± 120")}
#: Published at 100k env steps and full size (100-pixel renders cropped to 84, 32 filters, 1024 wide, batch 512):
#: CURL (Laskin et al. 2020, Table 1) and A2LS's A2-winner (cheetah-run). Mean ± std over the papers' seeds.
PUBLISHED = {("cheetah-run", "pixel_curl"): "299 ± 48", ("cartpole-swingup", "pixel_curl"): "582 ± 146",
             ("ball_in_cup-catch", "pixel_curl"): "769 ± 43", ("cheetah-run", "pixel_a2_winner"): "449 ± 34"}
#: docs/benchmark_pixels.md: the report rewrites what is above this line and keeps what follows it.
KEEP_MARKER = "<!-- written by hand below: kept when the report is regenerated -->"
#: The pixel runs' persistent training folders (``/runs/`` is git-ignored): an interrupted run resumes there.
PIXEL_RUN_DIRS = ROOT / "runs" / "benchmarks" / "pixels"
#: The state runs' persistent training folders.
RUN_DIRS = ROOT / "runs" / "benchmarks" / "state"
#: glibc keeps freed large tensors instead of unmapping them, so each update does not page-fault its images in
#: again (measured by scripts/benchmark_pixel_speed.py: most for A2-winner, whose target encoder reads 4 states
#: per sample; see docs/benchmark_pixels.md). Speed only: no numerical change.
PIXEL_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
ENV_STEPS = 100_000
WARMUP = 1000
KEEP_TAGS = ("eval/return", "eval/env_steps", "train/episode_return", "train/env_steps")
X_LABEL = "env steps (action repeat 4 included)"
EVAL_LABEL = "eval/return (10 episodes, deterministic)"


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The kept scalar series of a run's TensorBoard events (see :func:`a2ls_lightning.plotting.read_scalars`)."""
    if not event_files(log_dir):
        raise RuntimeError(f"no TensorBoard events under {log_dir}")
    scalars = read_scalars(log_dir)
    prefixes = ("aux_weight/", "olaux/", "rlaux/", "reweight/")
    return {t: v for t, v in scalars.items() if t in KEEP_TAGS or t.startswith(prefixes)}


def record_path(variant: str, seed: int, tag: str, task: str = "cheetah-run") -> Path:
    """Where the record of one run lives (state cheetah-run's are shared by every suite; the pixel variants' go
    under ``pixels/<task>/``, quick ``--max-steps`` checks of them under the git-ignored ``steps<N>/pixels/``)."""
    if variant in PIXEL_VARIANTS:
        return (RUNS if tag == "full" else RUNS / tag) / "pixels" / task / variant / f"seed{seed}.json"
    if variant in FRONTIER_VARIANTS:
        return (RUNS if tag == "full" else RUNS / tag) / "frontier" / task / variant / f"seed{seed}.json"
    folder = RUNS / tag if task == "cheetah-run" else RUNS / "planet" / task
    return folder / variant / f"seed{seed}.json"


def task_arguments(task: str, pixels: bool = False, frontier: bool = False) -> list[str]:
    """Command-line settings of one task: its action repeat and the updates that spend 100k env steps (and, for
    pixels, the papers' learning rate: 2e-4 on cheetah-run, the config's, 1e-3 elsewhere; for the frontier suite,
    the task's replay ratio)."""
    if frontier:
        repeat, ratio = FRONTIER_TASKS[task]
        return [f"--data.task={task}", f"--data.action_repeat={repeat}", f"--data.replay_ratio={ratio}",
                f"--trainer.max_steps={(ENV_STEPS // repeat - WARMUP) * ratio}"]
    if task == "cheetah-run":
        return []  # the config's own protocol; keeps the command (and the record) of the other suites
    repeat = PIXEL_TASKS[task] if pixels else PLANET_TASKS[task]
    args = [f"--data.task={task}", f"--data.action_repeat={repeat}",
            f"--trainer.max_steps={ENV_STEPS // repeat - WARMUP}"]
    if pixels and PIXEL_LR[task] is not None:
        args += [f"--model.actor_lr={PIXEL_LR[task]}", f"--model.critic_lr={PIXEL_LR[task]}"]
    return args


def run_folder(variant: str, seed: int, tag: str, task: str) -> Path:
    """The persistent training folder of one run (its checkpoints and TensorBoard events, every attempt's):
    ``runs/benchmarks/[pixels/]<tag>/<task>/<variant>/seed<n>`` (``/runs/`` is git-ignored)."""
    base = PIXEL_RUN_DIRS if variant in PIXEL_VARIANTS else RUN_DIRS
    return (base if tag == "full" else base / tag) / task / variant / f"seed{seed}"


def _event_seconds(run_dir: Path) -> float:
    """Training time of earlier attempts, estimated from their TensorBoard event wall times (first to last)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total = 0.0
    for path in event_files(run_dir):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        times = [e.wall_time for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
        if times:
            total += max(times) - min(times)
    return total


def run_one(variant: str, seed: int, max_steps: int | None, tag: str, task: str = "cheetah-run") -> dict:
    """Train one (task, variant, seed) with the real CLI, in its persistent folder (an interrupted attempt resumes
    from its ``last.ckpt``), through the package's per-seed runner (:func:`a2ls_lightning.runs.run_seed`, what
    ``a2ls fit --seeds`` uses); store its curves as a record and return it."""
    from a2ls_lightning.runs import run_seed

    out = record_path(variant, seed, tag, task)
    if out.exists():
        return json.loads(out.read_text())
    pixels, frontier = variant in PIXEL_VARIANTS, variant in FRONTIER_VARIANTS
    config = PIXEL_CONFIG if pixels else FRONTIER_CONFIG if frontier else CONFIG
    fit_args = [f"--config={config.relative_to(ROOT)}", *task_arguments(task, pixels, frontier), *VARIANTS[variant]]
    if max_steps:
        fit_args.append(f"--trainer.max_steps={max_steps}")
    run_dir = run_folder(variant, seed, tag, task)
    earlier = _event_seconds(run_dir) if run_dir.exists() else 0.0
    # The package of this checkout, whatever is installed; one thread per run (see the README's threads note).
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), **(PIXEL_ENV if pixels else {})}
    result = run_seed(fit_args, seed, run_dir, threads=1, echo=False, env=env, cwd=ROOT)
    if result.status not in ("done", "recorded"):
        raise RuntimeError(f"{task} {variant} seed {seed} {result.status} (exit {result.exit_code}; log "
                           f"{run_dir / 'fit.log'}): {result.message}")
    # Stored relative to the repository: no path of the machine it ran on.
    record = {"task": task, "variant": variant, "seed": seed, "seconds": (result.minutes or 0.0) * 60 + earlier,
              "adam_step": _adam_step(config, fit_args),
              "command": " ".join(["python -m a2ls_lightning.cli fit", fit_args[0], f"--seed_everything={seed}",
                                   *fit_args[1:]]),
              "scalars": _scalars(run_dir)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(record))
    os.replace(tmp_out, out)
    for folder in run_dir.glob("**/checkpoints"):  # the record holds what is kept; replay side files are large
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  done {task} {variant} seed {seed}: final eval/return {record['scalars']['eval/return'][-1][1]:.1f} "
          f"in {record['seconds'] / 60:.1f} min", flush=True)
    return record


def _adam_step(config: Path, fit_args: Sequence[str]) -> str:
    """``fused`` or ``foreach``: the Adam step a run took (``model.fused_adam``: the last of the command's settings,
    else the config's, else the default, foreach)."""
    import yaml

    from a2ls_lightning.modules.settings import flatten_model_settings

    value = flatten_model_settings(yaml.safe_load(config.read_text()).get("model") or {}).get("fused_adam")
    for arg in fit_args:
        if arg.startswith(("--model.fused_adam=", "--model.optim.fused_adam=")):
            value = yaml.safe_load(arg.split("=", 1)[1])
    return "fused" if value else "foreach"


def _curve(result: dict) -> Curve:
    """One point per evaluation: ``(env steps [E], eval return [E])``.

    The two tags are always written together; runs stored before the module logged evaluations with
    ``logger=False`` also hold copies of the last evaluation at later log steps, which are dropped here.
    """
    return eval_curve(result["scalars"], "eval/return", "eval/env_steps")


def _suffix(tag: str) -> str:
    return "" if tag == "full" else "_" + tag


#: The seeds the reports cover (``--seeds``): runs of other seeds stay stored but out of the tables, so a suite's
#: figures do not change when another suite adds seeds to a variant they share (plain SAC is in all of them).
REPORT_SEEDS: tuple[int, ...] = (1, 2, 3)


def _seed_files(folder: Path) -> list[Path]:
    return [folder / f"seed{seed}.json" for seed in REPORT_SEEDS if (folder / f"seed{seed}.json").exists()]


def _seeds_flag() -> str:
    return "" if REPORT_SEEDS == (1, 2, 3) else " --seeds " + " ".join(map(str, REPORT_SEEDS))


def _results(variant: str, tag: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in _seed_files(RUNS / tag / variant)]


def _versus_sac(aulc: Sequence[float], sac: Sequence[float] | None, variant: str) -> tuple[str, str]:
    """A variant's per-seed AULCs against SAC's on one task: ``("+12.3", "0.04")``.

    The first cell is the AULC's mean minus SAC's, marked "beyond spread" where it exceeds the sum of the two
    standard deviations (population ones, as in :func:`summarize`: the mean ± std ranges do not overlap); the second
    is Welch's two-sided p-value of the same difference. Both need 2 seeds of each side.
    """
    if variant == "sac" or not sac or not aulc:  # nothing to compare until both sides have a run
        return "–", "–"
    a, b = np.asarray(aulc, dtype=float), np.asarray(sac, dtype=float)
    diff = a.mean() - b.mean()
    if min(len(a), len(b)) < 2:
        return f"{diff:+.1f} (1 seed)", "–"
    beyond = " beyond spread" if abs(diff) > a.std() + b.std() else ""
    return f"{diff:+.1f}{beyond}", f"{welch_p_value(a, b):.2f}"


def planet_report(tag: str, expected_seeds: int = 3) -> str:
    """``docs/benchmark_planet.md`` and ``.png`` from the stored runs of the six PlaNet tasks (partial or whole).

    Per task and variant: final ``eval/return`` and AULC (mean ± std over seeds), the variants' rank by AULC, and
    the AULC's difference to SAC's with its Welch p-value (see :func:`_versus_sac`); the summary rows are the mean
    over tasks of each variant's final return, and of its AULC, divided by SAC's on that task.
    """
    import matplotlib.pyplot as plt

    curves = {task: {v: [_curve(json.loads(p.read_text())) for p in
                         _seed_files(record_path(v, 0, tag, task).parent)]
                     for v in PLANET_VARIANTS} for task in PLANET_TASKS}
    header = ("| task (action repeat) | variant | seeds | final eval/return (mean ± std) | AULC (mean ± std) "
              "| rank by AULC | AULC − SAC's | p (Welch) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    ratios: dict[str, dict[str, list[float]]] = {v: {"final": [], "aulc": []} for v in PLANET_VARIANTS}
    complete = 0
    for task, by_variant in curves.items():
        stats = {v: summarize(c) for v, c in by_variant.items() if c}
        aulcs = {v: [float(np.mean(y)) for _, y in c] for v, c in by_variant.items()}  # [seeds] each
        order = sorted(stats, key=lambda v: -stats[v]["aulc_mean"])
        for v in PLANET_VARIANTS:
            if v not in stats:
                lines.append(f"| {task} ({PLANET_TASKS[task]}) | {v} | 0 | – | – | – | – | – |")
                continue
            st = stats[v]
            diff, p_value = _versus_sac(aulcs[v], aulcs["sac"], v)
            lines.append(f"| {task} ({PLANET_TASKS[task]}) | {v} | {st['n']} | "
                         f"{mean_std(st['final_mean'], st['final_std'], n=st['n'])} | "
                         f"{mean_std(st['aulc_mean'], st['aulc_std'], n=st['n'])} | "
                         f"{order.index(v) + 1} of {len(order)} | {diff} | {p_value} |")
            if "sac" in stats and stats["sac"]["final_mean"] > 0 and stats["sac"]["aulc_mean"] > 0:
                ratios[v]["final"].append(st["final_mean"] / stats["sac"]["final_mean"])
                ratios[v]["aulc"].append(st["aulc_mean"] / stats["sac"]["aulc_mean"])
        complete += all(len(c) >= expected_seeds for c in by_variant.values())
    lines.append("| **mean over tasks of the variant's / SAC's** | | | final return | AULC | | | |")
    for v in PLANET_VARIANTS:
        if ratios[v]["final"]:
            lines.append(f"| | {v} | | {np.mean(ratios[v]['final']):.2f} | {np.mean(ratios[v]['aulc']):.2f} "
                         f"| | | ({len(ratios[v]['final'])} tasks) |")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (task, by_variant) in zip(axes.flat, curves.items()):
        plot_groups({v: c for v, c in by_variant.items() if c}, ax=ax, title=f"{task} (repeat {PLANET_TASKS[task]})")
    png = _save_figure(fig, f"benchmark_planet{_suffix(tag)}.png")
    table = "\n".join(lines)
    status = _status(complete, len(PLANET_TASKS), expected_seeds)
    (ROOT / "docs" / f"benchmark_planet{_suffix(tag)}.md").write_text(
        "# Learning benchmark: the six PlaNet tasks, state observations\n\n"
        f"Measured by `python scripts/benchmark_learning.py --suite planet{_seeds_flag()}` on this project's 2-core "
        "CPU machine "
        f"(one thread per run); config `configs/{CONFIG.name}` with each task's action repeat, 100k env steps "
        f"(1000 warm-up agent steps), evaluation every 10k env steps over 10 episodes. Status: {status}.\n\n"
        "Final: the last evaluation's mean return over 10 episodes; AULC: the mean of the evaluation curve (its area "
        "normalised by length). Mean ± std over seeds (population std). \"Beyond spread\": the AULC differs from "
        "SAC's by more than the sum of the two stds. p (Welch): Welch's two-sided t-test of the per-seed AULCs "
        "against SAC's; with 3 seeds a side it is weak, so a large p means \"not shown\", not \"no difference\". "
        "No correction for the 18 comparisons.\n\n"
        f"{table}\n\n![curves]({png.name})\n\n"
        + aggregate_section({v: [p for task in PLANET_TASKS for p in _seed_files(record_path(v, 0, tag, task).parent)]
                             for v in PLANET_VARIANTS}, f"benchmark_planet{_suffix(tag)}", "sac"))
    return table


def _save_figure(fig, name: str) -> Path:
    """Save a report's figure as ``docs/<name>`` (tight layout, 100 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = ROOT / "docs" / name
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _status(complete: int, tasks: int, expected_seeds: int) -> str:
    """A multi-task report's status line."""
    return ("complete" if complete == tasks else
            f"partial: {complete} of {tasks} tasks have {expected_seeds} seeds of every variant")


def aggregate_section(groups: dict[str, list[Path]], stem: str, baseline: str, reps: int = 2000,
                      versus: Sequence[tuple[str, str]] = ()) -> str:
    """A report's "Aggregates" section: rliable's IQM and mean of normalised scores (score / 1000, DMC's maximum)
    with stratified-bootstrap 95% CIs and P(variant > baseline), for the final return and for the AULC, and the
    final return's performance profiles (``docs/<stem>_profile.png``); as ``a2ls plot --aggregate`` computes them.
    ``versus``: further ``(x, y)`` pairs whose P(x > y) is given under each table (e.g. A2-winner against CURL).
    """
    from a2ls_lightning.plotting import aggregate_runs, plot_performance_profiles
    from a2ls_lightning.stats import format_aggregate_table

    groups = {k: v for k, v in groups.items() if v}
    if len(groups) < 2:
        return ""
    parts, tasks = [], []
    for score, label in (("final", "final eval/return"), ("aulc", "AULC")):
        result = aggregate_runs(groups, score=score, reps=reps, seed=0)
        tasks = result["tasks"]
        parts.append(f"{label} / 1000:\n\n{format_aggregate_table(result['groups'], baseline)}\n")
        for x, y in versus:
            if x in result["groups"] and y in result["groups"]:
                p, lo, hi = result["groups"][x]["p_improvement"][y]
                parts.append(f"P({x} > {y}) [95% CI]: {p:.2f} [{lo:.2f}, {hi:.2f}]\n")
        if score == "final":
            png = ROOT / "docs" / f"{stem}_profile.png"
            plot_performance_profiles({k: np.asarray(v) for k, v in result["scores"].items()}, png, reps=reps)
    return ("## Aggregates across tasks and seeds (rliable)\n\n"
            f"Interquartile mean (IQM) and mean of normalised scores over {len(tasks)} task(s) "
            f"({', '.join(tasks)}) × seeds, stratified-bootstrap 95% CIs ({reps} replications, seed 0); "
            f"P(X > {baseline}): the probability that a run of X scores higher than a run of {baseline} on a random "
            "task (rliable's `probability_of_improvement`), with its CI. An interval that contains 0.5 shows no "
            "ordering. The same figures from the command line: `a2ls plot --aggregate` on the records.\n\n"
            + "\n".join(parts) + f"\n![performance profiles]({stem}_profile.png)\n")


def frontier_report(tag: str, expected_seeds: int = 3) -> str:
    """``docs/benchmark_frontier.md`` and ``.png`` from the stored frontier runs (partial or whole): per task and
    variant the final ``eval/return`` and AULC (mean ± std over the report's seeds), minutes per run, and SimBa's
    published SAC + SimBa and SAC at 100k env steps beside them."""
    import matplotlib.pyplot as plt

    results = {t: {v: [json.loads(p.read_text()) for p in _seed_files(record_path(v, 0, tag, t).parent)]
                   for v in FRONTIER_VARIANTS} for t in FRONTIER_TASKS}
    lines = ["| task (action repeat, replay ratio) | variant | seeds | final eval/return (mean ± std) "
             "| AULC (mean ± std) | minutes/run | SAC + SimBa, published | SAC (SimBa's runs), published |",
             "|---|---|---|---|---|---|---|---|"]
    complete = 0
    for task, by_variant in results.items():
        repeat, ratio = FRONTIER_TASKS[task]
        simba, sac = SIMBA_PUBLISHED[task]
        for v, rs in by_variant.items():
            if not rs:
                lines.append(f"| {task} ({repeat}, {ratio}) | {v} | 0 | – | – | – | {simba} | {sac} |")
                continue
            st = summarize([_curve(r) for r in rs])
            lines.append(f"| {task} ({repeat}, {ratio}) | {v} | {st['n']} | "
                         f"{mean_std(st['final_mean'], st['final_std'], n=st['n'])} | "
                         f"{mean_std(st['aulc_mean'], st['aulc_std'], n=st['n'])} | "
                         f"{np.mean([r['seconds'] for r in rs]) / 60:.0f} | {simba} | {sac} |")
        complete += all(len(rs) >= expected_seeds for rs in by_variant.values())
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (task, by_variant) in zip(axes[0], results.items()):
        plot_groups({v: [_curve(r) for r in rs] for v, rs in by_variant.items() if rs}, ax=ax, ylabel=EVAL_LABEL,
                    xlabel="env steps (action repeats included)", title=f"{task}, frontier config")
    png = _save_figure(fig, f"benchmark_frontier{_suffix(tag)}.png")
    table = "\n".join(lines)
    variants = "\n".join(f"- `{v}`: " + (" ".join(f"`{a}`" for a in VARIANTS[v]) or "the config as it is")
                         for v in FRONTIER_VARIANTS)
    _write_report(ROOT / "docs" / f"benchmark_frontier{_suffix(tag)}.md",
        "# Learning benchmark: the model-free frontier at CPU scale\n\n"
        f"Measured by `python scripts/benchmark_learning.py --suite frontier{_seeds_flag()}` on this project's 2-core "
        f"CPU machine (one thread per run); config `configs/{FRONTIER_CONFIG.name}` (SimBa's SAC choices, scaled "
        "down: see the config's comment), 100k env steps (1000 warm-up agent steps), evaluation every 10k env steps "
        f"over 10 episodes. Status: {_status(complete, len(results), expected_seeds)}.\n\n"
        f"Variants (arguments added to the config):\n\n{variants}\n\n{table}\n\n![curves]({png.name})\n\n"
        + aggregate_section({v: [p for t in FRONTIER_TASKS for p in _seed_files(record_path(v, 0, tag, t).parent)]
                             for v in FRONTIER_VARIANTS}, f"benchmark_frontier{_suffix(tag)}", "frontier_sac"))
    return table


def pixels_report(tag: str, tasks: Sequence[str], expected_seeds: int = 3) -> str:
    """``docs/benchmark_pixels.md`` and ``.png`` from the stored pixel runs (partial or whole).

    Per task and variant: final ``eval/return`` and AULC (mean ± std over seeds), the rank by AULC, the AULC's
    difference to pixel SAC's with its Welch p-value, minutes per run, and the published full-size figure where
    there is one (a different scale: shown for orientation, not comparable).
    """
    import matplotlib.pyplot as plt

    tasks = [t for t in PIXEL_TASKS if t in tasks or any(
        _seed_files(record_path(v, 0, tag, t).parent) for v in PIXEL_VARIANTS)]
    results = {t: {v: [json.loads(p.read_text()) for p in _seed_files(record_path(v, 0, tag, t).parent)]
                   for v in PIXEL_VARIANTS} for t in tasks}
    curves = {t: {v: [_curve(r) for r in rs] for v, rs in by_v.items()} for t, by_v in results.items()}
    lines = ["| task (action repeat) | variant | seeds | final eval/return (mean ± std) | AULC (mean ± std) "
             "| rank by AULC | AULC − pixel SAC's | p (Welch) | minutes/run | published, full size, 100k steps "
             "(final) |", "|---|---|---|---|---|---|---|---|---|---|"]
    complete, orders = 0, {}
    for task, by_variant in curves.items():
        stats = {v: summarize(c) for v, c in by_variant.items() if c}
        aulcs = {v: [float(np.mean(y)) for _, y in c] for v, c in by_variant.items()}
        order = sorted(stats, key=lambda v: -stats[v]["aulc_mean"])
        # A2LS's headline is A2-winner against CURL: their AULC difference and its Welch p-value, per task.
        headline = _versus_sac(aulcs["pixel_a2_winner"], aulcs["pixel_curl"], "pixel_a2_winner")
        orders[task] = (order, headline)
        for v in PIXEL_VARIANTS:
            published = PUBLISHED.get((task, v), "–")
            if v not in stats:
                lines.append(f"| {task} ({PIXEL_TASKS[task]}) | {v} | 0 | – | – | – | – | – | – | {published} |")
                continue
            st = stats[v]
            diff, p_value = _versus_sac(aulcs[v], aulcs["pixel_sac"], "sac" if v == "pixel_sac" else v)
            minutes = np.mean([r["seconds"] for r in results[task][v]]) / 60
            lines.append(f"| {task} ({PIXEL_TASKS[task]}) | {v} | {st['n']} | "
                         f"{mean_std(st['final_mean'], st['final_std'], n=st['n'])} | "
                         f"{mean_std(st['aulc_mean'], st['aulc_std'], n=st['n'])} | "
                         f"{order.index(v) + 1} of {len(order)} | {diff} | {p_value} | {minutes:.0f} | {published} |")
        complete += all(len(c) >= expected_seeds for c in by_variant.values())
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(6 * max(1, len(curves)), 4.2), squeeze=False)
    for ax, (task, by_variant) in zip(axes[0], curves.items()):
        plot_groups({v: c for v, c in by_variant.items() if c}, ax=ax, ylabel=EVAL_LABEL,
                    xlabel="env steps (action repeats included)",
                    title=f"{task} from pixels (repeat {PIXEL_TASKS[task]}), CPU scale")
    png = _save_figure(fig, f"benchmark_pixels{_suffix(tag)}.png")
    table = "\n".join(lines)
    status = _status(complete, len(curves), expected_seeds)
    ordering = "\n".join(
        f"- {t}: " + " > ".join(o) + (f" (A2-winner's AULC − CURL's: {h[0]}, p {h[1]})" if h[0] != "–" else "")
        for t, (o, h) in orders.items() if o) or "(no runs recorded yet)"
    variants = "\n".join(f"- `{v}`: " + (" ".join(f"`{a}`" for a in VARIANTS[v]) or "the config as it is")
                          for v in PIXEL_VARIANTS)
    cpu_scale = PIXEL_CONFIG == DEFAULT_PIXEL_CONFIG
    flag = "" if cpu_scale else f" --pixel-config {PIXEL_CONFIG.relative_to(ROOT)}"
    _write_report(ROOT / "docs" / f"benchmark_pixels{_suffix(tag)}.md",
        f"# Learning benchmark: pixels at {'CPU scale' if cpu_scale else PIXEL_CONFIG.stem + ' size'} (SAC, + CURL, "
        "+ A2-winner)\n\n"
        f"Measured by `python scripts/benchmark_learning.py --suite pixels{flag}{_seeds_flag()}` "
        + ("on this project's 2-core CPU machine (one thread per run)" if cpu_scale else
           "on the machine its records were made on (one torch thread per run for the CPU side)")
        + f"; config `{PIXEL_CONFIG.relative_to(ROOT)}`: {_pixel_sizes()}, the papers' "
        "action repeats and learning rates (2e-4 on cheetah-run, 1e-3 elsewhere), 100k env steps (1000 warm-up "
        f"agent steps), evaluation every 10k env steps over 10 episodes. Status: {status}.\n\n"
        "Variants (arguments added to the config; each auxiliary loss with its A2LS preset unchanged):\n\n"
        f"{variants}\n\n"
        "Final: the last evaluation's mean return over 10 episodes; AULC: the mean of the evaluation curve. Mean ± "
        "std over seeds (population std); p (Welch): Welch's two-sided t-test of the per-seed AULCs against pixel "
        "SAC's (weak with 3 seeds a side: a large p means \"not shown\"). **Published**: the papers' numbers at "
        "100k env steps and *full size* (100-pixel renders cropped to 84, 32 filters, 1024-wide networks, batch "
        "512), CURL from Laskin et al. 2020 and A2-winner from the A2LS paper: a different scale, beside ours for "
        "orientation only; the ordering is what this protocol can test.\n\n"
        f"{table}\n\nOrdering by AULC (mean over seeds):\n\n{ordering}\n\n![curves]({png.name})\n\n"
        + aggregate_section({v: [p for t in curves for p in _seed_files(record_path(v, 0, tag, t).parent)]
                             for v in PIXEL_VARIANTS}, f"benchmark_pixels{_suffix(tag)}", "pixel_sac",
                            versus=[("pixel_a2_winner", "pixel_curl")]))
    return table


def _pixel_sizes() -> str:
    """The pixel config's sizes in words (renders, crop, frame stack, encoder, widths, batch, precision)."""
    import yaml

    from a2ls_lightning import ReplayDataModule
    from a2ls_lightning.modules.agent import init_defaults, model_defaults
    from a2ls_lightning.modules.settings import flatten_model_settings

    config = yaml.safe_load(PIXEL_CONFIG.read_text())
    # The config's values over the classes' own defaults (what a2ls fit would use for a setting it leaves out).
    model = model_defaults() | flatten_model_settings(config.get("model") or {})
    data = init_defaults(ReplayDataModule) | (config.get("data") or {})
    return (f"{data['image_size']}-pixel renders randomly cropped to {model['crop_size']}, frame stack "
            f"{data['frame_stack']}, {model['encoder_layers'] or 4} conv layers of {model['num_filters']} filters, "
            f"{model['hidden_dim']}-wide actor and critics, batch {data['batch_size']}, precision "
            f"{(config.get('trainer') or {}).get('precision', 32)}")


def weights_table(suite: str, tag: str) -> str:
    """Per weighted variant and auxiliary loss: the weight at the end (mean over seeds, min-max) and, where
    OL-AUX logged them, the mean over training of its windowed dot product and cosine with the main gradient."""
    def over_runs(results: list[dict], tag_name: str, reduce) -> np.ndarray:
        return np.array([reduce([v for _, v in r["scalars"][tag_name]]) for r in results
                         if r["scalars"].get(tag_name)])

    rows = []
    for variant in _report_variants(suite, tag):
        results = _results(variant, tag)
        names = sorted({t.split("/", 1)[1] for r in results for t in r["scalars"] if t.startswith("aux_weight/")})
        for name in names:
            final = over_runs(results, f"aux_weight/{name}", lambda v: v[-1])
            if np.all(over_runs(results, f"aux_weight/{name}", lambda v: np.ptp(v)) == 0):
                continue  # a constant weight (fixed weights, gradient balancing): nothing to explain
            dots = over_runs(results, f"olaux/dot/{name}", np.mean)
            cos = over_runs(results, f"olaux/cos/{name}", np.mean)
            rows.append(f"| {variant} | {name} | {final.mean():.2f} ({final.min():.2f}-{final.max():.2f}) | "
                        + (f"{dots.mean():.2f} | {cos.mean():.3f} (min {cos.min():.3f}) |" if len(dots) else "– | – |"))
    if not rows:
        return ""
    header = ("| variant | loss | weight at the end: mean (min-max over seeds) | mean dot product | "
              "mean cosine with the main gradient |")
    return "\n".join([header, "|---|---|---|---|---|", *rows])


def report(suite: str, tag: str) -> str:
    """Write ``docs/benchmark_<suite>.md`` and ``.png`` from the stored runs; return the table."""
    import matplotlib

    matplotlib.use("Agg")  # for plot_weights' pyplot

    rows = ["| variant | seeds | eval/return at the end (mean ± std) | AULC of eval/return (mean ± std) "
            "| minutes/run |", "|---|---|---|---|---|"]
    groups: dict[str, list[Curve]] = {}
    for variant in _report_variants(suite, tag):
        results = _results(variant, tag)
        if not results:
            continue
        groups[variant] = [_curve(r) for r in results]
        s = summarize(groups[variant])
        minutes = np.mean([r["seconds"] for r in results]) / 60
        rows.append(f"| {variant} | {s['n']} | {mean_std(s['final_mean'], s['final_std'], n=s['n'])} | "
                    f"{mean_std(s['aulc_mean'], s['aulc_std'], n=s['n'])} | {minutes:.1f} |")
    png = ROOT / "docs" / f"benchmark_{_stem(suite)}{_suffix(tag)}.png"
    plot_groups(groups, png, title=f"state cheetah-run, CPU-sized SAC ({suite})", ylabel=EVAL_LABEL, xlabel=X_LABEL)
    weights_png = plot_weights(suite, tag)
    table = "\n".join(rows)
    variants = "\n".join(f"- `{v}`: " + (" ".join(f"`{a}`" for a in VARIANTS[v]) or "the config as it is")
                         for v in _report_variants(suite, tag))
    weights = weights_table(suite, tag)
    if weights:
        weights = ("\n## Auxiliary weights\n\nDot product and cosine: OL-AUX's diagnostics `olaux/dot/<loss>` and "
                   "`olaux/cos/<loss>` (the window's mean at each log step), averaged over training and seeds; – where "
                   f"the run predates them.\n\n{weights}\n")
    _write_report(ROOT / "docs" / f"benchmark_{_stem(suite)}{_suffix(tag)}.md",
                  f"# Learning benchmark: {suite}\n\nMeasured by `python scripts/benchmark_learning.py --suite "
                  f"{suite}{_seeds_flag()}` on this project's 2-core CPU machine; config `configs/{CONFIG.name}`, "
                  "one thread per run. "
                  f"Variants (arguments added to the config):\n\n{variants}\n\n{table}\n\n"
                  f"![curves]({png.name})\n" + (f"\n![weights]({weights_png.name})\n" if weights_png else "")
                  + weights + (harmful_section(tag) if suite == "harmful" else "")
                  + "\n" + aggregate_section({v: _seed_files(RUNS / tag / v) for v in _report_variants(suite, tag)},
                                              f"benchmark_{_stem(suite)}{_suffix(tag)}", SUITES[suite][0]))
    return table


def _write_report(md: Path, text: str) -> None:
    """Write a report, keeping what follows :data:`KEEP_MARKER` in the existing file (written by hand: what happened,
    in words) as it is."""
    kept = md.read_text().split(KEEP_MARKER, 1) if md.exists() else []
    md.write_text(text + ("\n" + KEEP_MARKER + kept[1] if len(kept) == 2 else ""))


def _stem(suite: str) -> str:
    """The report's file stem: the suite's name, except RL-AUX's SAC suite (``benchmark_rlaux.md`` is the toy's)."""
    return "rlaux_sac" if suite == "rlaux" else suite


#: Variants a suite's report adds once they have records (run with --variants).
LATE_VARIANTS = {"harmful": ["harmful_rlaux", "harmful_rlaux_credit", "harmful_lookahead"],
                 "rlaux": ["five_rlaux_credit", "five_lookahead"]}


def _report_variants(suite: str, tag: str) -> list[str]:
    """The suite's variants, and the late ones (RL-AUX's columns, the look-ahead rule) once they have records."""
    return [*SUITES[suite], *(v for v in LATE_VARIANTS.get(suite, []) if _results(v, tag))]


def harmful_section(tag: str) -> str:
    """What each rule recovers, with two losses built to hurt and two that a one-seed search over-rated among the
    nine: its AULC (and final return) as a fraction of the reference's (five useful losses, fixed weights), and
    the gain over SAC it keeps, ``(rule − SAC) / (reference − SAC)``, from the per-variant means."""
    def means(variant: str) -> tuple[float, float, int] | None:
        results = _results(variant, tag)
        if not results:
            return None
        s = summarize([_curve(r) for r in results])
        return s["aulc_mean"], s["final_mean"], s["n"]

    reference, sac = means("five_fixed"), means("sac")
    if reference is None:
        return ""
    rows = ["| rule (nine losses) | seeds | AULC / reference's | final / reference's | gain over SAC kept (AULC) |",
            "|---|---|---|---|---|"]
    for variant in [*(f"harmful_{r}" for r in HARMFUL_RULES), *LATE_VARIANTS["harmful"]]:
        m = means(variant)
        if m is None:
            rows.append(f"| {variant} | 0 | – | – | – |")
            continue
        kept = (f"{(m[0] - sac[0]) / (reference[0] - sac[0]):.2f}" if sac and reference[0] != sac[0] else "–")
        rows.append(f"| {variant} | {m[2]} | {m[0] / reference[0]:.2f} | {m[1] / reference[1]:.2f} | {kept} |")
    return ("\n## What each rule recovers\n\nReference: `five_fixed` (the five useful losses at weight 1, "
            f"{reference[2]} seeds: AULC {reference[0]:.1f}, final {reference[1]:.1f})"
            + (f"; SAC ({sac[2]} seeds): AULC {sac[0]:.1f}" if sac else "") + ". The nine losses add `adv` "
            "(adversarial: minus the critic loss's gradient on the encoder), `noise` (a fixed random target per "
            "transition), and `top1`/`top2`, the single-seed search's best two (`docs/search_demo.md`), which lose "
            "to SAC on fresh seeds. Expected from OL-AUX's paper (§5.1): fixed weights lose much, OL-AUX recovers "
            "most of it.\n\n" + "\n".join(rows) + "\n")


def compare(variants: list[str], suite: str, tag: str) -> str:
    """Write ``docs/compare_<suite>.png`` and ``.md`` (``a2ls plot``'s table) of stored variants; return the table."""
    groups = {v: [_curve(r) for r in _results(v, tag)] for v in variants}
    missing = [v for v, curves in groups.items() if not curves]
    if missing:
        raise SystemExit(f"--compare: no stored runs of {', '.join(missing)} under {RUNS / tag}")
    png = ROOT / "docs" / f"compare_{suite}{_suffix(tag)}.png"
    plot_groups(groups, png, title=f"state cheetah-run, CPU-sized SAC: {' vs '.join(variants)}", ylabel=EVAL_LABEL,
                xlabel=X_LABEL)
    table = markdown_table(groups)
    png.with_suffix(".md").write_text(
        f"# Comparison: {', '.join(variants)}\n\nStored runs of `python scripts/benchmark_learning.py` "
        f"(config `configs/{CONFIG.name}`), drawn by `a2ls_lightning.plotting`:\n\n    python scripts/"
        f"benchmark_learning.py --suite {suite} --report-only --compare {' '.join(variants)}\n\n"
        f"Final: the last evaluation (10 episodes); AULC: mean of eval/return over the evaluations; mean ± std over "
        f"seeds.\n\n{table}\n\n![curves]({png.name})\n")
    return table


def _mean_series(results: list[dict], tag_name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, mean over the runs that logged it) of one scalar, cut to the shortest run; None if none did."""
    series = [np.array(r["scalars"][tag_name]) for r in results if r["scalars"].get(tag_name)]
    if not series:
        return None
    n = min(len(x) for x in series)
    return series[0][:n, 0], np.mean([x[:n, 1] for x in series], axis=0)


def plot_weights(suite: str, tag: str) -> Path | None:
    """Auxiliary weights over training (mean over seeds), one panel per variant that logs them (paper's Fig. 5)."""
    import matplotlib.pyplot as plt

    panels = {}
    for variant in _report_variants(suite, tag):
        results = [json.loads(p.read_text()) for p in _seed_files(RUNS / tag / variant)]
        tags = sorted({t for r in results for t in r["scalars"] if t.startswith("aux_weight/")})
        varies = any(np.ptp([v for _, v in r["scalars"][t]]) > 0 for r in results for t in tags if t in r["scalars"])
        if varies:  # fixed and log-balanced weights stay at 1: nothing to draw
            panels[variant] = (results, tags)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (variant, (results, tags)) in zip(axes[0], panels.items()):
        for t in tags:
            series = [np.array(r["scalars"][t]) for r in results if t in r["scalars"]]
            n = min(len(x) for x in series)
            steps = series[0][:n, 0]
            line, = ax.plot(steps, np.mean([x[:n, 1] for x in series], axis=0), label=t.split("/", 1)[1])
            name = t.split("/", 1)[1]
            low, high = (_mean_series(results, f"rlaux/weight_{q}/{name}") for q in ("p10", "p90"))
            if low is not None and high is not None:  # RL-AUX: how the per-example weights spread (10th-90th pct)
                m = min(len(low[0]), len(high[0]))
                ax.fill_between(low[0][:m], low[1][:m], high[1][:m], color=line.get_color(), alpha=0.15, lw=0)
        if any(t.startswith("rlaux/weight_p10/") for r in results for t in r["scalars"]):
            ax.set_yscale("log")  # the weight grid is log-spaced (0.125 ... 32)
            ax.set_title(f"{variant} (n={len(results)}); band: 10th-90th pct of examples")
        else:
            ax.set_title(f"{variant} (n={len(results)})")
        ax.set_xlabel("updates")
        ax.set_ylabel("auxiliary weight")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / f"benchmark_{_stem(suite)}_weights{'' if tag == 'full' else '_' + tag}.png"
    fig.savefig(out, dpi=110)
    return out


def run_task_suite(name: str, tasks: Sequence[str], variants: Sequence[str], args: argparse.Namespace,
                   tag: str) -> None:
    """Run the (task, variant, seed) jobs of a multi-task suite that have no record yet, ``args.jobs`` at a time.

    Seed-major order: a partial run covers every task and variant with the first seed before any second. Shards
    (``--shard i/n``) split the full list, not what is left, so machines never pick the same run.
    """
    index, count = (int(x) for x in args.shard.split("/"))
    jobs = [(t, v, s) for s in args.seeds for t in tasks for v in variants]
    todo = [j for j in jobs[index::count] if not record_path(j[1], j[2], tag, j[0]).exists()]
    print(f"{name}: {len(jobs)} runs, {len(jobs[index::count])} in shard {args.shard}, {len(todo)} to run", flush=True)
    if not args.report_only:
        with forwarding_signals(), ThreadPoolExecutor(args.jobs) as pool:  # a stopped suite stops its runs
            list(pool.map(lambda job: run_one(job[1], job[2], args.max_steps, tag, job[0]), todo))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted([*SUITES, "planet", "pixels", "frontier"]), default="core")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    parser.add_argument("--max-steps", type=int, default=None, help="fewer updates (a quick check, stored apart)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--compare", nargs="+", metavar="VARIANT", choices=sorted(VARIANTS),
                        help="also write docs/compare_<suite>.png/.md: these stored variants side by side")
    parser.add_argument("--variants", nargs="+", metavar="VARIANT", choices=sorted(VARIANTS),
                        help="run these variants (default: the suite's own; e.g. harmful_rlaux) and report the suite")
    parser.add_argument("--shard", default="0/1", help="i/n: run the i-th of n interleaved parts of the job list")
    parser.add_argument("--pixel-config", type=Path, default=None, metavar="YAML",
                        help="pixels suite: train on this config instead of the CPU-scale one, e.g. the papers' size "
                             "on a GPU: configs/sac_cheetah_pixels.yaml (records, run folders and report are tagged "
                             "with its name)")
    parser.add_argument("--tasks", nargs="+", choices=sorted({*PIXEL_TASKS, *FRONTIER_TASKS}), default=None,
                        help="pixels suite: the tasks to run (default: cheetah-run cartpole-swingup); frontier suite: "
                             "default cheetah-run walker-walk")
    args = parser.parse_args()
    tag = "full" if args.max_steps is None else f"steps{args.max_steps}"
    if args.pixel_config is not None:
        if args.suite != "pixels":
            parser.error("--pixel-config: only with --suite pixels")
        config = (Path.cwd() / args.pixel_config).resolve()
        if not config.is_file() or not config.is_relative_to(ROOT):
            parser.error(f"--pixel-config: {args.pixel_config} is not a config file of this repository")
        global PIXEL_CONFIG
        PIXEL_CONFIG = config
        tag = PIXEL_CONFIG.stem if args.max_steps is None else f"{tag}_{PIXEL_CONFIG.stem}"
    global REPORT_SEEDS
    REPORT_SEEDS = tuple(args.seeds)
    if args.suite == "planet":
        run_task_suite("planet", PLANET_TASKS, PLANET_VARIANTS, args, tag)
        print(planet_report(tag, expected_seeds=len(args.seeds)))
        return
    if args.suite == "frontier":
        run_task_suite("frontier", args.tasks or list(FRONTIER_TASKS), args.variants or FRONTIER_VARIANTS, args, tag)
        print(frontier_report(tag, expected_seeds=len(args.seeds)))
        return
    if args.suite == "pixels":
        args.tasks = args.tasks or PIXEL_DEFAULT_TASKS
        if any(t not in PIXEL_TASKS for t in args.tasks):
            parser.error(f"--tasks: the pixels suite runs {', '.join(PIXEL_TASKS)}")
        run_task_suite("pixels", args.tasks, PIXEL_VARIANTS, args, tag)
        print(pixels_report(tag, args.tasks, expected_seeds=len(args.seeds)))
        return
    if not args.report_only:
        jobs = [(v, s) for s in args.seeds for v in (args.variants or SUITES[args.suite])]
        with forwarding_signals(), ThreadPoolExecutor(args.jobs) as pool:  # a stopped suite stops its runs
            list(pool.map(lambda job: run_one(job[0], job[1], args.max_steps, tag), jobs))
    print(report(args.suite, tag))
    if args.compare:
        print(compare(args.compare, args.suite, tag))


if __name__ == "__main__":
    main()
