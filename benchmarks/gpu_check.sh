#!/usr/bin/env bash
# ctxsim GPU check (< 8 minutes, unattended, no network): AMP training steps of the paper's 224 and
# 256 ResNet-50 recipes on generated full-size JPEGs (images/s, peak GPU memory, data-loader stall
# share) and exact k-NN evaluation at iNat size (250k x 512). Prints one table.
#   bash benchmarks/gpu_check.sh              # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu-tiny   # dry run on CPU with tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
export CTXSIM_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCH_HOME="${TORCH_HOME:-$(mktemp -d)}"   # nothing is downloaded: weights are random
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
PY=${PYTHON:-python3}
exec timeout --signal=INT --kill-after=20 460 "$PY" benchmarks/gpu_check.py "$@"
