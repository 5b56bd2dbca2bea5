#!/usr/bin/env bash
# Decode GEMV and kernel-launch variants side by side on the GPU machine, one e2e_bench process
# per variant over the same cells (Llama-2-7B shape, random fp16 weights):
#   DSINFER_GPU_GEMV  0 = k_gemv (CUDA-core FMAs), 2 / 4 = k_gemv_mma<UN> (tensor cores),
#                     5 = k_gemv_mma<4> software-pipelined (the default)
#   DSINFER_GPU_PDL   0 = plain launches, 1 = programmatic dependent launch (src/cuda/pdl.cuh)
#   DSINFER_GPU_MMA_WARPS  warps per k_gemv_mma block; 0 = sized per matrix for one wave
# VARIANTS lists GEMV,PDL[,WARPS] triples.
# First with attention skipped (the weight stream alone), then the full step.
#   bench/gpu/gemv-variants.sh [OUTDIR] [PRESET]      (after `make gpu-build`, carrying build-cuda/)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-gemv}
PRESET=${2:-llama2-7b}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/build-cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
VARIANTS=${VARIANTS:-"0,1 4,1 5,1 5,0"}
for skip in 1 0; do
    for v in $VARIANTS; do
        IFS=, read -r g p w <<< "$v"
        w=${w:-0}
        if [ "$skip" = 1 ]; then cells=(--batches 1,4,8 --depths 4096); else cells=(--batches 1,4 --depths 4096,16384); fi
        echo "=== preset $PRESET, GEMV=$g PDL=$p MMA_WARPS=$w SKIP_ATTN=$skip"
        DSINFER_GPU_GEMV=$g DSINFER_GPU_PDL=$p DSINFER_GPU_MMA_WARPS=$w DSINFER_GPU_SKIP_ATTN=$skip \
            build-cuda/e2e_bench --preset "$PRESET" "${cells[@]}" --steps 10 --rounds 3 | grep '^| [0-9]'
    done
done 2>&1 | tee "$OUT/gemv-variants-$PRESET.txt"
