#!/usr/bin/env bash
# Per-layer label widths (--ds-channel-alloc) against the uniform width, by perplexity (paper
# protocol: every position of the window scored, DS applied at every position), on Jane Austen
# with the calibration the model uses (for SmolLM2 the shipped one, made on the Python docs):
#   dense; DS at R channels for each R in --widths, each statistic in --stats, uniform and with
#   --ds-channel-alloc; at each token budget in --budgets.
#
#   eval/ppl-alloc.sh [-m MODEL] [--window 4096] [--chunks 1] [--budgets 256,512,128]
#                     [--widths 32,16] [--stats qk,mass] [-t THREADS] [--name NAME]
#
# Writes eval/results/NAME.{csv,md}; the CSV is appended row by row and a rerun skips the rows it
# has, so an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
source eval/lib.sh
BUDGETS=256,512,128; WIDTHS=32,16; STATS=qk,mass
while [ $# -gt 0 ]; do
    common_opt "$@"; [ "$SHIFT" = 0 ] || { shift "$SHIFT"; continue; }
    case "$1" in
        --budgets) BUDGETS=${2?"$1 needs a value"}; shift 2;;
        --widths) WIDTHS=${2?"$1 needs a value"}; shift 2;;
        --stats) STATS=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: see the header of $0" >&2; exit 2;;
    esac
done
model_and_text
[ -n "$NAME" ] || NAME="ppl-alloc-$(basename "$MODEL" .gguf)-w$WINDOW"
mkdir -p eval/results
csv=eval/results/$NAME.csv
[ -f "$csv" ] || echo "config,budget,channels,stat,alloc,ppl,scored_tokens,step_bytes_per_layer,seconds" > "$csv"

run() {  # config budget channels stat alloc -- flags...
    local cfg=$1 b=$2 r=$3 st=$4 al=$5; shift 5
    grep -q "^$cfg,$b," "$csv" && return 0
    local t0=$SECONDS
    ppl_run "$@" || { echo "FAILED: $cfg k=$b" >&2; return 0; }
    echo "$cfg,$b,$r,$st,$al,$PPL,$NTOK,$BYTES,$((SECONDS - t0))" >> "$csv"
    echo "$cfg k=$b: $PPL ($((SECONDS - t0)) s)" >&2
}

run dense all - - - --dense
for b in ${BUDGETS//,/ }; do
    for r in ${WIDTHS//,/ }; do
        for st in ${STATS//,/ }; do
            run "ds-r$r-$st" "$b" "$r" "$st" no --method ds --ds-tokens "$b" --ds-channels "$r" --ds-stat "$st"
            run "ds-r$r-$st-alloc" "$b" "$r" "$st" yes --method ds --ds-tokens "$b" --ds-channels "$r" --ds-stat "$st" \
                --ds-channel-alloc
        done
    done
done

python3 - "$csv" "$MODEL" "$WINDOW" "$CHUNKS" "$("$BIN" --version | cut -d" " -f2)" "eval/results/$NAME" "$BIN" <<'PY'
import csv, sys, os, datetime, subprocess
path, model, window, chunks, commit, out, binary = sys.argv[1:8]
rows = list(csv.DictReader(open(path)))
dense = next(float(r["ppl"]) for r in rows if r["config"] == "dense")
budgets = sorted({int(r["budget"]) for r in rows if r["budget"] != "all"}, reverse=True)
cfgs = []
for r in rows:
    if r["config"] != "dense" and r["config"] not in cfgs: cfgs.append(r["config"])
val = {(r["config"], r["budget"]): r for r in rows}
L = [f"# Per-layer label widths, {os.path.basename(model)}, Jane Austen (paper protocol)\n",
     f"- date {datetime.date.today()}, commit {commit}; windows of {window} tokens, {chunks} window(s), every position "
     f"scored with the method applied at every position; dense perplexity {dense:.4f}",
     f"- command: `eval/ppl-alloc.sh -m {os.path.basename(model)} --window {window} --chunks {chunks}`; raw rows in "
     f"{os.path.basename(path)}",
     "- config ds-rR-STAT[-alloc]: R label channels per KV head at 4 bits, ranked by STAT; -alloc: per-layer widths "
     "(--ds-channel-alloc) with the same total, by the calibration's curves for STAT; labels normalised (the default)",
     "- cells: perplexity change vs dense; columns: token budget k; bytes: what one decode step reads per layer at "
     "n = window, mean over layers\n"]
L.append("| config | " + " | ".join(f"k={b} (1/{int(window) // b})" for b in budgets) + " | bytes at the first budget |")
L.append("|---" * (len(budgets) + 2) + "|")
for cfg in cfgs:
    cells = []
    for b in budgets:
        r = val.get((cfg, str(b)))
        cells.append(f"{100 * (float(r['ppl']) - dense) / dense:+.2f}%" if r and r["ppl"] else "-")
    r0 = next((val[(cfg, str(b))] for b in budgets if (cfg, str(b)) in val), None)
    L.append(f"| {cfg} | " + " | ".join(cells) + f" | {r0['step_bytes_per_layer'] if r0 else ''} |")
# the widths each -alloc row used
L.append("\nWidths per layer with --ds-channel-alloc:\n")
for cfg in cfgs:
    if not cfg.endswith("-alloc"): continue
    r = next(v for (c, _), v in val.items() if c == cfg)
    try:
        o = subprocess.run([binary, "inspect", "-m", model, "-c", "64", "--ds", "--ds-channels", r["channels"],
                            "--ds-stat", r["stat"], "--ds-channel-alloc"], capture_output=True, text=True).stdout
        w = next(l.split(":", 1)[1].strip() for l in o.splitlines() if l.startswith("label channels per layer"))
    except Exception:
        w = "(inspect failed)"
    L.append(f"- {cfg}: {w}")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
