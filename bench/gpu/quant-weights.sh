#!/usr/bin/env bash
# GPU decode and prefill with the weights kept quantised (the default) against the same model
# dequantised to fp16 on upload (DSINFER_GPU_QUANT=0), alternating in one run, on generated
# models with the real files' type mixes (the GPU machine has no model files):
# SmolLM2-135M Q4_1 (Q8_0 embedding), Qwen2.5-1.5B Q4_K_M, Llama-2-7B Q4_K_M.
#   bench/gpu/quant-weights.sh [OUTDIR]   (after `make gpu-build`, carrying build-cuda/)
#   MODELS="llama2-7b-q4_k_m" limits the run to some of the three.
# Writes OUTDIR/quant-weights.txt (the bench tables, each headed by its command).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-quant-weights}
B=build-cuda
M=$OUT/models
mkdir -p "$M"
export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
MODELS=${MODELS:-"smollm2-135m-q4_1 qwen2.5-1.5b-q4_k_m llama2-7b-q4_k_m"}
for m in $MODELS; do
    case $m in
    smollm2-135m-q4_1) $B/dsinfer gen-model -q -o "$M/$m.gguf" --preset smollm2-135m --type q4_1 ;;
    qwen2.5-1.5b-q4_k_m) $B/dsinfer gen-model -q -o "$M/$m.gguf" --preset qwen2.5-1.5b --type q4_k_m ;;
    llama2-7b-q4_k_m) $B/dsinfer gen-model -q -o "$M/$m.gguf" --preset llama2-7b --type q4_k_m ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
    esac
done
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), build of commit $(cat $B/COMMIT 2>/dev/null || echo unknown) (make gpu-build)"
    echo "# $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
    for m in $MODELS; do
        rounds=2
        [ "$m" = llama2-7b-q4_k_m ] && rounds=1   # the fp16 upload dequantises 6.7 G weights on one CPU core
        for r in $(seq $rounds); do
            for q in 1 0; do
                cmd="DSINFER_GPU_QUANT=$q $B/dsinfer bench -m $m.gguf --gpu --dense -c 4096 --pp 512 --tg 128 --depths 0,2048 -r 3"
                echo "== $cmd   (round $r)"
                DSINFER_GPU_QUANT=$q $B/dsinfer bench -m "$M/$m.gguf" --gpu --dense -c 4096 --pp 512 --tg 128 \
                    --depths 0,2048 -r 3 2>/dev/null
            done
        done
    done
} 2>&1 | tee "$OUT/quant-weights.txt"
rm -rf "$M"
