#!/usr/bin/env bash
# CPU decode attention at one depth: dense, and DS at k = 1/16 with the group's largest head (the
# default) and the summed score, each with and without the label-scan prefetch, interleaved step
# by step on one prefilled context (bench/bench_decode_ab.c says why and how).
#
#   bench/ds-cpu-ab.sh [-m MODEL] [--calib FILE] [--depth N] [--rounds N] [--tg N] [-t THREADS]
#                      [--channels N] [--name NAME]
#
# Writes bench/results/NAME.md (default ds-cpu-ab-<host>). The calibration defaults to the repo's
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
        --depth) DEPTH=${2?"$1 needs a value"}; shift 2;;
        --rounds) ROUNDS=${2?"$1 needs a value"}; shift 2;;
        --tg) TG=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        --channels) CH=${2?"$1 needs a value"}; shift 2;;
        --name) NAME=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: $0 [-m MODEL] [--calib FILE] [--depth N] [--rounds N] [--tg N] [-t THREADS] [--channels N] [--name NAME]" >&2; exit 2;;
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
cat "$out"
