"""``a2ls export``: a checkpoint's deterministic policy with ``torch.export``, to run with torch alone (see
:func:`a2ls_lightning.runs.policy.export_policy`).

    a2ls export --ckpt_path runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt --out policy.pt2
    python -c "import torch; p = torch.export.load('policy.pt2').module(); print(p(torch.zeros(1, 17)))"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from a2ls_lightning.cli.parsing import OneLineArgumentParser


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="a2ls export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a checkpoint's deterministic policy with torch.export: torch.export.load(FILE).module() "
                    "runs it without this package, observations [N, *obs_shape] -> actions [N, A] in [-1, 1] "
                    "(state: float32; "
                    "pixels: uint8 [N, 3 * frame_stack, H, W]). The file's extra a2ls.json records the shapes, the "
                    "task and its settings.",
        epilog="example:\n  a2ls export --ckpt_path runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt "
               "--out policy.pt2")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by a2ls fit")
    parser.add_argument("--out", default=None,
                        help="file to write (default: policy.pt2 in the checkpoint's run folder, beside its "
                             "checkpoints/ folder)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser


def default_out(ckpt_path: str | Path) -> Path:
    """``<run folder>/policy.pt2``: beside ``checkpoints/`` for a checkpoint inside one, else beside the file."""
    ckpt = Path(ckpt_path)
    folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return folder / "policy.pt2"


def main(argv: list[str]) -> None:
    """``a2ls export`` (``argv`` without the ``export`` word)."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else default_out(args.ckpt_path)
    if out.exists() and not args.force:
        raise ValueError(f"--out {out}: exists; give --force to overwrite it, or another --out")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: folder {out.parent} does not exist")
    from a2ls_lightning.runs.policy import export_policy

    metadata = export_policy(args.ckpt_path, out)
    shape = ", ".join(map(str, metadata["obs_shape"]))
    print(f"wrote {out}: {metadata['task']} policy at update {metadata['update']}, observations (N, {shape}) "
          f"{metadata['obs_dtype']} -> actions (N, {metadata['action_dim']}) in [-1, 1]; run it: "
          "torch.export.load(FILE).module()(obs)")
