#!/usr/bin/env bash
# The single-kernel selection (k_select, the default) beside the two-kernel pipeline it replaced
# (k_score + k_collect, DSINFER_GPU_TUNE=split=1), in one call on the GPU machine:
#   1. gpu_check with each (correctness first: nothing is timed from a failing build)
#   2. the op table at the paper's shape with each (the paper's kernels beside the default)
#   3. end-to-end decode at the goal cell (Llama-2-7B shape, B=4, n=16K), the two alternating
#   4. per-kernel times of other builds (LIBS="name=lib ...") and cluster sizes (CLS="4 2")
#   5. the per-block phase trace of the default at two shapes
# (each step under a timeout: a kernel that hangs ends the run instead of the machine's time)
#   bench/gpu/select-compare.sh [OUTDIR]   (after `make gpu-build`, carrying build-cuda/ and .peer/)
# It leaves 7 files in OUTDIR (the device machine returns at most 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-select-compare}
PEER=${PEER:-.peer}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/build-cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
M=$OUT/models
mkdir -p "$M"
build-cuda/dsinfer gen-model -q -o "$M/smollm2-135m-q4_1.gguf" --preset smollm2-135m --type q4_1
{ echo "== one-kernel selection"; timeout 180 build-cuda/gpu_check "$M/smollm2-135m-q4_1.gguf"
  echo "== split=1"; DSINFER_GPU_TUNE=split=1 timeout 180 build-cuda/gpu_check "$M/smollm2-135m-q4_1.gguf"; } > "$OUT/check.log" 2>&1
rm -rf "$M"
grep -E "^==|checks," "$OUT/check.log"
timeout 300 python3 bench/gpu/op_bench.py --peer "$PEER" --iters 40 --out "$OUT/op-fused.md" > "$OUT/op.raw.txt" 2>&1
for round in 1 2; do
    for v in fused split; do
        tune=""; [ "$v" = split ] && tune="split=1"
        echo "== round $round, $v"
        DSINFER_GPU_TUNE=$tune timeout 120 build-cuda/e2e_bench --preset llama2-7b --batches 4 --depths 16384 --steps 10 --rounds 3
    done
done > "$OUT/e2e.txt" 2>&1
DSINFER_GPU_TUNE=split=1 timeout 300 python3 bench/gpu/op_bench.py --iters 40 --out "$OUT/op-split.md" >> "$OUT/op.raw.txt" 2>&1
# per-kernel times of other builds of the kernels (LIBS: name=path pairs), and cluster sizes
for v in default=build-cuda/libdsattn.so ${LIBS:-}; do
    for cl in "" ${CLS:-}; do
        echo "=== ${v%%=*} ${cl:+cl=$cl}"
        DSINFER_GPU_TUNE=${cl:+cl=$cl} DSINFER_GPU_PDL=0 timeout 120 python3 bench/gpu/op_bench.py --lib "${v#*=}" --profile \
            --variants ds16,ds4 --batches 1,4,8 --ctx 16384,65536
    done
done > "$OUT/variants.txt" 2>&1
timeout 120 python3 bench/gpu/op_bench.py --lib build-cuda/libdsattn-trace.so --trace --batches 4,8 --ctx 16384,65536 > "$OUT/trace.txt" 2>&1
