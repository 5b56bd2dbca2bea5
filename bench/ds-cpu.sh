#!/usr/bin/env bash
# CPU decode speed, dense vs Double Sparsity, over context depths, in one run on one machine.
#
#   bench/ds-cpu.sh [-m MODEL] [-t THREADS] [--depths 1024,2048,4096,8192] [--tg 64] [--ds-channels R]
#
# Writes bench/results/ds-cpu-<host>.md: tok/s, bytes/token, GB/s and attention ms/token per
# depth for dense and for DS (k = n/16, 4-bit labels, the default channels unless --ds-channels:
# 32 on SmolLM2, 1/8 of the key bits; --ds-channels 16 gives the paper's 1/16), with the
# speedups. The two sessions run alternately per depth so drift hits both.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
MODEL=""; THREADS=2; DEPTHS="1024,2048,4096,8192"; TG=64; CH=()
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=$2; shift 2;;
        -t) THREADS=$2; shift 2;;
        --depths) DEPTHS=$2; shift 2;;
        --tg) TG=$2; shift 2;;
        --ds-channels) CH=(--ds-channels "$2"); shift 2;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [--depths LIST] [--tg N] [--ds-channels R]" >&2; exit 2;;
    esac
done
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
make -s dsinfer
host=$(hostname -s 2>/dev/null || echo host)
out=bench/results/ds-cpu-$host.md
raw=bench/results/ds-cpu-$host.raw.txt
: > "$raw"
for d in ${DEPTHS//,/ }; do
    ./dsinfer bench -m "$MODEL" -t "$THREADS" --pp 0 --tg "$TG" --depths "$d" -r 3 --dense >> "$raw"
    ./dsinfer bench -m "$MODEL" -t "$THREADS" --pp 0 --tg "$TG" --depths "$d" -r 3 --ds --ds-tokens 1/16 "${CH[@]}" >> "$raw"
done
python3 - "$raw" "$MODEL" "$THREADS" "$(git rev-parse --short HEAD)" "${ARGS[@]}" > "$out" <<'PY'
import re, sys, datetime, os
raw, model, threads, commit = sys.argv[1:5]
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
print(f"- date {datetime.date.today()}, commit {commit}, {os.cpu_count()} cores, {threads} threads; last measured read bandwidth {bw} GB/s")
ds_name = next((r['ds'][0] for r in rows.values() if 'ds' in r), 'ds')
print(f"- DS setting: {ds_name}; dense prefill, decode of random tokens (speed does not depend on values)")
print("- command: bench/ds-cpu.sh " + " ".join(sys.argv[5:]) + " (raw `dsinfer bench` output beside this file)\n")
print("| depth | dense tok/s | DS tok/s | speedup | dense attn ms/tok | DS attn ms/tok | attn speedup | dense MB/tok | DS MB/tok | dense GB/s | DS GB/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted(rows):
    r = rows[d]
    if 'dense' not in r or 'ds' not in r: continue
    _, dt, dmb, dgb, _, da = r['dense']; _, st, smb, sgb, _, sa = r['ds']
    print(f"| {d} | {dt:.1f} | {st:.1f} | {st/dt:.2f}x | {da:.3f} | {sa:.3f} | {da/sa:.2f}x | {dmb:.1f} | {smb:.1f} | {dgb:.2f} | {sgb:.2f} |")
PY
cat "$out"
