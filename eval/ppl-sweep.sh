#!/usr/bin/env bash
# The perplexity sweep of Double Sparsity and every baseline (paper protocol: every position of
# each window scored, the method applied at every position), on Jane Austen, calibration on the
# Python docs (the shipped file):
#   DS: token budgets x label bits {1/16, 1/8 of the key bits} x statistic {q, k, qk, qkv} x
#       group {shared, per-head} x labels {raw, normalised (--ds-label-norm)}; DS with layers 0,1
#       dense; every baseline at the same budgets.
#
#   eval/ppl-sweep.sh [-m MODEL] [--window 4096] [--chunks 1] [--budgets 256,128,512,1024]
#                     [--stats q,k,qk,qkv] [--groups shared,per-head] [--labels raw,norm] [--core]
#                     [-t THREADS] [--name NAME]
#
# Every DS row names its label mode explicitly (raw rows pass --no-ds-label-norm, normalised rows
# end in "-norm"), so rows written before normalisation became the default keep their meaning.
#
# Budgets are token counts per step (the paper's k = 128 at window 2048 is 1/16 of the window),
# run in the order given (1/16 first, so an interrupted sweep has the headline column).
# --core: only dense, DS at 1/16 label bits with qk and qkv (shared, each label mode), and the baselines (the rows
# run for a larger model). Writes eval/results/NAME.{csv,md,svg}; the CSV is appended as it goes
# and a rerun skips the rows it already has, so an interrupted sweep resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
BUDGETS=256,128,512,1024; STATS=q,k,qk,qkv; GRPS=shared,per-head; LABELS=raw,norm; CORE=0
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --budgets) BUDGETS=${2?"$1 needs a value"}; shift 2;;
        --stats) STATS=${2?"$1 needs a value"}; shift 2;;
        --groups) GRPS=${2?"$1 needs a value"}; shift 2;;
        --labels) LABELS=${2?"$1 needs a value"}; shift 2;;
        --core) CORE=1; shift;;
        *) echo "usage: see the header of $0" >&2; exit 2;;
    esac
done
model_and_text
[ -n "$NAME" ] || NAME="ppl-sweep-$(basename "$MODEL" .gguf)-w$WINDOW"
HD=$(head_dim)
R16=$((HD / 4)); R8=$((HD / 2))      # 4-bit labels: 1/16 and 1/8 of the key bits (fp16 keys)
mkdir -p eval/results
csv=eval/results/$NAME.csv
[ -f "$csv" ] || echo "config,method,budget,label_bits,stat,group,dense_layers,ppl,scored_tokens,step_bytes_per_layer,seconds" > "$csv"

run() {  # config method budget labelfrac stat group dense_layers -- extra flags...
    local cfg=$1 meth=$2 b=$3 lf=$4 st=$5 gr=$6 dl=$7; shift 7
    grep -q "^$cfg,$meth,$b," "$csv" && return 0
    local t0=$SECONDS
    ppl_run "$@" || { echo "FAILED: $cfg $meth $b" >&2; return 0; }
    echo "$cfg,$meth,$b,$lf,$st,$gr,$dl,$PPL,$NTOK,$BYTES,$((SECONDS - t0))" >> "$csv"
    echo "$cfg $meth k=$b: $PPL ($((SECONDS - t0)) s)" >&2
}

