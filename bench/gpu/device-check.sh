#!/usr/bin/env bash
# Everything `make gpu-check` covers plus GPU-vs-CPU logits on generated models, on the GPU
# machine (no model files there: the models are generated with `dsinfer gen-model`).
#   bench/gpu/device-check.sh [OUTDIR]      (after `make gpu-build` and carrying build-cuda/)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-gpu-check}
mkdir -p "$OUT"
B=build-cuda
export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# the generated models go to a scratch directory, not OUTDIR: on the device machine OUTDIR is
# usually under $OUT, where every file counts against what a call can bring back
M=$(mktemp -d)
trap 'rm -rf "$M"' EXIT
# head_dim 64 and 128, llama and qwen2 (bias, NEOX rope), the real models' weight types
$B/dsinfer gen-model -q -o "$M/llama-d64-f16.gguf" --preset tiny --embd 256 --heads 4 --kv-heads 2 --ffn 512 --vocab 512 --ctx 512
$B/dsinfer gen-model -q -o "$M/qwen2-d128-q8_0.gguf" --preset tiny --arch qwen2 --embd 512 --heads 4 --kv-heads 1 --ffn 1024 --vocab 512 --ctx 512 --type q8_0
$B/dsinfer gen-model -q -o "$M/smollm2-135m-q4_1.gguf" --preset smollm2-135m --type q4_1
$B/dsinfer gen-model -q -o "$M/llama-d128-q6_k.gguf" --preset tiny --embd 512 --heads 4 --kv-heads 2 --ffn 1024 --vocab 512 --ctx 512 --type q6_k
# the real Qwen2.5 file's type mix: Q4_K with Q6_K attn_v / ffn_down in half the layers, Q6_K output
$B/dsinfer gen-model -q -o "$M/qwen2.5-1.5b-q4_k_m.gguf" --preset qwen2.5-1.5b --type q4_k_m
$B/gpu_check "$M"/*.gguf 2>&1 | tee "$OUT/gpu_check.log"
# the CLI end to end on the GPU: greedy generation on the GPU and on the CPU (precise mode);
# on random weights near-tied logits may let the texts part after a few tokens
for m in "$M/smollm2-135m-q4_1.gguf" "$M/qwen2.5-1.5b-q4_k_m.gguf"; do
    $B/dsinfer run -m "$m" -p "The capital of France is" -n 16 --temp 0 --dense --gpu --no-display-prompt > "$OUT/gen-gpu.txt" 2> "$OUT/gen-gpu.err"
    DSINFER_PRECISE=1 $B/dsinfer run -m "$m" -p "The capital of France is" -n 16 --temp 0 --dense --no-display-prompt > "$OUT/gen-cpu.txt" 2> /dev/null
    echo "$(basename "$m"): GPU run ok ($(wc -c < "$OUT/gen-gpu.txt") bytes; $(tail -1 "$OUT/gen-gpu.err")); identical to the CPU's text: $(cmp -s "$OUT/gen-gpu.txt" "$OUT/gen-cpu.txt" && echo yes || echo no)"
done | tee "$OUT/run.log"
