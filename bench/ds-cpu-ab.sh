#!/usr/bin/env bash
# CPU decode attention at one depth or several: dense, and DS at k = 1/16 with the group's largest
# head (the default) and the summed score, each with and without the label-scan prefetch,
# interleaved step by step on one prefilled context (bench/bench_decode_ab.c says why and how).
#
#   bench/ds-cpu-ab.sh [-m MODEL] [--calib FILE] [--depth N | --depths N,N,...] [--rounds N] [--tg N]
#                      [-t THREADS] [--channels N] [--name NAME]
#
# Writes bench/results/NAME.md (default ds-cpu-ab-<host>), and with several depths NAME.svg: the
# attention speedup over dense against depth per setting. The calibration defaults to the repo's
# calib/<model file>.dscal.json. BENCH_AB=PATH runs a bench_decode_ab built elsewhere (COMMIT=
# names the commit it was built at).
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
MODEL=""; CALIB=""; DEPTH=8192; ROUNDS=9; TG=16; THREADS=2; CH=16; NAME=""
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=${2?"$1 needs a value"}; shift 2;;
        --calib) CALIB=${2?"$1 needs a value"}; shift 2;;
        --depth|--depths) DEPTH=${2?"$1 needs a value"}; shift 2;;
        --rounds) ROUNDS=${2?"$1 needs a value"}; shift 2;;
        --tg) TG=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        --channels) CH=${2?"$1 needs a value"}; shift 2;;
        --name) NAME=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: $0 [-m MODEL] [--calib FILE] [--depth N | --depths N,N,...] [--rounds N] [--tg N] [-t THREADS] [--channels N] [--name NAME]" >&2; exit 2;;
    esac
done
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
[ -n "$CALIB" ] || CALIB=calib/$(basename "$MODEL").dscal.json
BIN=${BENCH_AB:-}
if [ -z "$BIN" ]; then
    make -s build/libdsinfer.a
    BIN=build/bench_decode_ab
    cc -std=c11 -O2 -Iinclude bench/bench_decode_ab.c build/libdsinfer.a -lcjson -lm -pthread -o "$BIN"
fi
if [ -n "${COMMIT:-}" ]; then commit=$COMMIT   # a binary built elsewhere: its commit
else
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit (modified)"
fi
host=$(hostname -s 2>/dev/null || echo host)
out=bench/results/${NAME:-ds-cpu-ab-$host}.md
table=$("$BIN" "$MODEL" "$CALIB" "$DEPTH" "$ROUNDS" "$TG" "$THREADS" "$CH")
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
{
    echo "# CPU decode attention, settings interleaved step by step ($(basename "$MODEL"))"
    echo
    echo "- date $(date -u '+%Y-%m-%d %H:%M') UTC, commit $commit, ${cpu:-unknown CPU}, $(nproc) cores, $THREADS threads"
    echo "- command: bench/ds-cpu-ab.sh ${ARGS[*]}"
    echo "- attention: wall time in attention (selection included) per decoded token, as \`dsinfer bench\` reports it"
    echo
    echo "$table"
} > "$out"
if [[ "$DEPTH" == *,* ]]; then
    python3 - "$out" "${out%.md}.svg" <<'PY'
import sys
md, svg = sys.argv[1:3]
rows, names, on = [], [], False
for line in open(md):
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if c and c[0] == "depth" and len(c) == 6: names, on = c[2:], True; continue
    if on and len(c) == 6 and c[0].isdigit():
        rows.append((int(c[0]), [float(x.split("(")[1].rstrip("x)")) for x in c[2:]]))
W, H, L, T, B = 620, 340, 60, 30, 44
top = max([8.0] + [v for _, vs in rows for v in vs]) * 1.1
lo, hi = rows[0][0], rows[-1][0]
fx = lambda d: L + (W - L - 170) * (0.5 if hi == lo else (d.bit_length() - lo.bit_length()) / (hi.bit_length() - lo.bit_length()))
fy = lambda v: T + (H - T - B) * (1 - v / top)
out = ['<text x="%d" y="18" text-anchor="middle" font-size="14">attention speedup over dense (interleaved)</text>' % ((W - 110) / 2),
       f'<line x1="{L}" y1="{fy(0)}" x2="{W - 170}" y2="{fy(0)}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{fy(0)}" stroke="black"/>',
       f'<line x1="{L}" y1="{fy(8):.1f}" x2="{W - 170}" y2="{fy(8):.1f}" stroke="gray" stroke-dasharray="4,3"/>',
       f'<text x="{W - 165}" y="{fy(8) + 4:.1f}" font-size="11" fill="gray">8x goal</text>']
for i in range(5):
    v = top * i / 4
    out.append(f'<text x="{L - 5}" y="{fy(v) + 4:.1f}" text-anchor="end" font-size="11">{v:.3g}x</text>')
for d, _ in rows:
    out.append(f'<text x="{fx(d):.1f}" y="{fy(0) + 16:.1f}" text-anchor="middle" font-size="11">{d}</text>')
out.append(f'<text x="{(W - 110) / 2}" y="{H - 6}" text-anchor="middle" font-size="12">context depth (tokens)</text>')
for k, (name, col) in enumerate(zip(names, ("#d62728", "#ff9896", "#1f77b4", "#aec7e8"))):
    pts = " ".join(f"{fx(d):.1f},{fy(vs[k]):.1f}" for d, vs in rows)
    out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
    out += [f'<circle cx="{fx(d):.1f}" cy="{fy(vs[k]):.1f}" r="3" fill="{col}"/>' for d, vs in rows]
    out.append(f'<text x="{W - 165}" y="{T + 20 + 16 * k}" font-size="12" fill="{col}">{name}</text>')
with open(svg, "w") as f:
    f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">\n'
            '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n")
PY
fi
cat "$out"
