#!/usr/bin/env bash
# CPU speed: dsinfer vs llama.cpp on the same machine, same run, same threads.
#
#   bench/vs-llamacpp.sh [-m MODEL] [-t THREADS] [--depths 0,4096] [--rounds 2]
#
# Builds llama.cpp (llama-bench, llama-perplexity) from the llama-cpp-python sdist on PyPI into
# a scratch folder outside the repository (never committed), then alternates llama-bench and
# `dsinfer bench` (pp512, tg128 at each depth) for --rounds rounds and writes one table to
# bench/results/cpu-vs-llamacpp-<host>.md with the raw outputs beside it.
#
# AMX is switched off in the llama.cpp build: its AMX kernels crash on these VMs (the tile state
# is not enabled for user processes), and dsinfer does not use AMX either.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=""; THREADS=2; DEPTHS="0,4096"; ROUNDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MODEL=${2?"$1 needs a value"}; shift 2;;
        -t) THREADS=${2?"$1 needs a value"}; shift 2;;
        --depths) DEPTHS=${2?"$1 needs a value"}; shift 2;;
        --rounds) ROUNDS=${2?"$1 needs a value"}; shift 2;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [--depths LIST] [--rounds N]" >&2; exit 2;;
    esac
done
CACHE=${DSINFER_CACHE:-$HOME/.cache/dsinfer}
[ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
LCPP_VER=${LCPP_VER:-0.3.36}
LCPP_SRC=$CACHE/llama-cpp-python-$LCPP_VER
LCPP_BUILD=$CACHE/llama.cpp-build-$LCPP_VER

build_llamacpp() {
    if [ -x "$LCPP_BUILD/bin/llama-bench" ] && [ -x "$LCPP_BUILD/bin/llama-perplexity" ]; then return; fi
    echo "building llama.cpp from llama-cpp-python==$LCPP_VER (sdist) in $LCPP_BUILD ..." >&2
    local tmp; tmp=$(mktemp -d)
    pip download -q --no-deps --no-binary=:all: "llama-cpp-python==$LCPP_VER" -d "$tmp"
    mkdir -p "$LCPP_SRC"
    tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$LCPP_SRC" --strip-components=1
    rm -rf "$tmp"
    local noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$LCPP_SRC/vendor/llama.cpp" -B "$LCPP_BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx" >&2
    cmake --build "$LCPP_BUILD" -j"$(nproc)" --target llama-bench llama-perplexity llama-tokenize >&2
}
build_llamacpp
make -s dsinfer

host=$(hostname -s 2>/dev/null || echo host)
outdir=bench/results
mkdir -p "$outdir"
raw=$outdir/cpu-vs-llamacpp-$host.raw.txt
: > "$raw"
trap 'rm -f "$outdir"/.lb*.json "$outdir"/.ds*.txt' EXIT   # per-round temporaries, also on failure
for r in $(seq 1 "$ROUNDS"); do
    echo "## round $r: llama-bench" >> "$raw"
    "$LCPP_BUILD/bin/llama-bench" -m "$MODEL" -t "$THREADS" -p 512 -n 128 -d "$DEPTHS" -r 3 -o json \
        > "$outdir/.lb$r.json" 2>/dev/null
    cat "$outdir/.lb$r.json" >> "$raw"
    echo "## round $r: dsinfer bench" >> "$raw"
    ./dsinfer bench -m "$MODEL" -t "$THREADS" --pp 512 --tg 128 --depths "$DEPTHS" -r 3 | tee "$outdir/.ds$r.txt" >> "$raw"
done
python3 bench/vs_llamacpp_table.py --rounds "$ROUNDS" --dir "$outdir" --model "$MODEL" --threads "$THREADS" \
    --commit "$(./dsinfer --version | cut -d" " -f2)" > "$outdir/cpu-vs-llamacpp-$host.md"
cat "$outdir/cpu-vs-llamacpp-$host.md"