lab_flag() { [ "$1" = norm ] && echo --ds-label-norm || echo --no-ds-label-norm; }
lab_sfx() { [ "$1" = norm ] && echo -norm || true; }
run dense dense all - - - - --dense
for b in ${BUDGETS//,/ }; do
    for lab in ${LABELS//,/ }; do
        if [ "$CORE" = 1 ]; then
            for st in qk qkv; do
                run "ds-1/16-$st-shared$(lab_sfx $lab)" ds "$b" 1/16 "$st" shared none --method ds --ds-tokens "$b" \
                    --ds-channels $R16 --ds-label-bits 4 --ds-stat "$st" "$(lab_flag $lab)"
            done
        else
            for lf in 1/16 1/8; do
                r=$R16; [ "$lf" = 1/8 ] && r=$R8
                for st in ${STATS//,/ }; do
                    for gr in ${GRPS//,/ }; do
                        run "ds-$lf-$st-$gr$(lab_sfx $lab)" ds "$b" "$lf" "$st" "$gr" none --method ds --ds-tokens "$b" \
                            --ds-channels $r --ds-label-bits 4 --ds-stat "$st" --ds-group "$gr" "$(lab_flag $lab)"
                    done
                done
            done
            run "ds-1/16-qkv-shared-dense01$(lab_sfx $lab)" ds "$b" 1/16 qkv shared 0+1 --method ds --ds-tokens "$b" \
                --ds-channels $R16 --ds-label-bits 4 --ds-stat qkv --ds-dense-layers 0,1 "$(lab_flag $lab)"
        fi
    done
    for meth in oracle random streaming sparq quest h2o; do
        run "$meth" "$meth" "$b" - - shared none --method "$meth" --ds-tokens "$b" --ds-channels $R16 --ds-label-bits 4
    done
done

python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$("$BIN" --version | cut -d" " -f2)" "eval/results/$NAME" <<'PY'
import csv, sys, os, datetime
path, model, window, chunks, commit, out = sys.argv[1:7]
rows = list(csv.DictReader(open(path)))
dense = next(float(r["ppl"]) for r in rows if r["method"] == "dense")
budgets = sorted({int(r["budget"]) for r in rows if r["budget"] != "all"}, reverse=True)
cfgs = []
for r in rows:
    if r["config"] != "dense" and r["config"] not in cfgs: cfgs.append(r["config"])
val = {(r["config"], r["budget"]): r for r in rows}
L = []
L.append(f"# Perplexity sweep, {os.path.basename(model)}, Jane Austen (paper protocol)\n")
L.append(f"- date {datetime.date.today()}, commit {commit}; windows of {window} tokens, {chunks} window(s), every "
         f"position scored with the method applied at every position; dense perplexity {dense:.4f}")
L.append("- calibration: the shipped one (calib/, Python 3.11 docs, 131072 tokens); labels at 4 bits: 1/16 of the key "
         "bits = head_dim/4 channels, 1/8 = head_dim/2; baselines that take r (random, sparq) use head_dim/4")
L.append(f"- command: `eval/ppl-sweep.sh --window {window} --chunks {chunks}`; raw rows in {os.path.basename(path)}")
L.append("- config names: ds-LABELBITS-STAT-GROUP[-dense01][-norm]: labels at 4 bits, 1/16 = head_dim/4 channels, "
         "1/8 = head_dim/2; dense01 = layers 0 and 1 kept dense; -norm = labels normalised per channel with the "
         "calibration's key moments (--ds-label-norm), else raw key values (--no-ds-label-norm)")
L.append("- cells: perplexity change vs dense; columns are the token budget k (fraction of the window); "
         "bytes = what one decode step reads per layer at n = window (double-sparsity.md §9), vs dense\n")
hdr = "| config | " + " | ".join(f"k={b} ({int(window)//b and f'1/{int(window)//b}'})" for b in budgets) + " | bytes at k=1/16 |"
L.append(hdr)
L.append("|---" * (len(budgets) + 2) + "|")
sixteenth = int(window) // 16
dense_bytes = None
for cfg in cfgs:
    cells = []
    for b in budgets:
        r = val.get((cfg, str(b)))
        cells.append(f"{100 * (float(r['ppl']) - dense) / dense:+.1f}%" if r and r["ppl"] else "-")
    r16 = val.get((cfg, str(sixteenth)))
    by = r16["step_bytes_per_layer"] if r16 else ""
    L.append(f"| {cfg} | " + " | ".join(cells) + f" | {by} |")
# best method at 1/16
cands = [(float(val[(c, str(sixteenth))]["ppl"]), c) for c in cfgs if (c, str(sixteenth)) in val and val[(c, str(sixteenth))]["ppl"]]
if cands:
    p, c = min(cands)
    L.append(f"\nBest at k = {sixteenth} (1/16): **{c}**, {p:.4f} ({100 * (p - dense) / dense:+.1f}%).")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
# SVG: perplexity vs budget per config (log2 x)
W, H, m = 760, 420, 60
allp = [float(r["ppl"]) for r in rows if r["ppl"]]
lo, hi = dense * 0.98, min(max(allp), dense * 2.0)
import math
def X(b): return m + (math.log2(budgets[0]) - math.log2(b)) / max(1e-9, math.log2(budgets[0]) - math.log2(budgets[-1])) * (W - 2 * m - 160)
def Y(p): return H - m - (min(p, hi) - lo) / (hi - lo) * (H - 2 * m)
pal = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf"]
show = [c for c in cfgs if c.startswith("ds-1/16") and (c.endswith("shared") or c.endswith("shared-norm"))
        or not c.startswith("ds-") or c.endswith("dense01")]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="13">Perplexity vs token budget ({os.path.basename(model)}, window {window}; capped at 2x dense)</text>',
       f'<line x1="{m}" y1="{Y(dense)}" x2="{W-m-160}" y2="{Y(dense)}" stroke="black" stroke-dasharray="4,3"/>',
       f'<text x="{W-m-158}" y="{Y(dense)+4}">dense {dense:.2f}</text>']
for b in budgets:
    svg.append(f'<text x="{X(b)}" y="{H-m+16}" text-anchor="middle">{b}</text>')
svg.append(f'<text x="{(W-160)/2}" y="{H-m+32}" text-anchor="middle">k (tokens attended per step)</text>')
for i in range(5):
    p = lo + (hi - lo) * i / 4
    svg.append(f'<text x="{m-6}" y="{Y(p)+4}" text-anchor="end">{p:.1f}</text>')
for j, c in enumerate(show):
    pts = [(X(b), Y(float(val[(c, str(b))]["ppl"]))) for b in budgets if (c, str(b)) in val and val[(c, str(b))]["ppl"]]
    if not pts: continue
    col = pal[j % len(pal)]
    svg.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
    svg.append(f'<text x="{W-m-150}" y="{40 + 14 * j}" fill="{col}">{c}</text>')
svg.append("</svg>")
open(out + ".svg", "w").write("\n".join(svg) + "\n")
PY
