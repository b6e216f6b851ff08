#!/usr/bin/env bash
# One device call of benchmarks/cost_validation.py on a GPU machine: fills the codesign and Triton
# caches with every case and family compiled in parallel (compiling is CPU work; the 16 host cores
# do it at once), then measures them one after another on a quiet GPU. Writes raw JSON to $1.
# SKIP_SUITE=1 measures the validation families only (the calibration suite's raw data is kept).
set -uo pipefail
out=${1:?output folder}
export CODESIGN_CACHE_DIR=${CODESIGN_CACHE_DIR:-/tmp/codesign-cache} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
mkdir -p "$out" /tmp/warm
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
start=$(date +%s)
axes="gemm attention memory launch"; [ -n "${SKIP_SUITE:-}" ] && axes=""
for axis in $axes; do
  python3 benchmarks/cost_validation.py measure --compile-only --axes "$axis" --families "" --out /tmp/warm > "/tmp/warm/suite_$axis.log" 2>&1 &
done
for family in ${FAMILIES:-llama qwen2 bert vit resnet mixtral_moe vae_decoder}; do
  python3 benchmarks/cost_validation.py measure --compile-only --skip-suite --families "$family" --out /tmp/warm > "/tmp/warm/$family.log" 2>&1 &
done
wait
echo "warm-up (parallel compile): $(( $(date +%s) - start )) s"
tail -n 3 /tmp/warm/*.log | grep -i -B2 "error" | head -40
tail -n 2 /tmp/warm/*.log > /tmp/warm_summary.txt 2>/dev/null
python3 benchmarks/cost_validation.py measure --out "$out" --families "${FAMILIES_MEASURE:-all}" ${SKIP_SUITE:+--skip-suite} 2>&1 | tail -n 40
echo "total: $(( $(date +%s) - start )) s"
