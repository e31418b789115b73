#!/usr/bin/env bash
# The GPU figures of docs/results.md in one go: stage-1 throughput (benches/stage1_throughput.py),
# then the full recipes/cifar10-lt-ir100.yaml run (with --compile when the benchmark shows it
# pays) and `lort compare` over all twelve methods on its features.
#
#   bash benches/cifar10_lt_gpu.sh DATA OUT
#
# DATA: an extracted CIFAR-10 image folder (train/, test/) or the cifar10-jpeg.tar.gz archive
# (extracted to a temporary folder). OUT receives the logs, report.json, compare.json and the
# group-metrics figure; the run folder itself goes to $RUN (default: a temporary folder).
# PYTHON picks the interpreter (default python3), which must import lort. BENCH_ARGS and
# FIT_ARGS add options to the benchmark and to lort fit (a CPU smoke test: BENCH_ARGS="--images
# 256 --variants files,tensor" FIT_ARGS="--epochs1 1").
set -euo pipefail
data=$1
out=$2
py=${PYTHON:-python3}
run=${RUN:-$(mktemp -d)/run}
mkdir -p "$out"
if [[ -f $data ]]; then
    root=$(mktemp -d)
    tar xzf "$data" -C "$root"
else
    root=$data
fi
export PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    timeout 240 "$py" benches/stage1_throughput.py --data-root "$root" --epochs 2 \
        --json "$out/throughput.json" ${BENCH_ARGS:-}
} 2>&1 | tee "$out/throughput.txt"

flag=$("$py" - "$out/throughput.json" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))["results"]
compiled = r.get("compile", {}).get("images_per_s", 0.0)
print("--compile" if compiled > 1.1 * r["tensor"]["images_per_s"] else "--no-compile")
EOF
)

start=$(date +%s)
timeout 420 "$py" -m lort fit --config recipes/cifar10-lt-ir100.yaml --data-root "$root" \
    "$flag" --workers 8 --out "$run" --overwrite ${FIT_ARGS:-} 2>&1 | tee "$out/fit.txt"
echo "lort fit $flag: wall $(($(date +%s) - start)) s" | tee -a "$out/fit.txt"
cp "$run/report.json" "$out/"

timeout 180 "$py" -m lort compare "$run" --methods all 2>&1 | tee "$out/compare.txt" || true
cp "$run/compare.json" "$out/" 2>/dev/null || true
cp "$run/figures/group_metrics.png" "$out/" 2>/dev/null || true
