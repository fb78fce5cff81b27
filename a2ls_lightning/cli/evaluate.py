"""``a2ls evaluate``: play a trained checkpoint's deterministic policy (see
:func:`a2ls_lightning.runs.evaluate.evaluate_checkpoint`).

    a2ls evaluate --ckpt_path runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt --episodes 10 \\
        --video cheetah.mp4
"""

from __future__ import annotations

import argparse

from a2ls_lightning.cli.parsing import OneLineArgumentParser


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="a2ls evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Play a checkpoint's deterministic policy for N episodes on its task and settings; print each "
                    "episode's return and the mean ± std, and write a JSON record. Episode i is seeded from "
                    "(seed, i): the same seed replays the same episodes.",
        epilog="example:\n  a2ls evaluate --ckpt_path runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt "
               "--video cheetah.mp4")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by a2ls fit (any version)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the episodes (default: drawn and printed)")
    parser.add_argument("--data.task", dest="task", default=None,
                        help="evaluate on another task with the same observation and action sizes (transfer)")
    parser.add_argument("--video", default=None, help="record episodes to this .mp4 (GIF without an MP4 encoder: "
                        "pip install 'a2ls_lightning[video]')")
    parser.add_argument("--video_episodes", type=int, default=1, help="episodes recorded (default: %(default)s)")
    parser.add_argument("--video_size", type=int, default=256, help="video frame side (default: %(default)s)")
    parser.add_argument("--out", default=None, help="JSON record (default: <checkpoint stem>.update<U>.seed<S>"
                        ".eval.json beside it: one per evaluated update and seed)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out record or --video; "
                        "without it an existing one stops the command before any work")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as a2ls fit)")
    return parser


def main(argv: list[str]) -> None:
    """``a2ls evaluate`` (``argv`` without the ``evaluate`` word)."""
    args = _parser().parse_args(argv)
    import random
    from pathlib import Path

    from a2ls_lightning.builder import read_checkpoint
    from a2ls_lightning.runs.evaluate import default_record, evaluate_checkpoint

    if args.seed is None:  # drawn here, so that the default record's name can say it
        args.seed = random.SystemRandom().randrange(2**31)
    if args.out is None:
        args.out = str(default_record(args.ckpt_path, read_checkpoint(args.ckpt_path).get("global_step", 0),
                                      args.seed))
    for option, path in (("--out", Path(args.out)), ("--video", Path(args.video) if args.video else None)):
        if path is not None and path.exists() and not args.force:
            raise ValueError(f"{option} {path}: exists (an earlier a2ls evaluate?); give --force to overwrite it, or "
                             f"another {option}")

    result = evaluate_checkpoint(args.ckpt_path, episodes=args.episodes, seed=args.seed, task=args.task,
                                 video=args.video, video_episodes=args.video_episodes, video_size=args.video_size,
                                 out=args.out, threads=args.threads)
    print(f"{result.task}, checkpoint at update {result.update}, seed {result.seed}:")
    for i, (episode_seed, value) in enumerate(zip(result.episode_seeds, result.returns)):
        print(f"  episode {i}: return {value:.1f} (episode seed {episode_seed})")
    print(f"eval/return {result.mean:.1f} ± {result.std:.1f} over {len(result.returns)} episodes "
          f"({result.seconds:.1f} s)")
    if result.video:
        print(f"video: {result.video}")
    print(f"record: {args.out}")
