#!/usr/bin/env bash
# Perplexity at an equal byte budget: one reference configuration (DS) and rows that spend about
# the same bytes per decode step in their own currency (more tokens for StreamingLLM and H2O,
# fewer K columns for SparQ, fewer pages for Quest), in one run of one binary, paper protocol, on
# Jane Austen:
#
#   eval/ppl-equal-bytes.sh [-m MODEL] [--window 4096] [--chunks 1] [-t THREADS] --name NAME
#                           --ref 'LABEL=FLAGS' 'LABEL=FLAGS' ...
#
# Each row carries its whole setting (e.g. 'h2o=--method h2o --ds-tokens 434'); the table gives
# every row's bytes per layer and step at n = window (as `dsinfer perplexity` counts them) and
# their ratio to the reference's, so a reader sees how equal the budgets are. Dense runs first.
# Writes eval/results/NAME.{csv,md}; a rerun skips the rows the CSV has (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
REF=""; ROWS=()
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --ref) REF=${2?"$1 needs a value"}; shift 2;;
        *) row_arg "$1"; shift;;
    esac
done
[ -n "$NAME" ] && [ -n "$REF" ] && [ "${REF#*=}" != "$REF" ] ||
    { echo "usage: see the header of $0 (--name and --ref LABEL=FLAGS are required)" >&2; exit 2; }
model_and_text
mkdir -p eval/results
csv=eval/results/$NAME.csv
[ -f "$csv" ] || echo "config,flags,ppl,scored_tokens,step_bytes_per_layer,method_line,seconds" > "$csv"

run() {  # label flags...
    local cfg=$1; shift
    grep -q "^$cfg," "$csv" && return 0
    local t0=$SECONDS
    ppl_run "$@" || { echo "FAILED: $cfg ($*)" >&2; return 0; }
    echo "$cfg,\"$*\",$PPL,$NTOK,$BYTES,\"$METH\",$((SECONDS - t0))" >> "$csv"
    echo "$cfg: $PPL, $BYTES bytes ($((SECONDS - t0)) s)" >&2
}

run dense --dense
# shellcheck disable=SC2086  # the rows' flags are split on purpose
run "${REF%%=*}" ${REF#*=}
for row in "${ROWS[@]}"; do
    # shellcheck disable=SC2086
    run "${row%%=*}" ${row#*=}
done

python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$("$BIN" --version | cut -d" " -f2)" "eval/results/$NAME" "$NAME" \
    "${REF%%=*}" <<'PY'
import csv, sys, os, datetime
path, model, window, chunks, commit, out, name, ref = sys.argv[1:9]
rows = [r for r in csv.DictReader(open(path)) if r["ppl"]]
dense = next(float(r["ppl"]) for r in rows if r["config"] == "dense")
rb = next(int(r["step_bytes_per_layer"]) for r in rows if r["config"] == ref)
L = [f"# Perplexity at an equal byte budget, {os.path.basename(model)}, Jane Austen (paper protocol)\n",
     f"- date {datetime.date.today()}, binary {commit}; windows of {window} tokens, {chunks} window(s), every "
     f"position scored with the method applied at every position; dense perplexity {dense:.4f}",
     f"- command: `eval/ppl-equal-bytes.sh -m {os.path.basename(model)} --window {window} --chunks {chunks} "
     f"--name {name} --ref '{ref}=FLAGS' ROWS` with the flags below; raw rows in {os.path.basename(path)}",
     f"- bytes: what one decode step reads per layer at n = {window} (double-sparsity.md §9, as `dsinfer "
     f"perplexity` prints it); ratio: against the reference, {ref}\n",
     "| config | flags | bytes per layer and step | ratio | perplexity | vs dense |", "|---|---|---|---|---|---|"]
for r in sorted((r for r in rows if r["config"] != "dense"), key=lambda r: (r["config"] != ref, float(r["ppl"]))):
    b = int(r["step_bytes_per_layer"])
    name_ = f"**{r['config']}**" if r["config"] == ref else r["config"]
    L.append(f"| {name_} | `{r['flags']}` | {b:,} | {b / rb:.3f} | {float(r['ppl']):.4f} | "
             f"{100 * (float(r['ppl']) - dense) / dense:+.2f}% |")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
