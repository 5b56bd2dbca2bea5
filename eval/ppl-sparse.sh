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
source eval/lib.sh
WINDOW=2048; CHUNKS=2; BUDGETS=128; METHODS=dense,ds,oracle,random,streaming,sparq,quest,h2o; EXTRA=""
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --budgets) BUDGETS=${2?"$1 needs a value"}; shift 2;;
        --methods) METHODS=${2?"$1 needs a value"}; shift 2;;
        --extra) EXTRA=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: see the header of $0" >&2; exit 2;;
    esac
done
model_and_text
[ -n "$NAME" ] || NAME="ppl-sparse-$(basename "$MODEL" .gguf)-w$WINDOW"
[ "$BIN" != ./dsinfer ] || make -s dsinfer
md=eval/results/$NAME.md; csv=eval/results/$NAME.csv
mkdir -p eval/results
echo "method,budget,ppl,scored_tokens,step_bytes_per_layer" > "$csv"
for meth in ${METHODS//,/ }; do
    for b in ${BUDGETS//,/ }; do
        args=(--method "$meth" --ds-tokens "$b"); [ "$meth" = dense ] && args=(--dense)
        # shellcheck disable=SC2086  # EXTRA's flags are split on purpose
        ppl_run "${args[@]}" $EXTRA || { echo "FAILED: $meth k=$b" >&2; PPL=; NTOK=; BYTES=; }
        echo "$meth,$b,$PPL,$NTOK,$BYTES" >> "$csv"
        echo "$meth k=$b: $PPL" >&2
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
