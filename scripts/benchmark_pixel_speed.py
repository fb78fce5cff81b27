"""Speed of the pixel path on this CPU: updates/s of each variant and where the time of a run goes.

Builds the real objects of an ``a2ls fit`` config (``a2ls_lightning.builder.instantiate``: the SACModule, the
ReplayDataModule with its environments, replay and collectors), fills the replay with rendered frames, and times
with ``time.perf_counter`` on one CPU thread:

* per frame: the render alone (``physics.render``), a training env step (physics × action repeat + render +
  replay write), a policy step (+ the policy's forward), an evaluation step (a whole evaluation episode / frames);
* per update: sampling the ``[B, L]`` batch (frame stacks built at sample time), the random crops (the
  augmentation), the encoder forwards (online with grad, target EMA and the next state's without), the encoder's
  backward, the auxiliary loss (its head, forward and backward), and the rest (critic, actor, temperature, Adam,
  EMA targets) as the whole update minus those parts;
* the whole update as ``SACModule.training_step`` does it (losses, weighting, backward, Adam step, EMA targets).

From these it extrapolates the wall time of one run of the protocol (100k env steps, evaluation every 10k over
10 episodes) per task and variant. ``--candidates`` also measures changes that could make the pixel path faster,
without editing the package (each one is applied to the built objects or to this process only, to measure what
it would buy): ``torch.compile`` of the losses (``--model.runtime.compile=true``), channels-last conv weights, a random
crop by slicing instead of advanced indexing, glibc's ``MALLOC_MMAP_THRESHOLD_`` (large tensors not returned to
the OS after each update: scripts/benchmark_learning.py sets it for the pixel runs, and this script measures with
it unless ``--plain-malloc``; the "plain malloc" row runs in a child process, as glibc reads it at start), and
rendering without shadows and reflections (per frame).

    python scripts/benchmark_pixel_speed.py                              # the protocol's sizes, 3 variants
    python scripts/benchmark_pixel_speed.py --candidates --calibrate 300 # + the speed-up candidates, + a2ls fit
    python scripts/benchmark_pixel_speed.py --set model.network.num_filters=32 data.batch_size=128   # other sizes
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed

from a2ls_lightning.builder import instantiate  # noqa: E402
from a2ls_lightning.modules import learner as learner_module  # noqa: E402
from a2ls_lightning.weighting import UnitWeights  # noqa: E402

CONFIG = ROOT / "configs" / "benchmark_pixels_cpu.yaml"
VARIANTS = {"sac": None, "curl": {"curl": "curl"}, "a2_winner": {"a2w": "a2_winner"}}
#: The tasks of the pixels suite and their action repeats (scripts/benchmark_learning.py's PIXEL_TASKS).
TASK_REPEATS = {"cheetah-run": 4, "cartpole-swingup": 8, "ball_in_cup-catch": 4}
ENV_STEPS, WARMUP, EPISODE_STEPS = 100_000, 1000, 1000
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def _set(config: dict, dotted: str, value) -> None:
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def load_config(path: Path, overrides: list[str], variant: str, task: str) -> dict:
    """The config dict of one variant on one task (as ``a2ls fit --config path <overrides>`` would read it)."""
    config = yaml.safe_load(path.read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        _set(config, key, yaml.safe_load(value))
    _set(config, "data.task", task)
    _set(config, "data.action_repeat", TASK_REPEATS.get(task, config["data"].get("action_repeat")))
    if VARIANTS[variant]:
        _set(config, "model.aux_losses", VARIANTS[variant])
    trainer = config.setdefault("trainer", {})
    trainer.update(logger=False, enable_checkpointing=False, default_root_dir=tempfile.mkdtemp(prefix="pxspeed"))
    return config


def timeit(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class Bench:
    """The built objects of one (task, variant) and their timings."""

    def __init__(self, config: dict, fill: int, channels_last: bool = False, slice_crop: bool = False) -> None:
        torch.set_num_threads(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = instantiate(copy.deepcopy(config))
        self.model, self.dm = cli.model, cli.datamodule
        self.model.build(self.dm.observation_shape, self.dm.action_dim)
        self.dm.setup("fit", policy=self.model.act, slice_length=self.model.required_slice_length)
        self.model.aux_weighting = UnitWeights()
        self.learner = self.model.learner
        if channels_last:
            for enc in (self.learner.encoder, self.learner.target_encoder):
                enc.to(memory_format=torch.channels_last)
        self.slice_crop = slice_crop
        self.optimizer = self.model.configure_optimizers()
        self.fill = fill
        self.hp, self.data = self.model.sac, self.dm.hparams

    # --- collection ------------------------------------------------------------------------------
    def collection(self, policy_steps: int, render_reps: int) -> dict[str, float]:
        """Seconds per frame: render alone, random (warm-up) env step, policy env step, evaluation step."""
        collector = self.dm.collector
        adapter = collector.env.adapter
        size, camera = adapter.image_size, adapter.camera_id
        out = {"render": timeit(lambda: adapter.physics.render(size, size, camera_id=camera), render_reps)}
        out["render_no_shadow"] = timeit(lambda: adapter.physics.render(
            size, size, camera_id=camera, render_flag_overrides={"shadow": False, "reflection": False}), render_reps)
        t = time.perf_counter()
        for _ in range(self.fill):
            collector.step(None)
        out["random_step"] = (time.perf_counter() - t) / self.fill
        t = time.perf_counter()
        for _ in range(policy_steps):
            collector.step(self.model.act)
        out["policy_step"] = (time.perf_counter() - t) / policy_steps
        evaluator = self.dm.evaluator
        t, start = time.perf_counter(), evaluator.collector.agent_steps
        evaluator.episode_returns(self.model.act_deterministic, 0, episodes=1)
        out["eval_step"] = (time.perf_counter() - t) / (evaluator.collector.agent_steps - start)
        out["act"] = out["policy_step"] - out["random_step"]
        return out

    # --- one update and its parts ------------------------------------------------------------------
    def _crop(self, obs: torch.Tensor) -> torch.Tensor:
        if self.slice_crop:
            return slice_random_crop(obs, self.learner.crop_size)
        return self.learner._prepare(obs, train=True)

    def update(self, batch, update: int) -> None:
        """One update as ``SACModule.training_step`` does it (eager or compiled losses)."""
        hp, learner = self.hp, self.learner
        main, aux, _ = self.model.losses_fn(batch, update_actor=update % hp.actor_update_freq == 0)
        critic = self.model.aux_weighting.combine(main["critic"], aux, self.model.shared_parameters())
        total = critic + main.get("actor", 0.0) + main.get("temperature", 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if update % hp.target_update_freq == 0:
            learner.update_targets(hp.critic_tau, hp.encoder_tau)

    def updates(self, reps: int) -> dict[str, float]:
        """Seconds per update (mean over ``reps`` updates, alternating actor/no-actor as training does) and the
        seconds of each part (medians), all on batches sampled from the filled replay."""
        replay, learner = self.dm.replay, self.learner
        if self.slice_crop:  # what a slicing crop in augment.random_crop would do (the losses call it there)
            learner_module.random_crop = slice_random_crop
        batches = [replay.sample() for _ in range(4)]
        for i in range(3):  # warm-up (and the compile, with model.compile)
            self.update(batches[i % 4], i)
        t = time.perf_counter()
        for i in range(reps):
            self.update(batches[i % 4], i)
        out = {"update": (time.perf_counter() - t) / reps}
        out["sample"] = timeit(replay.sample, max(3, reps // 3))
        b = batches[0]
        obs = b["observation"]
        online, target = learner.online_offsets, learner.target_offsets
        online_obs, target_obs = obs[:, online].flatten(0, 1), obs[:, target].flatten(0, 1)
        next_obs = obs[:, 1]
        n = max(3, reps // 3)
        out["crop"] = (timeit(lambda: self._crop(online_obs), n) + timeit(lambda: self._crop(target_obs), n)
                       + timeit(lambda: self._crop(next_obs), n))
        x_on, x_tg, x_nx = self._crop(online_obs), self._crop(target_obs), self._crop(next_obs)
        enc, tenc = learner.encoder, learner.target_encoder

        def online_forward():
            return enc.head(enc.trunk(x_on))

        def no_grad_forwards():
            with torch.no_grad():
                tenc.head(tenc.trunk(x_tg))
                enc.trunk(x_nx)

        fwd_online = timeit(online_forward, n)
        out["encoder_forward"] = fwd_online + timeit(no_grad_forwards, n)
        out["encoder_backward"] = max(0.0, timeit(lambda: online_forward().sum().backward(), n) - fwd_online)
        self.optimizer.zero_grad(set_to_none=True)
        out["aux_loss"] = 0.0
        if learner.aux_losses:
            with torch.no_grad():
                feats = enc.head(enc.trunk(x_on)).unflatten(0, (obs.shape[0], len(online)))
                tfeats = tenc.head(tenc.trunk(x_tg)).unflatten(0, (obs.shape[0], len(target)))
            feats.requires_grad_(True)
            action, reward = b["action"], b["reward"]

            def aux_step():
                total = 0.0
                for name, module in learner.aux_losses.items():
                    cin, ctg = learner.aux_columns[name]
                    h = module.spec.horizon
                    total = total + module(feats[:, cin], tfeats[:, ctg], action[:, :h].float(), reward[:, :h].float())
                total.backward()

            out["aux_loss"] = timeit(aux_step, n)
            self.optimizer.zero_grad(set_to_none=True)
        out["rest"] = out["update"] - out["crop"] - out["encoder_forward"] - out["encoder_backward"] - out["aux_loss"]
        learner_module.random_crop = ORIGINAL_CROP
        return out


ORIGINAL_CROP = learner_module.random_crop


def slice_random_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Candidate crop: one slice copy per image (same distribution of offsets as ``augment.random_crop``)."""
    n, _, h, w = frames.shape
    if h == size and w == size:
        return frames
    top = torch.randint(0, h - size + 1, (n,)).tolist()
    left = torch.randint(0, w - size + 1, (n,)).tolist()
    return torch.stack([frames[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(top, left))])


