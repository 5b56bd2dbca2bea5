#!/usr/bin/env bash
# Variants of the label-scoring loop (src/cuda/attn.cu, score_rows) side by side, per kernel
# (torch.profiler), for the two selection paths, then Nsight Compute stall reasons of the default.
#   bench/gpu/score-variants.sh build          (here: compiles build-cuda/libdsattn-<variant>.so)
#   bench/gpu/score-variants.sh run [OUTDIR]   (on the GPU machine, carrying build-cuda/)
# Variants: base (4 rows per thread in flight, one shared atomic per key), su8 (8 rows in
# flight), match (one shared atomic per distinct bin of a warp), nohist (no histogram: timing
# only, it selects nothing but the current token).
set -euo pipefail
cd "$(dirname "$0")/../.."
VARIANTS="su8:-DSCORE_SU=8 match:-DSCORE_HIST=1 nohist:-DSCORE_HIST=2"
if [ "${1:-}" = build ]; then
    for v in $VARIANTS; do
        nvcc -O3 -std=c++17 -Iinclude -Isrc -gencode arch=compute_90,code=sm_90 ${v#*:} -shared -Xcompiler -fPIC \
            src/cuda/attn.cu -o "build-cuda/libdsattn-${v%%:*}.so" &
    done
    wait
    exit 0
fi
OUT=${2:-/tmp/dsinfer-score-variants}
mkdir -p "$OUT"
for path in split fused; do
    tune=""; [ "$path" = split ] && tune="split=1"
    for lib in base su8 match nohist; do
        f=build-cuda/libdsattn-$lib.so; [ "$lib" = base ] && f=build-cuda/libdsattn.so
        echo "=== $path $lib"
        DSINFER_GPU_TUNE=$tune DSINFER_GPU_PDL=0 timeout 120 python3 bench/gpu/op_bench.py --lib "$f" --profile \
            --variants ds16,ds4 --batches 1,4,8 --ctx 16384,65536 ${PROFILE_SHAPES:-}
    done
done > "$OUT/variants.txt" 2>&1
timeout 200 bench/gpu/ds-profile.sh "$OUT/prof" "${NCU_SHAPES:-4/16384 8/65536}" > /dev/null 2>&1 || true
DSINFER_GPU_TUNE=split=1 TAG=-split timeout 200 bench/gpu/ds-profile.sh "$OUT/prof" "${NCU_SHAPES:-4/16384 8/65536}" > /dev/null 2>&1 || true
