#!/usr/bin/env bash
# Where the time of a quantised decode step goes on the GPU: Nsight Compute on the first layers'
# quantised GEMVs (and their activation quantisation) of a generated Llama-2-7B Q4_K_M, one
# token decoded; then the same kernels' fp16 counterparts (DSINFER_GPU_QUANT=0).
#   bench/gpu/quant-profile.sh [OUTDIR]   (after `make gpu-build`, carrying build-cuda/)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-quant-profile}
B=build-cuda
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
M=$OUT/llama2-7b-q4_k_m.gguf
$B/dsinfer gen-model -q -o "$M" --preset llama2-7b --type q4_k_m
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,launch__grid_size
metrics+=,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,launch__waves_per_multiprocessor
metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio
for q in 1 0; do
    k='regex:k_qgemv|k_quant_x'
    [ $q = 0 ] && k='regex:k_gemv'
    echo "== DSINFER_GPU_QUANT=$q: ncu -k '$k' on one decoded token" | tee -a "$OUT/quant-profile.txt"
    DSINFER_GPU_QUANT=$q DSINFER_GPU_PDL=0 "$NCU" --graph-profiling node -k "$k" --launch-count 12 --metrics "$metrics" \
        --csv $B/dsinfer bench -m "$M" --gpu --dense -c 512 --pp 0 --tg 1 -r 1 2>/dev/null \
        | python3 -c "
import csv, sys
rows = [r for r in csv.reader(l for l in sys.stdin if l.startswith('\"'))]
hdr = rows[0]; ix = {h: i for i, h in enumerate(hdr)}
kern = {}
for r in rows[1:]:
    key = (r[ix['ID']], r[ix['Kernel Name']].split('(')[0][-40:])
    kern.setdefault(key, {})[r[ix['Metric Name']]] = r[ix['Metric Value']]
names = sorted({m for v in kern.values() for m in v})
short = [n.replace('smsp__average_warps_issue_stalled_', 'stall_').replace('_per_issue_active.ratio', '') for n in names]
print('| id | kernel | ' + ' | '.join(short) + ' |')
for (i, k), v in kern.items(): print('| %s | %s | ' % (i, k) + ' | '.join(v.get(n, '') for n in names) + ' |')
" | tee -a "$OUT/quant-profile.txt"
done
rm -f "$M"