def run_estimate(update_s: float, sample_s: float, coll: dict[str, float], repeat: int, overhead_s: float,
                 eval_episodes: int = 10, eval_interval: int = 10_000) -> dict[str, float]:
    """Seconds of one run of the protocol: 100k env steps at ``repeat`` (1000 warm-up agent steps), one update
    per policy step, ``eval_episodes`` evaluation episodes every ``eval_interval`` env steps."""
    agent_steps = ENV_STEPS // repeat
    updates = agent_steps - WARMUP
    episode_frames = EPISODE_STEPS // repeat
    evals = ENV_STEPS // eval_interval
    eval_frames = evals * eval_episodes * episode_frames
    parts = {
        "updates": updates * (update_s + sample_s + overhead_s),
        "train_frames": WARMUP * coll["random_step"] + updates * coll["policy_step"],
        "eval_frames": eval_frames * coll["eval_step"],
    }
    parts["total"] = sum(parts.values())
    parts.update(n_updates=updates, n_train_frames=agent_steps, n_eval_frames=eval_frames)
    return parts


def child_update_ms(args: argparse.Namespace, variant: str, env: dict[str, str], slice_crop: bool = False) -> float:
    """The update time of ``variant`` measured in a fresh process with environment ``env`` (glibc reads its
    ``MALLOC_*`` settings once, at start)."""
    cmd = [sys.executable, __file__, "--config", str(args.config), "--tasks", args.tasks[0], "--variants", variant,
           "--updates", str(args.updates), "--fill", str(args.fill), "--json-updates",
           *(["--slice-crop"] if slice_crop else []), *(["--set", *args.set] if args.set else [])]
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["update"] * 1e3


