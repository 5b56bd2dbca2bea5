#!/usr/bin/env bash
# Decode speed of several attention settings at one depth, alternated round by round so that a
# machine's drift hits every setting alike; medians over the rounds, each against the first.
#
#   bench/ds-cpu-rounds.sh [-m MODEL] [-t THREADS] [--depth N] [--rounds N] [--tg N] [--name NAME]
#                          LABEL="BENCH FLAGS" [LABEL="BENCH FLAGS" ...]
#   e.g. bench/ds-cpu-rounds.sh dense="--dense" max="--ds --ds-tokens 1/16 --ds-channels 16" \
#                               sum="--ds --ds-tokens 1/16 --ds-channels 16 --ds-group-score sum"
#
# Writes bench/results/NAME.md (default ds-cpu-rounds-<host>) with every round's `dsinfer bench`
# line and a table of median tok/s and attention ms/token per setting, with the speedups over the
# first setting. DSINFER=PATH runs a binary built elsewhere instead of building ./dsinfer.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
MODEL=""; THREADS=2; DEPTH=8192; ROUNDS=3; TG=64; NAME=""; SETS=()
usage() { echo "usage: $0 [-m MODEL] [-t THREADS] [--depth N] [--rounds N] [--tg N] [--name NAME] LABEL=\"FLAGS\"..." >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        --depth) DEPTH=${2?"$1 needs a value"}; shift 2;;
        --rounds) ROUNDS=${2?"$1 needs a value"}; shift 2;;
        --tg) TG=${2?"$1 needs a value"}; shift 2;;
        --name) NAME=${2?"$1 needs a value"}; shift 2;;
        *=*) SETS+=("$1"); shift;;
        *) usage;;
    esac
done
[ ${#SETS[@]} -ge 1 ] || usage
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
BIN=${DSINFER:-./dsinfer}
[ -n "${DSINFER:-}" ] || make -s dsinfer
host=$(hostname -s 2>/dev/null || echo host)
out=bench/results/${NAME:-ds-cpu-rounds-$host}.md
raw=${out%.md}.raw.txt
: > "$raw"
for r in $(seq 1 "$ROUNDS"); do
    for s in "${SETS[@]}"; do
        label=${s%%=*}; flags=${s#*=}
        echo "== round $r $label: $flags" >> "$raw"
        # shellcheck disable=SC2086  # the flags are meant to split into words
        "$BIN" bench -m "$MODEL" -t "$THREADS" --pp 0 --tg "$TG" --depths "$DEPTH" -r 3 $flags >> "$raw"
    done
done
python3 - "$raw" "$MODEL" "$THREADS" "$("$BIN" --version | cut -d" " -f2)" "${ARGS[@]}" > "$out" <<'PY'
import re, sys, datetime, os, statistics
raw, model, threads, commit = sys.argv[1:5]
order, rows, lines, cur = [], {}, [], None
for line in open(raw):
    m = re.match(r"== round (\d+) (\S+): (.*)", line)
    if m:
        cur = m.group(2)
        if cur not in order: order.append(cur)
        continue
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if cur and len(c) == 7 and c[0].startswith("tg"):
        rows.setdefault(cur, []).append((float(c[2]), float(c[6])))
        lines.append(f"    {cur:8s} {line.strip()}")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
print(f"# CPU decode, settings alternated round by round ({os.path.basename(model)})\n")
print(f"- date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, {cpu}, {os.cpu_count()} cores, {threads} threads")
print("- command: bench/ds-cpu-rounds.sh " + " ".join(f'{a.split("=", 1)[0]}="{a.split("=", 1)[1]}"' if "=" in a else a for a in sys.argv[5:]))
print("- every round's line as `dsinfer bench` prints it (test, depth, tok/s, MB/token, GB/s, % of measured bandwidth, attention ms/token):\n")
print("\n".join(lines) + "\n")
print("| setting | rounds | tok/s (median) | attention ms/token (median) | decode speedup | attention speedup |")
print("|---|---|---|---|---|---|")
base = None
for s in order:
    v = rows.get(s, [])
    if not v: continue
    tps, att = statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)
    if base is None: base = (tps, att)
    print(f"| {s} | {len(v)} | {tps:.1f} | {att:.3f} | {tps / base[0]:.2f}x | {base[1] / att:.2f}x |")
PY
cat "$out"
