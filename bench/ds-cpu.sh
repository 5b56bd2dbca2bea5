#!/usr/bin/env bash
# CPU decode speed, dense vs Double Sparsity, over context depths, in one run on one machine.
#
#   bench/ds-cpu.sh [-m MODEL] [-t THREADS] [--depths 1024,2048,4096,8192] [--tg 64] [--ds-channels R]
#                   [--ds-group-score max|sum] [--name NAME]
#
# Writes bench/results/ds-cpu-<host>.md (NAME.md with --name): tok/s, bytes/token, GB/s and attention ms/token per
# depth for dense and for DS (k = n/16, 4-bit labels, the default channels unless --ds-channels:
# 32 on SmolLM2, 1/8 of the key bits; --ds-channels 16 gives the paper's 1/16; the group score
# DS's default unless --ds-group-score), with the
# speedups, and ds-cpu-<host>.svg: decode tok/s and attention ms/token over depth. The two
# sessions run alternately per depth so drift hits both. DSINFER=PATH runs a binary built
# elsewhere (for another machine with no compiler or libraries) instead of building ./dsinfer.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
MODEL=""; THREADS=2; DEPTHS="1024,2048,4096,8192"; TG=64; CH=(); GS=(); NAME=""
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        --depths) DEPTHS=${2?"$1 needs a value"}; shift 2;;
        --tg) TG=${2?"$1 needs a value"}; shift 2;;
        --ds-channels) CH=(--ds-channels "${2?"$1 needs a value"}"); shift 2;;
        --ds-group-score) GS=(--ds-group-score "${2?"$1 needs a value"}"); shift 2;;
        --name) NAME=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [--depths LIST] [--tg N] [--ds-channels R] [--ds-group-score max|sum] [--name NAME]" >&2; exit 2;;
    esac
done
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
BIN=${DSINFER:-./dsinfer}
[ -n "${DSINFER:-}" ] || make -s dsinfer
host=$(hostname -s 2>/dev/null || echo host)
out=bench/results/${NAME:-ds-cpu-$host}.md
raw=${out%.md}.raw.txt
: > "$raw"
for d in ${DEPTHS//,/ }; do
    "$BIN" bench -m "$MODEL" -t "$THREADS" --pp 0 --tg "$TG" --depths "$d" -r 3 --dense >> "$raw"
    "$BIN" bench -m "$MODEL" -t "$THREADS" --pp 0 --tg "$TG" --depths "$d" -r 3 --ds --ds-tokens 1/16 "${CH[@]}" "${GS[@]}" >> "$raw"
done
python3 - "$raw" "$MODEL" "$THREADS" "$("$BIN" --version | cut -d" " -f2)" "${out%.md}.svg" "${ARGS[@]}" > "$out" <<'PY'
import re, sys, datetime, os
raw, model, threads, commit, svg = sys.argv[1:6]
rows, method, bw = {}, None, None
for line in open(raw):
    m = re.match(r"attention: (.*)", line)
    if m: method = "dense" if m.group(1).startswith("dense") else m.group(1)
    m = re.search(r"measured read bandwidth ([\d.]+)", line)
    if m: bw = float(m.group(1))
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) == 7 and c[0].startswith("tg"):
        rows.setdefault(int(c[1]), {})["dense" if method == "dense" else "ds"] = (method, float(c[2]), float(c[3]), float(c[4]), c[5], float(c[6]))
print(f"# CPU decode: dense vs Double Sparsity ({os.path.basename(model)})\n")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
print(f"- date {datetime.date.today()}, commit {commit}, {cpu}, {os.cpu_count()} cores, {threads} threads; last measured read bandwidth {bw} GB/s")
ds_name = next((r['ds'][0] for r in rows.values() if 'ds' in r), 'ds')
print(f"- DS setting: {ds_name}; dense prefill, decode of random tokens (speed does not depend on values)")
print("- command: bench/ds-cpu.sh " + " ".join(sys.argv[6:]) + f" (raw `dsinfer bench` output beside this file; plot {os.path.basename(svg)})\n")
print("| depth | dense tok/s | DS tok/s | speedup | dense attn ms/tok | DS attn ms/tok | attn speedup | dense MB/tok | DS MB/tok | dense GB/s | DS GB/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted(rows):
    r = rows[d]
    if 'dense' not in r or 'ds' not in r: continue
    _, dt, dmb, dgb, _, da = r['dense']; _, st, smb, sgb, _, sa = r['ds']
    print(f"| {d} | {dt:.1f} | {st:.1f} | {st/dt:.2f}x | {da:.3f} | {sa:.3f} | {da/sa:.2f}x | {dmb:.1f} | {smb:.1f} | {dgb:.2f} | {sgb:.2f} |")

# two panels over depth (log2 x): decode tok/s and attention ms/token, dense and DS
depths = [d for d in sorted(rows) if 'dense' in rows[d] and 'ds' in rows[d]]
def panel(x0, title, idx):
    W, H, L, T, B = 420, 300, 60, 30, 40
    ys = [rows[d][m][idx] for d in depths for m in ('dense', 'ds')]
    top = max(ys) * 1.1 if ys else 1
    lo, hi = min(depths), max(depths)
    fx = lambda d: x0 + L + (W - L - 20) * (0.5 if hi == lo else (d.bit_length() - lo.bit_length()) / (hi.bit_length() - lo.bit_length()))
    fy = lambda v: T + (H - T - B) * (1 - v / top)
    out = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{x0 + L}" y1="{fy(0)}" x2="{x0 + W - 20}" y2="{fy(0)}" stroke="black"/>',
           f'<line x1="{x0 + L}" y1="{T}" x2="{x0 + L}" y2="{fy(0)}" stroke="black"/>']
    for i in range(5):
        v = top * i / 4
        out.append(f'<text x="{x0 + L - 5}" y="{fy(v) + 4}" text-anchor="end" font-size="11">{v:.3g}</text>')
    for d in depths:
        out.append(f'<text x="{fx(d)}" y="{fy(0) + 16}" text-anchor="middle" font-size="11">{d}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 5}" text-anchor="middle" font-size="12">context depth (tokens)</text>')
    for m, col in (('dense', '#1f77b4'), ('ds', '#d62728')):
        pts = " ".join(f"{fx(d):.1f},{fy(rows[d][m][idx]):.1f}" for d in depths)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2"/>')
        out += [f'<circle cx="{fx(d):.1f}" cy="{fy(rows[d][m][idx]):.1f}" r="3" fill="{col}"/>' for d in depths]
    return out
body = panel(0, "decode tokens/s", 1) + panel(440, "attention ms per token", 5)
body += ['<text x="500" y="50" font-size="12" fill="#1f77b4">dense</text>',
         f'<text x="500" y="66" font-size="12" fill="#d62728">{ds_name}</text>']
with open(svg, "w") as f:
    f.write('<svg xmlns="http://www.w3.org/2000/svg" width="880" height="300" font-family="sans-serif">\n'
            '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
PY
cat "$out"
