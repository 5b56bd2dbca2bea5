#!/usr/bin/env bash
# The rounding-noise band of one-window perplexity: each row (a label and its dsinfer flags) runs
# unshuffled and then under DSINFER_SEL_SHUFFLE=1..SEEDS, which attends the same selected rows in
# another order (src/sparse_diag.c). Only float rounding changes, and with it any near-tie of a
# later selection it flips; the spread of a row over its seeds is how far apart two settings must
# be before one window can tell them apart.
#
#   eval/ppl-noise.sh [-m MODEL] [--window 4096] [--chunks 1] [--seeds 3] [-t THREADS] --name NAME 'LABEL=FLAGS' ...
#
# Writes eval/results/NAME.{csv,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
SEEDS=3; ROWS=()
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --seeds) SEEDS=${2?"$1 needs a value"}; shift 2;;
        *) row_arg "$1"; shift;;
    esac
done
[ -n "$NAME" ] && [ ${#ROWS[@]} -gt 0 ] || { echo "usage: see the header of $0 (--name and rows are required)" >&2; exit 2; }
model_and_text
mkdir -p eval/results
csv=eval/results/$NAME.csv
echo "config,shuffle_seed,flags,ppl" > "$csv"
ppl_run --dense || { echo "dense run failed" >&2; exit 1; }
echo "dense,0,\"--dense\",$PPL" >> "$csv"
for row in "${ROWS[@]}"; do
    for sd in $(seq 0 "$SEEDS"); do
        # shellcheck disable=SC2086  # the row's flags are split on purpose
        if [ "$sd" = 0 ]; then ppl_run ${row#*=}; else DSINFER_SEL_SHUFFLE=$sd ppl_run ${row#*=}; fi ||
            { echo "FAILED: ${row%%=*} seed $sd" >&2; continue; }
        echo "${row%%=*},$sd,\"${row#*=}\",$PPL" >> "$csv"
        echo "${row%%=*} shuffle $sd: $PPL" >&2
    done
done
python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$("$BIN" --version | cut -d" " -f2)" "eval/results/$NAME" "$NAME" <<'PY'
import csv, sys, os, datetime
path, model, window, chunks, commit, out, name = sys.argv[1:8]
rows = list(csv.DictReader(open(path)))
dense = float(next(r["ppl"] for r in rows if r["config"] == "dense"))
cfgs = list(dict.fromkeys(r["config"] for r in rows if r["config"] != "dense"))
pct = lambda p: 100 * (float(p) - dense) / dense
L = [f"# Rounding noise of one-window perplexity, {os.path.basename(model)}, Jane Austen (paper protocol)\n",
     f"- date {datetime.date.today()}, binary {commit}; windows of {window} tokens, {chunks} window(s); dense {dense:.4f}",
     f"- command: `eval/ppl-noise.sh -m {os.path.basename(model)} --window {window} --chunks {chunks} --name {name} ROWS`; "
     "shuffle 0: the selection in the order the top-k leaves it; 1..N: DSINFER_SEL_SHUFFLE=N (the same rows, "
     "summed in another order)\n",
     "| config | flags | " + " | ".join(f"shuffle {r['shuffle_seed']}" for r in rows if r["config"] == cfgs[0]) +
     " | spread (points) |", "|---" * (3 + sum(r["config"] == cfgs[0] for r in rows)) + "|"]
for c in cfgs:
    rs = [r for r in rows if r["config"] == c]
    v = [pct(r["ppl"]) for r in rs]
    L.append(f"| {c} | `{rs[0]['flags']}` | " + " | ".join(f"{x:+.2f}%" for x in v) + f" | {max(v) - min(v):.2f} |")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