def calibrate(args: argparse.Namespace, variant: str, updates: int) -> float:
    """Seconds per update of the real ``a2ls fit`` (evaluation off): ``(T(50 + updates) - T(50)) / updates``.

    Each update of a run also collects one policy step (a rendered frame) and passes through Lightning's loop,
    logging and the checkpoint callback; the difference of two runs removes start-up and warm-up.
    """
    times = []
    for n in (50, 50 + updates):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "a2ls_lightning.cli", "fit", f"--config={args.config}",
                   f"--trainer.max_steps={n}", "--data.eval_episodes=0", f"--trainer.default_root_dir={tmp}",
                   f"--data.task={args.tasks[0]}", f"--data.action_repeat={TASK_REPEATS[args.tasks[0]]}",
                   *([f"--model.aux_losses={json.dumps(VARIANTS[variant])}"] if VARIANTS[variant] else []),
                   *(f"--{item}" for item in args.set)]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
            t = time.perf_counter()
            subprocess.run(cmd, env=env, text=True, capture_output=True, check=True, cwd=ROOT)
            times.append(time.perf_counter() - t)
    return (times[1] - times[0]) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--tasks", nargs="+", default=["cheetah-run", "cartpole-swingup"], choices=list(TASK_REPEATS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--updates", type=int, default=30, help="updates timed per variant")
    parser.add_argument("--fill", type=int, default=300, help="random env steps put into the replay first")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (dotted keys)")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="also time N updates of the real `a2ls fit` per variant (evaluation off) and take "
                             "Lightning's per-update overhead from it into the extrapolation")
    parser.add_argument("--candidates", action="store_true", help="also measure the speed-up candidates")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="measure without the MALLOC_* settings the benchmark runs use (PIXEL_ENV)")
    parser.add_argument("--json-updates", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slice-crop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.json_updates:  # child mode of a candidate that needs its own process
        bench = Bench(load_config(args.config, args.set, args.variants[0], args.tasks[0]), args.fill,
                      slice_crop=args.slice_crop)
        bench.collection(policy_steps=5, render_reps=3)
        print(json.dumps(bench.updates(args.updates)))
        return
    if not args.plain_malloc and any(os.environ.get(k) != v for k, v in MMAP_ENV.items()):
        # As scripts/benchmark_learning.py runs the pixel suite: glibc reads these once, at process start.
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, **MMAP_ENV))

    command = "python scripts/benchmark_pixel_speed.py " + " ".join(sys.argv[1:])
    cfg0 = load_config(args.config, args.set, args.variants[0], args.tasks[0])
    m, d = cfg0["model"], cfg0["data"]
    malloc = "plain glibc malloc" if args.plain_malloc else ", ".join(f"{k}={v}" for k, v in MMAP_ENV.items())
    print(f"# Pixel path speed\n\n    {command.strip()}\n\nOne CPU thread (torch.set_num_threads(1), "
          f"OMP_NUM_THREADS=1), MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {malloc}; config "
          f"`{args.config.resolve().relative_to(ROOT)}`: renders {d['image_size']}² → crop {m['crop_size']}, "
          f"frame stack {d['frame_stack']}, {m.get('num_filters', 32)} filters, hidden {m.get('hidden_dim')}, batch "
          f"{d['batch_size']}. Medians of repeated calls; the update is the mean of {args.updates} updates.\n",
          flush=True)

    coll: dict[str, dict[str, float]] = {}
    upd: dict[str, dict[str, float]] = {}
    for ti, task in enumerate(args.tasks):
        for variant in args.variants:
            if ti > 0 and variant != args.variants[0]:
                continue  # collection costs do not depend on the variant; updates are timed on the first task
            bench = Bench(load_config(args.config, args.set, variant, task), args.fill)
            c = bench.collection(policy_steps=30, render_reps=30)
            coll.setdefault(task, c)
            if ti == 0:
                upd[variant] = bench.updates(args.updates)
                print(f"  measured {variant}: {upd[variant]['update'] * 1e3:.1f} ms/update", file=sys.stderr,
                      flush=True)
        print(f"  measured {task}: render {coll[task]['render'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
    overhead = {v: 0.0 for v in upd}
    if args.calibrate:
        for variant, u in upd.items():
            per_update = calibrate(args, variant, args.calibrate)
            overhead[variant] = max(0.0, per_update - u["update"] - u["sample"] - coll[args.tasks[0]]["policy_step"])
            u["cli"] = per_update
            print(f"  calibrated {variant}: {per_update * 1e3:.1f} ms per update of a2ls fit", file=sys.stderr,
                  flush=True)

    print("## Per frame (ms)\n\n| task (repeat) | render alone | render, no shadows/reflections | warm-up env step "
          "(physics + render + replay write) | policy env step (+ act) | evaluation step (+ act) |"
          "\n|---|---|---|---|---|---|")
    for task, c in coll.items():
        print(f"| {task} ({TASK_REPEATS[task]}) | {c['render'] * 1e3:.1f} | {c['render_no_shadow'] * 1e3:.1f} | "
              f"{c['random_step'] * 1e3:.1f} | {c['policy_step'] * 1e3:.1f} | {c['eval_step'] * 1e3:.1f} |")
    cli_head = " | a2ls fit, per update (with its env step) | Lightning overhead" if args.calibrate else ""
    print(f"\n## Per update (ms), task {args.tasks[0]}\n\n| variant | update | updates/s (update + sample) | sample "
          "batch | random crops | encoder forward | encoder backward | auxiliary loss (head fwd+bwd) | rest (critic, "
          f"actor, α, Adam, EMA){cli_head} |\n|---|---|---|---|---|---|---|---|---|"
          + ("---|---|" if args.calibrate else ""))
    for variant, u in upd.items():
        cli = f" | {u['cli'] * 1e3:.1f} | {overhead[variant] * 1e3:.1f}" if args.calibrate else ""
        print(f"| {variant} | {u['update'] * 1e3:.1f} | {1 / (u['update'] + u['sample']):.1f} | "
              f"{u['sample'] * 1e3:.1f} | {u['crop'] * 1e3:.1f} | {u['encoder_forward'] * 1e3:.1f} | "
              f"{u['encoder_backward'] * 1e3:.1f} | {u['aux_loss'] * 1e3:.1f} | {u['rest'] * 1e3:.1f}{cli} |")
    print("\n## One run, extrapolated (minutes)\n\nupdates × (update + sample + Lightning overhead) + training frames "
          "(1000 warm-up steps at the warm-up step's cost, one policy step per update) + evaluation frames (10k-step "
          "evaluations × episodes × 1000 / repeat, at the evaluation step's cost).\n\n| task | variant | updates | "
          "train frames | eval frames | updates (min) | train frames (min) | eval frames (min) | total (min) |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for task, c in coll.items():
        for variant, u in upd.items():
            e = run_estimate(u["update"], u["sample"], c, TASK_REPEATS[task], overhead[variant],
                             cfg0["data"]["eval_episodes"], cfg0["data"]["eval_interval"])
            print(f"| {task} | {variant} | {e['n_updates']} | {e['n_train_frames']} | {e['n_eval_frames']} | "
                  f"{e['updates'] / 60:.1f} | {e['train_frames'] / 60:.1f} | {e['eval_frames'] / 60:.1f} | "
                  f"{e['total'] / 60:.1f} |")

    if not args.candidates:
        return
    task = args.tasks[0]
    plain = {k: v for k, v in os.environ.items() if k not in MMAP_ENV}
    print(f"\n## Speed-up candidates (ms per update, task {task}, same sizes; each applied to the built objects or "
          "this process only, nothing in the package changed)\n\n| variant | as measured above | plain glibc malloc "
          "(no MALLOC_*) | torch.compile of the losses (model.runtime.compile=true) | channels-last conv weights "
          "| random crop "
          "by slicing |\n|---|---|---|---|---|---|")
    for variant in args.variants:
        row = [upd[variant]["update"] * 1e3, child_update_ms(args, variant, plain)]
        for kwargs, overrides in (({}, ["model.runtime.compile=true"]), ({"channels_last": True}, []),
                                  ({"slice_crop": True}, [])):
            bench = Bench(load_config(args.config, [*args.set, *overrides], variant, task), args.fill, **kwargs)
            bench.collection(policy_steps=5, render_reps=3)
            row.append(bench.updates(args.updates)["update"] * 1e3)
        print(f"| {variant} | " + " | ".join(f"{x:.1f}" for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
