#!/usr/bin/env bash
# The accelerator figures of docs/performance.md ("At the paper's scale") in one command: the
# stage-2 grid at the ImageNet-LT and iNaturalist shapes with the features on the device, in
# float32 and in TF32 / bfloat16 where they keep the results (benches/scale_gpu.py).
#
#   bash benches/scale_gpu.sh OUT
#
# OUT receives scale_gpu.txt (the output) and scale_gpu.json. PYTHON picks the interpreter
# (default python3), which must import lort (from a checkout: PYTHONPATH=python, with the built
# lort/_core.abi3.so beside it). DEVICE (default cuda), SIZES (default imagenet-lt,inat2018),
# LIMIT (seconds, default 480) and GPU_ARGS adjust the run; the CPU smoke test:
#   DEVICE=cpu SIZES=cifar100-lt-512 GPU_ARGS="--heads 4 --epochs 2 --check-rows 2000 \
#       --check-epochs 2 --rows-fraction 0.5" bash benches/scale_gpu.sh /tmp/scale_gpu
set -euo pipefail
out=$1
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # shellcheck disable=SC2086  # GPU_ARGS is a list of options
    timeout "${LIMIT:-480}" "$py" benches/scale_gpu.py --device "${DEVICE:-cuda}" \
        --sizes "${SIZES:-imagenet-lt,inat2018}" --out "$out/scale_gpu.json" ${GPU_ARGS:-}
} 2>&1 | tee "$out/scale_gpu.txt"
