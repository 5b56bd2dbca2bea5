#!/usr/bin/env bash
# Perplexity of any set of method configurations at several token budgets, against dense, in one
# run of one binary (paper protocol: every position of the window scored, the method applied at
# every position), on Jane Austen with the calibration the model uses:
#
#   eval/ppl-rows.sh [-m MODEL] [--window 4096] [--chunks 1] [--budgets 512,256,128] [-t THREADS]
#                    --name NAME  'LABEL=FLAGS' ...
#
# Each row is a label and the dsinfer flags that make it (e.g. 'ds-r32=--method ds --ds-channels
# 32'); it runs at every budget with --ds-tokens B added. Dense runs once, first.
# Writes eval/results/NAME.{csv,md,svg}; the CSV is appended row by row and a rerun skips the rows
# it has, so an interrupted run resumes (delete the CSV to start over with another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
BUDGETS=512,256,128; ROWS=()
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --budgets) BUDGETS=${2?"$1 needs a value"}; shift 2;;
        *) row_arg "$1"; shift;;
    esac
done
[ -n "$NAME" ] && [ ${#ROWS[@]} -gt 0 ] || { echo "usage: see the header of $0 (--name and rows are required)" >&2; exit 2; }
model_and_text
mkdir -p eval/results
csv=eval/results/$NAME.csv
[ -f "$csv" ] || echo "config,budget,flags,ppl,scored_tokens,step_bytes_per_layer,method_line,seconds" > "$csv"

run() {  # label budget -- flags...
    local cfg=$1 b=$2; shift 2
    grep -q "^$cfg,$b," "$csv" && return 0
    local t0=$SECONDS
    ppl_run "$@" || { echo "FAILED: $cfg k=$b ($*)" >&2; return 0; }
    echo "$cfg,$b,\"$*\",$PPL,$NTOK,$BYTES,\"$METH\",$((SECONDS - t0))" >> "$csv"
    echo "$cfg k=$b: $PPL ($((SECONDS - t0)) s)" >&2
}

run dense all --dense
for b in ${BUDGETS//,/ }; do
    for row in "${ROWS[@]}"; do
        # shellcheck disable=SC2086  # the row's flags are split on purpose
        run "${row%%=*}" "$b" ${row#*=} --ds-tokens "$b"
    done
done

python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$("$BIN" --version | cut -d" " -f2)" "eval/results/$NAME" "$NAME" <<'PY'
import csv, sys, os, datetime
path, model, window, chunks, commit, out, name = sys.argv[1:8]
rows = list(csv.DictReader(open(path)))
dense = next(float(r["ppl"]) for r in rows if r["config"] == "dense")
budgets = sorted({int(r["budget"]) for r in rows if r["budget"] != "all"}, reverse=True)
bb = int(window) // 16 if int(window) // 16 in budgets else budgets[0]   # the budget the bytes column is at
cfgs = []
for r in rows:
    if r["config"] != "dense" and r["config"] not in cfgs: cfgs.append(r["config"])
val = {(r["config"], r["budget"]): r for r in rows}
pct = lambda r: 100 * (float(r["ppl"]) - dense) / dense
L = [f"# Perplexity by configuration, {os.path.basename(model)}, Jane Austen (paper protocol)\n",
     f"- date {datetime.date.today()}, binary {commit}; windows of {window} tokens, {chunks} window(s), every "
     f"position scored with the method applied at every position; dense perplexity {dense:.4f}",
     f"- command: `eval/ppl-rows.sh -m {os.path.basename(model)} --window {window} --chunks {chunks} --budgets "
     f"{','.join(map(str, budgets))} --name {name} ROWS` with the rows below; raw rows (flags, the method as "
     f"perplexity printed it, seconds) in {os.path.basename(path)}",
     "- cells: perplexity change vs dense; columns: token budget k; bytes: what one decode step reads per layer at "
     f"n = window, at k = {bb} (1/{int(window) // bb})\n",
     "| config | flags | " + " | ".join(f"k={b} (1/{int(window) // b})" for b in budgets) + " | bytes |",
     "|---" * (len(budgets) + 3) + "|"]
for cfg in cfgs:
    cells = [f"{pct(val[(cfg, str(b))]):+.2f}%" if (cfg, str(b)) in val and val[(cfg, str(b))]["ppl"] else "-"
             for b in budgets]
    r0 = next(val[(cfg, str(b))] for b in budgets if (cfg, str(b)) in val)
    rb = val.get((cfg, str(bb)))
    L.append(f"| {cfg} | `{r0['flags'].replace(' --ds-tokens ' + r0['budget'], '')}` | " + " | ".join(cells) +
             f" | {rb['step_bytes_per_layer'] if rb else '-'} |")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
# plot: perplexity change vs k per configuration, log-2 x axis
import math
W, H, m = 760, 420, 56
xs = [math.log2(b) for b in budgets]
ys = [pct(r) for r in rows if r["config"] != "dense" and r["ppl"]]
x0, x1 = min(xs) - 0.2, max(xs) + 0.2
y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 + 0.1
X = lambda b: m + (math.log2(b) - x0) / (x1 - x0) * (W - 2 * m - 170)
Y = lambda p: H - m - (p - y0) / (y1 - y0) * (H - 2 * m)
cols = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{m}" y="20" font-size="13">{os.path.basename(model)}: perplexity change vs dense ({dense:.3f}), '
       f'window {window}</text>',
       f'<line x1="{m}" y1="{H-m}" x2="{W-m-170}" y2="{H-m}" stroke="black"/>',
       f'<line x1="{m}" y1="{m}" x2="{m}" y2="{H-m}" stroke="black"/>']
for b in budgets:
    svg.append(f'<text x="{X(b):.1f}" y="{H-m+16}" text-anchor="middle">{b}</text>')
svg.append(f'<text x="{(W-170)/2}" y="{H-m+32}" text-anchor="middle">k (tokens attended per step)</text>')
for i in range(6):
    p = y0 + (y1 - y0) * i / 5
    svg.append(f'<text x="{m-6}" y="{Y(p)+4:.1f}" text-anchor="end">{p:+.1f}%</text>')
for j, cfg in enumerate(cfgs):
    col = cols[j % len(cols)]
    dash = ' stroke-dasharray="5,3"' if j >= len(cols) else ""
    pts = [(X(b), Y(pct(val[(cfg, str(b))]))) for b in budgets if (cfg, str(b)) in val and val[(cfg, str(b))]["ppl"]]
    svg.append(f'<polyline fill="none" stroke="{col}" stroke-width="2"{dash} points="'
               + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    svg.append(f'<text x="{W-m-160}" y="{40 + 14 * j}" fill="{col}">{cfg}</text>')
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg) + "\n")
PY
