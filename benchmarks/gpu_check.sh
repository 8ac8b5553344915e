#!/usr/bin/env bash
# Device session (issue 17) — the one command to give the device `run` tool, timeout_s=330 (the check
# stops itself at 300 s; two runs plus a machine start fit the 15-minute device budget):
#   bash benchmarks/gpu_check.sh
# It writes $OUT/gpu-<date>.md (commit it as benchmarks/results/gpu-<date>.md) and $OUT/gpu_check.log.
#
# ctxsim GPU check (< 5 minutes on an H200, unattended, no network), all measured in one run on the same
# generated full-size JPEGs: AMP training of the 224 and 256 ResNet-50 recipes through the Trainer's own
# loader with data.decode=cpu and =gpu (images/s, peak GPU memory, data-loader stall share); ctxsim's
# train_step vs a plain PyTorch loop (ratio); fp16/bf16, channels_last, torch.compile variants with a
# one-step equivalence check; exact k-NN at iNat size (250k x 512) vs bare torch / faiss-gpu searches;
# the CUDA-only pytest tests. Prints the tables; see benchmarks/gpu_check.py for the details.
#   bash benchmarks/gpu_check.sh              # on a GPU machine
#   bash benchmarks/gpu_check.sh --no-compile # without the torch.compile variant (the slowest part)
#   bash benchmarks/gpu_check.sh --cpu-tiny   # dry run on CPU with tiny sizes
# GPU_CHECK_LIMIT (seconds, default 300) bounds the run; the results file is rewritten after every
# section, so a run cut short still leaves what it measured (marked incomplete).
set -euo pipefail
cd "$(dirname "$0")/.."
export CTXSIM_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCH_HOME="${TORCH_HOME:-$(mktemp -d)}"   # nothing is downloaded: weights are random
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
PY=${PYTHON:-python3}
LIMIT=${GPU_CHECK_LIMIT:-300}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
  exit "${PIPESTATUS[0]}"
fi
exec timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" benchmarks/gpu_check.py "$@"
