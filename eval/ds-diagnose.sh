#!/usr/bin/env bash
# Where Double Sparsity loses accuracy on a model, in perplexity (paper protocol on Jane Austen,
# k tokens per step): the selection with every channel as label (fp16: the exact scores, so
# it must match the oracle; 4-bit: label quantisation alone), then the calibrated channels at
# the 1/16 setting (head_dim/4 channels at 4 bits) against the same channels at fp16 (channel
# choice alone), and head_dim/16 channels at fp16 and head_dim/8 at 8 bits (the other ways to
# spend 1/16 of the key bits); then the same with --ds-label-norm (labels normalised per channel
# with the calibration's key moments). Rows other than "-norm" pass --no-ds-label-norm: raw labels.
#
#   eval/ds-diagnose.sh [-m MODEL] [--window 2048] [--tokens 128] [--stats qk,qkv] [-t THREADS] [--name NAME]
#
# Needs the model's calibration (MODEL.gguf.dscal.json beside it, or the shipped one). Writes
# eval/results/ds-diagnose-MODEL-wWINDOW.{csv,md}; the CSV is appended as rows finish and a
# rerun skips the rows it has.
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
WINDOW=2048; TOKENS=128; STATS=qk,qkv
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --tokens) TOKENS=${2?"$1 needs a value"}; shift 2;;
        --stats) STATS=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: see the header of $0" >&2; exit 2;;
    esac
done
model_and_text
HD=$(head_dim)
[ -n "$NAME" ] || NAME="ds-diagnose-$(basename "$MODEL" .gguf)-w$WINDOW"
csv=eval/results/$NAME.csv md=eval/results/$NAME.md
mkdir -p eval/results
[ -f "$csv" ] || echo "row,what,ppl,seconds" > "$csv"

run() {  # row what -- perplexity flags
    local row=$1 what=$2; shift 2
    grep -q "^$row," "$csv" && return 0
    local t0=$SECONDS
    ppl_run "$@" || { echo "FAILED: $row" >&2; return 0; }
    echo "$row,\"$what\",$PPL,$((SECONDS - t0))" >> "$csv"
    echo "$row: $PPL ($((SECONDS - t0)) s)" >&2
}

# no recent window in any row (--ds-recent 0; DS and random take one by default): the rows then
# isolate the label scores, and every channel at fp16 selects what the oracle selects
K=(--ds-tokens "$TOKENS" --ds-recent 0)
run dense "dense attention" --dense
run oracle "exact top-k (oracle)" --method oracle "${K[@]}"
# every channel as label: --method random with r = head_dim selects all of them
run all-16 "all $HD channels, fp16 labels (= exact scores up to fp16)" --method random --ds-channels "$HD" --ds-label-bits 16 "${K[@]}"
run all-4 "all $HD channels, 4-bit labels (label quantisation alone)" --method random --ds-channels "$HD" --ds-label-bits 4 "${K[@]}"
# --ds-label-norm: each channel's calibrated mean subtracted and std divided out before the
# per-token min/max quantisation (needs a calibration with key moments)
run all-4-norm "all $HD channels, 4-bit labels, normalised" --method ds --ds-stat qkv --ds-channels "$HD" --ds-label-bits 4 --ds-label-norm "${K[@]}"
for st in ${STATS//,/ }; do
    run "$st-r$((HD / 4))-4" "$st: $((HD / 4)) channels, 4-bit (1/16 of the key bits)" --method ds --ds-stat "$st" --ds-channels $((HD / 4)) --ds-label-bits 4 --no-ds-label-norm "${K[@]}"
    run "$st-r$((HD / 4))-16" "$st: $((HD / 4)) channels, fp16 (channel choice alone)" --method ds --ds-stat "$st" --ds-channels $((HD / 4)) --ds-label-bits 16 --no-ds-label-norm "${K[@]}"
    run "$st-r$((HD / 16))-16" "$st: $((HD / 16)) channels, fp16 (1/16 of the key bits)" --method ds --ds-stat "$st" --ds-channels $((HD / 16)) --ds-label-bits 16 --no-ds-label-norm "${K[@]}"
    run "$st-r$((HD / 8))-8" "$st: $((HD / 8)) channels, 8-bit (1/16 of the key bits)" --method ds --ds-stat "$st" --ds-channels $((HD / 8)) --ds-label-bits 8 --no-ds-label-norm "${K[@]}"
    run "$st-r$((HD / 4))-4-norm" "$st: $((HD / 4)) channels, 4-bit, normalised (1/16 of the key bits)" --method ds --ds-stat "$st" --ds-channels $((HD / 4)) --ds-label-bits 4 --ds-label-norm "${K[@]}"
done
run random-r$((HD / 4))-4 "random $((HD / 4)) channels, 4-bit" --method random --ds-channels $((HD / 4)) --ds-label-bits 4 "${K[@]}"

dense=$(awk -F, '$1 == "dense" {print $3}' "$csv")
{
    echo "# Where Double Sparsity loses perplexity: $(basename "$MODEL")"
    echo
    echo "- date $(date -u +%Y-%m-%d), binary built at commit $("$BIN" --version | cut -d" " -f2); Jane Austen, paper protocol, one window of $WINDOW tokens, k = $TOKENS tokens per step, shared GQA selection, no dense layers; calibration: the model's sidecar (see its text identity with \`dsinfer inspect\`)"
    echo "- command: \`eval/ds-diagnose.sh -m MODEL --window $WINDOW --tokens $TOKENS --stats $STATS -t $THREADS\`; raw rows in $NAME.csv"
    echo
    echo "| selection | perplexity | vs dense |"
    echo "|---|---|---|"
    tail -n +2 "$csv" | while IFS=, read -r row rest; do
        what=$(echo "$rest" | sed -E 's/^"(.*)",([^,]*),([^,]*)$/\1/')
        ppl=$(echo "$rest" | sed -E 's/^".*",([^,]*),([^,]*)$/\1/')
        awk -v w="$what" -v p="$ppl" -v d="$dense" 'BEGIN { printf "| %s | %.4f | %+.1f%% |\n", w, p, (p / d - 1) * 100 }'
    done
} > "$md"
cat "$md"
