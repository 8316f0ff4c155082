#!/usr/bin/env bash
# Every check of the GPU path, in one go, on a machine with CUDA GPUs (see README, "Training on several GPUs").
#
#   scripts/gpu_check.sh [OUT_DIR]        (default runs/gpu_check; $OUT when set, as on the project's device runner)
#
# Steps (each writes its output under OUT_DIR and the script goes on when one fails; the exit code
# is the number of failed steps):
#   1. the GPU(s) and PyTorch's view of them
#   2. the test suite's CUDA-marked tests (training, inference, bf16/fp16 within tolerance, torchrun over
#      NCCL and the server's multi_gpu when there are two GPUs, evaluate --workers on the GPU)
#   3. python -m lib bench --device cuda (full plan, 256 px): the forward against the GPU's float32 matmul
#      peak, mixed precision against float32, training images per second, peak GPU memory
#   4. the paper preset (reference U-Net, 256 px, Adam 1e-4, batch 4, patience 50) trained on the sample
#      data (patient split: one fold's training) until early stopping or TRAIN_MINUTES (default 3), in
#      float32, then in PRECISION (default bf16) for the same budget; with two GPUs or more, the same on
#      all of them with torchrun (batch 4 per GPU)
#   5. training through a real MONAI Label server with multi_gpu (paper preset, SERVER_EPOCHS epochs,
#      default 3)
# Budget: about 12 minutes on one GPU with the defaults (the TRAIN_MINUTES budget runs twice).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-runs/gpu_check}}"
PY="${PYTHON:-.venv/bin/python}"
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
PRECISION="${PRECISION:-bf16}"
SERVER_EPOCHS="${SERVER_EPOCHS:-3}"
mkdir -p "$OUT_DIR"
failed=0
step() {  # step NAME COMMAND...: run, tee its output into OUT_DIR/NAME.log, count failures
    local name="$1"; shift
    echo "=== $name: $*"
    local started=$SECONDS
    "$@" > >(tee "$OUT_DIR/$name.log") 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - started)) s"
    [ $rc -eq 0 ] || failed=$((failed + 1))
}

step gpus bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], \"bf16\", torch.cuda.is_bf16_supported())'"
NGPU=$($PY -c 'import torch; print(torch.cuda.device_count())')
if [ "${NGPU:-0}" -lt 1 ]; then echo "no CUDA GPU: nothing to check"; exit 1; fi

step cuda_tests "$PY" -m pytest -q -rs -m cuda tests
step bench "$PY" -m lib bench --device cuda --out "$OUT_DIR/bench_cuda.json"

DATA="$OUT_DIR/sample"
[ -d "$DATA/images" ] || "$PY" -m lib sample-data --out "$DATA" > "$OUT_DIR/sample_data.log"
step paper_float32 "$PY" -m lib train --data "$DATA" --out "$OUT_DIR/paper_float32" --device cuda --no-progress \
    --time-budget "$TRAIN_MINUTES"
step "paper_$PRECISION" "$PY" -m lib train --data "$DATA" --out "$OUT_DIR/paper_$PRECISION" --device cuda \
    --no-progress --precision "$PRECISION" --time-budget "$TRAIN_MINUTES"
if [ "$NGPU" -ge 2 ]; then
    step "paper_torchrun_${NGPU}gpus" "$PY" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$NGPU" \
        -m lib train --data "$DATA" --out "$OUT_DIR/paper_ddp" --device cuda --no-progress --time-budget "$TRAIN_MINUTES"
else
    echo "=== paper_torchrun: skipped, one GPU (NCCL needs a GPU per process)"
fi
# seconds per epoch, images per second, best epoch of each training, from its checkpoint history
"$PY" - "$OUT_DIR" <<'PYEOF' | tee "$OUT_DIR/paper_summary.log"
import json, statistics, sys
from pathlib import Path
import torch
for ck in sorted(Path(sys.argv[1]).glob("paper_*/checkpoint_last.pt")):
    data = torch.load(ck, map_location="cpu", weights_only=True)
    info = json.loads((ck.parent / "model.json").read_text()) if (ck.parent / "model.json").is_file() else {}
    training = info.get("training", {})
    seconds = [h["seconds"] for h in data["history"]][1:] or [h["seconds"] for h in data["history"]]
    n = training.get("n_train")
    s = statistics.median(seconds)
    print(f"{ck.parent.name}: {data['epoch']} epochs ({training.get('stopped')}), best epoch "
          f"{data['early_stopping']['best_epoch']} valid loss {data['early_stopping']['best_value']:.4f}; "
          f"{s:.2f} s per epoch, {n / s if n else float('nan'):.1f} train images/s ({n} images, world size "
          f"{training.get('world_size')}), peak GPU memory {training.get('gpu_peak_memory_mb')} MB")
PYEOF

step server_multi_gpu "$PY" scripts/gpu_server_train.py --workdir "$OUT_DIR/server" --paper --epochs "$SERVER_EPOCHS" \
    --out "$OUT_DIR/server_multi_gpu.json"
echo "done: $failed step(s) failed; outputs in $OUT_DIR"
exit $failed
