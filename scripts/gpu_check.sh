#!/usr/bin/env bash
# The GPU path in one command, from the repo root:
#   bash scripts/gpu_check.sh            # on a CUDA machine: full sizes, Markdown table, 2,000-update pixel smoke run,
#                                        # then the GPU tests (pytest -m gpu)
#   bash scripts/gpu_check.sh --dry-run  # the same steps on the CPU at tiny sizes (checks the script itself)
# Table: updates/s of one update (losses + backward + Adam) by scripts/gpu_benchmark.py (a plain loop, no Trainer):
# eager fp32, eager bf16-mixed, compiled, CUDA graphs of the whole update, compiled + CUDA graphs.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; elif [[ $# -gt 0 ]]; then echo "usage: $0 [--dry-run]" >&2; exit 2; fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
PY="${PYTHON:-python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ $DRY == 1 ]]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  DEV=cpu; ACCEL=cpu; HIDDEN=32; BATCH=16; UPDATES=3; IMG=64; CROP=56; WARM=40; SMOKE=20; FILTERS=8
  BENCH_EXTRA=(--warmup-updates 2)
  # compiling the pixel networks takes minutes on a CPU; the state rows already run both compiled modes
  PIXEL_MODES=fp32,bf16,graphs
else
  DEV=cuda; ACCEL=gpu; HIDDEN=1024; BATCH=512; UPDATES=200; IMG=100; CROP=84; WARM=1000; SMOKE=2000; FILTERS=32
  BENCH_EXTRA=(--warmup-updates 6)
  PIXEL_MODES=fp32,bf16,compiled,graphs,compiled+graphs
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: use --dry-run")'
fi

echo "## updates/s ($DEV)"
"$PY" scripts/gpu_benchmark.py --device "$DEV" --hidden "$HIDDEN" --batch "$BATCH" --updates "$UPDATES" \
  --warmup-steps "$WARM" --modes fp32,bf16,compiled,graphs,compiled+graphs --header "${BENCH_EXTRA[@]}"
"$PY" scripts/gpu_benchmark.py --device "$DEV" --hidden "$HIDDEN" --batch "$BATCH" --updates "$UPDATES" \
  --warmup-steps "$WARM" --modes "$PIXEL_MODES" --pixels --image-size "$IMG" --crop-size "$CROP" "${BENCH_EXTRA[@]}"

echo "## smoke run: a2ls fit, pixels, a2_winner, $SMOKE updates ($DEV)"
EVAL=$(( (WARM + SMOKE / 2) * 4 ))  # env steps (action repeat 4 on cheetah): one evaluation halfway, one at the end
"$PY" -m a2ls_lightning.cli fit --trainer.max_steps "$SMOKE" --trainer.accelerator "$ACCEL" --trainer.devices 1 \
  --trainer.precision bf16-mixed --trainer.log_every_n_steps "$(( SMOKE / 10 > 0 ? SMOKE / 10 : 1 ))" \
  --trainer.default_root_dir "$WORK/run" --trainer.enable_progress_bar false \
  --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.save_dir "$WORK/run" \
  --model.network.encoder pixel --model.network.hidden_dim "$HIDDEN" --model.network.num_filters "$FILTERS" --model.network.crop_size "$CROP" \
  --model.aux_losses '{a2w: a2_winner}' \
  --data.from_pixels true --data.image_size "$IMG" --data.frame_stack 3 --data.batch_size "$BATCH" \
  --data.warmup_steps "$WARM" --data.capacity 20000 --data.eval_interval "$EVAL" --data.eval_episodes 1 \
  --data.buffer_device auto > "$WORK/smoke.log" 2>&1 || { tail -40 "$WORK/smoke.log"; echo "smoke run: FAILED (exit code)"; exit 1; }
"$PY" - "$WORK/run" <<'PY'
import csv, glob, math, sys
files = glob.glob(f"{sys.argv[1]}/**/metrics.csv", recursive=True)
if not files:
    sys.exit("smoke run: FAILED (no metrics.csv)")
rows = list(csv.DictReader(open(files[0])))
losses = [float(r[k]) for r in rows for k in r if k.startswith("train/") and k.endswith("_loss") and r[k]]
returns = [float(r["eval/return"]) for r in rows if r.get("eval/return")]
if not losses or not all(math.isfinite(v) for v in losses):
    sys.exit(f"smoke run: FAILED (losses {losses[:5]})")
if not returns:
    sys.exit("smoke run: FAILED (no eval/return logged)")
print(f"smoke run: OK (exit 0, {len(losses)} finite losses, eval/return {returns[-1]:.1f})")
PY

echo "## GPU tests"
set +e
"$PY" -m pytest -m gpu -q -n 0 tests/test_gpu.py  # one process: the GPU tests share one device
rc=$?
set -e
# 5: nothing collected/all deselected is not a failure; skips (no CUDA on --dry-run) are reported by -rs
if [[ $rc != 0 && $rc != 5 ]]; then echo "GPU tests: FAILED"; exit "$rc"; fi
echo "GPU tests: done (pytest exit $rc)"
