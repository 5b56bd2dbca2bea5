#!/usr/bin/env bash
# Where the time of one Double Sparsity decode-attention call goes, kernel by kernel, on the GPU
# machine: torch.profiler device times per kernel over several shapes, then Nsight Compute
# (duration, DRAM traffic, occupancy, waves, warp stall reasons) for k_select (or k_score and
# k_collect under DSINFER_GPU_TUNE=split=1), k_fused (short caches) and k_attn at three shapes.
# Shape: 32 heads = 32 KV heads, d 128, k = n/16; labels r = 8 fp16 (ds16) or, with
# VARIANTS=ds16,ds4, also r = 32 4-bit.
#   bench/gpu/ds-profile.sh [OUTDIR] [SHAPES]   (after `make gpu-build`, carrying build-cuda/)
#   SHAPES: B/n pairs for ncu, default "1/65536 4/16384 8/65536"
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/dsinfer-ds-profile}
LIB=${LIB:-build-cuda/libdsattn.so}   # another build of the kernels to compare
TAG=${TAG:-}                           # suffix of the output files
SHAPES=${2:-"1/65536 4/16384 8/65536"}
VARIANTS=${VARIANTS:-ds16}             # op_bench --variants: ds16 (r8@16), ds4 (r32@4)
mkdir -p "$OUT"
# plain launches: with programmatic launches a kernel starts early and its time includes the wait
export DSINFER_GPU_PDL=${DSINFER_GPU_PDL:-0}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
python3 bench/gpu/op_bench.py --lib "$LIB" --profile --variants "$VARIANTS" \
    --batches 1,4,8 --ctx 16384,65536 2>&1 | tee "$OUT/ds-profile-torch$TAG.txt"
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
metrics+=,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,launch__grid_size,launch__registers_per_thread,launch__waves_per_multiprocessor
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio
metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active
for s in $SHAPES; do
  for v in ${VARIANTS//,/ }; do
    B=${s%/*}; n=${s#*/}
    echo "=== ncu B=$B n=$n $v (second and third DS call of the process)"
    "$NCU" --clock-control none -k 'regex:k_score|k_collect|k_attn|k_select|k_fused' --launch-skip 3 --launch-count 6 \
        --metrics "$metrics" --csv --page raw \
        python3 bench/gpu/op_bench.py --lib "$LIB" --profile --variants "$v" --batches "$B" --ctx "$n" \
        2>/dev/null | grep -E '^"(ID|[0-9])' | python3 -c '
import csv, re, sys
rows = list(csv.reader(sys.stdin))
if not rows:
    sys.exit("no ncu rows")
hdr = rows[0]
for r in rows[1:]:
    d = dict(zip(hdr, r))
    m = re.search(r"k_[a-z_]+(<[^>]*>)?", d["Kernel Name"])
    name = m.group(0).replace(" ", "") if m else d["Kernel Name"][:40]
    vals = ["%s=%s" % (k.split("__")[-1], d[k]) for k in hdr if "__" in k]
    print(name, " ".join(vals))
'
  done
done 2>&1 | tee "$OUT/ds-profile-ncu$TAG.txt"
