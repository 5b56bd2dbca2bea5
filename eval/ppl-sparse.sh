#!/usr/bin/env bash
# Perplexity of sparse attention methods against dense on Jane Austen (paper protocol: every
# position of each window scored, the method applied at every position).
#
#   eval/ppl-sparse.sh [-m MODEL] [--window 2048] [--chunks 2] [--budgets 128] \
#                      [--methods dense,ds,oracle,random,streaming,sparq,quest,h2o] [--extra "--ds-label-bits 4"] [--name NAME]
#                      [-t THREADS] [--bin ./dsinfer]
#
# Budgets are token counts (the paper: k = 128 at window 2048) or fractions (1/16 = of the
# current context at each position). Calibration: the model's sidecar (the shipped one for
# SmolLM2; `dsinfer calibrate -f pydoc` for others), never Austen.
# The bytes column is what one decode step at the full window reads per layer running the method
# (K/V rows + selector metadata, `dsinfer perplexity`'s last field), to compare at equal bytes.
# Writes eval/results/NAME.md and .csv.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=""; WINDOW=2048; CHUNKS=2; BUDGETS=128; METHODS=dense,ds,oracle,random,streaming,sparq,quest,h2o; EXTRA=""; NAME=""; THREADS=2; BIN=./dsinfer
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=$2; shift 2;;
        --window) WINDOW=$2; shift 2;;
        --chunks) CHUNKS=$2; shift 2;;
        --budgets) BUDGETS=$2; shift 2;;
        --methods) METHODS=$2; shift 2;;
        --extra) EXTRA=$2; shift 2;;
        --name) NAME=$2; shift 2;;
        -t) THREADS=$2; shift 2;;
        --bin) BIN=$2; shift 2;;
        *) echo "usage: see the header of $0" >&2; exit 2;;
    esac
done
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
TEXT=$(scripts/fetch-text austen)
[ -n "$NAME" ] || NAME="ppl-sparse-$(basename "$MODEL" .gguf)-w$WINDOW"
[ "$BIN" != ./dsinfer ] || make -s dsinfer
md=eval/results/$NAME.md; csv=eval/results/$NAME.csv
mkdir -p eval/results
echo "method,budget,ppl,scored_tokens,step_bytes_per_layer" > "$csv"
dense_ppl=""
run_one() {  # method budget
    local args=()
    if [ "$1" = dense ]; then args=(--dense); else args=(--method "$1" --ds-tokens "$2"); fi
    # shellcheck disable=SC2086
    "$BIN" perplexity -m "$MODEL" -f "$TEXT" --protocol paper --window "$WINDOW" --chunks "$CHUNKS" \
        -t "$THREADS" "${args[@]}" $EXTRA 2>/dev/null
}
for meth in ${METHODS//,/ }; do
    for b in ${BUDGETS//,/ }; do
        line=$(run_one "$meth" "$b")
        ppl=$(echo "$line" | awk '{print $2}'); n=$(echo "$line" | awk '{print $4}')
        bytes=$(echo "$line" | sed -nE 's/.*decode step at n=[0-9]+: ([0-9]+),.*/\1/p')
        echo "$meth,$b,$ppl,$n,$bytes" >> "$csv"
        echo "$meth k=$b: $ppl" >&2
        [ "$meth" = dense ] && break
    done
done
python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$EXTRA" "$("$BIN" --version | cut -d" " -f2)" > "$md" <<'PY'
import csv, sys, os, datetime
path, model, window, chunks, extra, commit = sys.argv[1:7]
rows = list(csv.DictReader(open(path)))
dense = next((float(r["ppl"]) for r in rows if r["method"] == "dense"), None)
print(f"# Perplexity of sparse attention, {os.path.basename(model)}, Jane Austen\n")
print(f"- date {datetime.date.today()}, commit {commit}; paper protocol: windows of {window} tokens, "
      f"{chunks} windows, every position scored, the method applied at every position")
print(f"- calibration: the model's sidecar, calibrated on the Python 3.11 docs (the shipped one for SmolLM2; "
      f"identity: `dsinfer inspect`); extra flags: `{extra or 'none'}` (defaults: 4-bit labels, r = head_dim/4, "
      "qk statistic, labels normalised with the calibration's key moments, shared GQA selection, no dense layers)")
print(f"- command: `eval/ppl-sparse.sh -m {os.path.basename(model)} --window {window} --chunks {chunks} "
      f"--budgets {','.join(sorted({r['budget'] for r in rows if r['method'] != 'dense'}))} "
      f"--methods {','.join(dict.fromkeys(r['method'] for r in rows))}`\n")
print("| method | k | perplexity | vs dense | bytes/layer/step at n = window |\n|---|---|---|---|---|")
for r in rows:
    p = float(r["ppl"])
    rel = f"{100 * (p - dense) / dense:+.1f}%" if dense else "-"
    print(f"| {r['method']} | {'all' if r['method'] == 'dense' else r['budget']} | {p:.4f} | {rel} | {r.get('step_bytes_per_layer') or '-'} |")
PY
cat "$md"
