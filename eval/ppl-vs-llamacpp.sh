#!/usr/bin/env bash
# Dense perplexity on Jane Austen: dsinfer vs llama-perplexity (same text, same windows), plus
# dsinfer's paper-protocol number. Writes eval/results/ppl-dense-austen.md.
#
#   eval/ppl-vs-llamacpp.sh [-m MODEL] [--chunks 100] [--paper-windows 12] [-t 2]
#
# llama.cpp protocol: windows of 512 tokens, only the second half of each window scored, BOS
# only if the vocabulary adds one (SmolLM2: no). Paper protocol: windows of 4096 tokens, every
# position scored. llama.cpp is built by bench/vs-llamacpp.sh's recipe (outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=""; CHUNKS=100; PAPER_WIN=12; THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=${2?"$1 needs a value"}; shift 2;;
        --chunks) CHUNKS=${2?"$1 needs a value"}; shift 2;;
        --paper-windows) PAPER_WIN=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: $0 [-m MODEL] [--chunks N] [--paper-windows N] [-t THREADS]" >&2; exit 2;;
    esac
done
CACHE=${DSINFER_CACHE:-$HOME/.cache/dsinfer}
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
TEXT=$(scripts/fetch-text austen)
LCPP_BUILD=$CACHE/llama.cpp-build-${LCPP_VER:-0.3.36}
if [ ! -x "$LCPP_BUILD/bin/llama-perplexity" ]; then
    echo "llama-perplexity not built: run bench/vs-llamacpp.sh once (it builds llama.cpp)" >&2; exit 1
fi
make -s dsinfer
out=eval/results/ppl-dense-austen.md
raw=eval/results/ppl-dense-austen.raw.txt
mkdir -p eval/results
"$LCPP_BUILD/bin/llama-perplexity" -m "$MODEL" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$THREADS" > "$raw" 2>&1
lc=$(grep -o 'Final estimate: PPL = [0-9.]*' "$raw" | awk '{print $NF}')
ds_line=$(./dsinfer perplexity -m "$MODEL" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$THREADS" 2>/dev/null)
echo "$ds_line" >> "$raw"
ds=$(echo "$ds_line" | awk '{print $2}')
paper_line=$(./dsinfer perplexity -m "$MODEL" -f "$TEXT" --protocol paper --window 4096 --chunks "$PAPER_WIN" -t "$THREADS" 2>/dev/null)
echo "$paper_line" >> "$raw"
paper=$(echo "$paper_line" | awk '{print $2}')
{
    echo "# Dense perplexity, Jane Austen (r-cran-janeaustenr), $(basename "$MODEL")"
    echo
    echo "- date $(date -u +%F), dsinfer commit $(./dsinfer --version | cut -d" " -f2), $(nproc) cores, $THREADS threads"
    echo "- text sha256 $(cut -d' ' -f1 "$TEXT.sha256" 2>/dev/null || sha256sum "$TEXT" | cut -d' ' -f1)"
    echo "- command: eval/ppl-vs-llamacpp.sh --chunks $CHUNKS --paper-windows $PAPER_WIN (raw output beside this file)"
    echo
    echo "| protocol | windows | llama.cpp (llama-perplexity) | dsinfer | difference |"
    echo "|---|---|---|---|---|"
    python3 -c "l=$lc; d=$ds; print(f'| llama.cpp: -c 512, second half scored | $CHUNKS | {l:.4f} | {d:.4f} | {100*(d-l)/l:+.2f}% |')"
    echo "| paper: window 4096, every position scored | $PAPER_WIN | - | $paper | - |"
} > "$out"
cat "$out"
