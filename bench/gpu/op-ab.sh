#!/usr/bin/env bash
# Variants of the attention library side by side, alternating, in one call on the GPU machine:
# the comparison every kernel change needs (the machines drift between calls, so a change is
# only measured against its alternative in the same process order, round after round).
#   bench/gpu/op-ab.sh OUTFILE VARIANT...      (after `make gpu-build`, carrying build-cuda/)
# VARIANT is NAME=LIB[:TUNE][+FLAGS]: LIB a libdsattn build (a path), TUNE a DSINFER_GPU_TUNE string
# with ';' for ',' (e.g. nocl=build-cuda/libdsattn.so:cl=8;norq=1), FLAGS more op_bench.py
# arguments with ';' for ' ' (e.g. max=build-cuda/libdsattn.so+--group-max). Environment: ROUNDS
# (2), BATCHES (1,8), CTX (4096,16384,65536), OPARGS (arguments for every variant, e.g.
# "--heads 32 --kv-heads 8"). Writes the op bench's table rows per round and variant
# to OUTFILE; each run is under a timeout, so a kernel that hangs ends the run, not the call.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 OUTFILE NAME=LIB[:TUNE]..." >&2; exit 2; }
OUT=$1; shift
export LD_LIBRARY_PATH=$PWD/build-cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for v in "$@"; do
    lib=${v#*=}; lib=${lib%%+*}; lib=${lib%%:*}
    [ -f "$lib" ] || { echo "$0: no library $lib (variant $v)" >&2; exit 2; }
done
: > "$OUT"
for round in $(seq 1 "${ROUNDS:-2}"); do
    for v in "$@"; do
        name=${v%%=*}; spec=${v#*=}; flags=""
        [ "${spec#*+}" != "$spec" ] && flags=${spec#*+}
        spec=${spec%%+*}; lib=${spec%%:*}; tune=""
        [ "$spec" != "$lib" ] && tune=${spec#*:}
        echo "=== round $round $name (${lib}${tune:+, DSINFER_GPU_TUNE=${tune//;/,}}${flags:+, ${flags//;/ }})" >> "$OUT"
        # shellcheck disable=SC2086  # OPARGS and flags are word lists
        DSINFER_GPU_TUNE=${tune//;/,} timeout 120 python3 bench/gpu/op_bench.py --lib "$lib" --iters 40 \
            --batches "${BATCHES:-1,8}" --ctx "${CTX:-4096,16384,65536}" ${OPARGS:-} ${flags//;/ } 2>&1 |
            grep -E "^\| [0-9]|FAIL|rror" | awk '!seen[$0]++' >> "$OUT"
        echo "rc=${PIPESTATUS[0]}" >> "$OUT"
    done
done
grep -c "^=== " "$OUT" | sed 's/$/ runs/'
