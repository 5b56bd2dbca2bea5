#!/usr/bin/env bash
# Quantised decode GEMV variants side by side on the GPU machine: each DSINFER_GPU_QGEMV value
# first passes the GPU-vs-CPU logits checks on generated quantised models (gpu_check
# --models-only), then decodes Llama-2-7B and Qwen2.5-1.5B Q4_K_M (generated, the real files'
# type mixes) alternating with the others, ROUNDS rounds (2).
#   bench/gpu/qgemv-ab.sh OUTFILE [VALUE...]     (default values: 0 1; after `make gpu-build`)
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 OUTFILE [DSINFER_GPU_QGEMV value...]" >&2; exit 2; }
OUT=$1; shift
VALUES=${*:-0 1}
B=build-cuda
export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
M=$(mktemp -d)
trap 'rm -rf "$M"' EXIT
$B/dsinfer gen-model -q -o "$M/qwen2.5-1.5b-q4_k_m.gguf" --preset qwen2.5-1.5b --type q4_k_m
$B/dsinfer gen-model -q -o "$M/llama-d128-q4_k.gguf" --preset tiny --embd 512 --heads 4 --kv-heads 2 --ffn 1024 --vocab 512 --ctx 512 --type q4_k
$B/dsinfer gen-model -q -o "$M/llama-d128-q6_k.gguf" --preset tiny --embd 512 --heads 4 --kv-heads 2 --ffn 1024 --vocab 512 --ctx 512 --type q6_k
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), build of commit $(cat $B/COMMIT 2>/dev/null || echo unknown)"
    for v in $VALUES; do
        DSINFER_GPU_QGEMV=$v timeout 300 $B/gpu_check --models-only "$M"/*.gguf > "$M/check.log" 2>&1
        echo "== gpu_check --models-only QGEMV=$v: rc=$? $(tail -1 "$M/check.log")"
        grep -E "dense: GPU" "$M/check.log"
    done
} | tee "$OUT"
rm -f "$M/llama-d128-"*.gguf
$B/dsinfer gen-model -q -o "$M/llama2-7b-q4_k_m.gguf" --preset llama2-7b --type q4_k_m
for round in $(seq "${ROUNDS:-2}"); do
    for m in llama2-7b-q4_k_m qwen2.5-1.5b-q4_k_m; do
        for v in $VALUES; do
            echo "== $m QGEMV=$v round $round $(DSINFER_GPU_QGEMV=$v timeout 120 $B/dsinfer bench -m "$M/$m.gguf" --gpu \
                --dense -c 2048 --pp 16 --tg 64 --depths 0 -r 2 2>/dev/null | grep -E '^\| tg')"
        done
    done
done | tee -a "$OUT"
