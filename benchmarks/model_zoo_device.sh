#!/usr/bin/env bash
# One device call of benchmarks/model_zoo_gpu.py on a GPU machine (carry .whl and .devsnap: the
# wheels the device lacks, and a snapshot of the committed tree). Usage, from the snapshot root:
#   bash benchmarks/model_zoo_device.sh OUT_JSON case1,case2,...  [extra args]
set -uo pipefail
out=${1:?output json}; only=${2:?cases}; shift 2
export CODESIGN_CACHE_DIR=${CODESIGN_CACHE_DIR:-/tmp/codesign-cache} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
python3 benchmarks/model_zoo_gpu.py --only "$only" --out "$out" "$@" 2>&1 | grep -v -i "warn" | tail -n 60
