# eval/lib.sh — what the perplexity scripts (ppl-rows, ppl-alloc, ppl-sweep, ppl-sparse,
# ds-diagnose) share: their common options, the model and the text, and one paper-protocol
# perplexity run parsed into fields. Sourced from the repository root; each script sets its own
# defaults after sourcing.

MODEL=""; WINDOW=4096; CHUNKS=1; THREADS=2; NAME=""; BIN=./dsinfer

# common_opt "$@": if $1 is a common option, take its value and set SHIFT to the words used (2),
# else SHIFT=0. -m MODEL, --window N, --chunks N, -t THREADS, --name NAME, --bin BINARY.
common_opt() {
    SHIFT=0
    case "$1" in -m|--window|--chunks|-t|--name|--bin) ;; *) return 0;; esac
    [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }
    SHIFT=2
    case "$1" in
        -m) MODEL=$2;;
        --window) WINDOW=$2;;
        --chunks) CHUNKS=$2;;
        -t) THREADS=$2;;
        --name) NAME=$2;;
        --bin) BIN=$2;;
    esac
}

# row_arg WORD: a word of a rows script (ppl-rows, ppl-noise, ppl-equal-bytes) that is neither a
# common option nor the script's own: 'LABEL=FLAGS' is appended to ROWS, anything else ends the
# script with a usage error.
row_arg() {
    case "$1" in
        -*) echo "usage: see the header of $0" >&2; exit 2;;
        *=*) ROWS+=("$1");;
        *) echo "a row is LABEL=FLAGS (got '$1')" >&2; exit 2;;
    esac
}

# model_and_text: the default model when -m was not given, and TEXT = Jane Austen (the evaluation
# text; calibrations are made on another one)
model_and_text() {
    [ -n "$MODEL" ] || MODEL=$(scripts/fetch-model --print-path smollm2)
    TEXT=$(scripts/fetch-text austen)
}

# head_dim of MODEL, from `dsinfer inspect`
head_dim() {
    local hd
    hd=$($BIN inspect -m "$MODEL" 2>/dev/null | sed -nE 's/.*head_dim[ =:]+([0-9]+).*/\1/p' | head -1)
    [ -n "$hd" ] || { echo "cannot read head_dim from $BIN inspect" >&2; exit 1; }
    echo "$hd"
}

# ppl_run FLAGS...: `dsinfer perplexity` over CHUNKS windows of WINDOW tokens, every position
# scored with the method applied at every position; sets PPL, NTOK (tokens scored), BYTES (what
# one decode step reads per layer at n = WINDOW) and METH (the method as perplexity printed it).
# Returns 1 when the run fails.
ppl_run() {
    local line
    line=$($BIN perplexity -m "$MODEL" -f "$TEXT" --protocol paper --window "$WINDOW" --chunks "$CHUNKS" \
        -t "$THREADS" "$@" 2>/dev/null) || return 1
    PPL=$(echo "$line" | awk '{print $2}')
    NTOK=$(echo "$line" | awk '{print $4}')
    BYTES=$(echo "$line" | sed -nE 's/.*decode step at n=[0-9]+: ([0-9]+),.*/\1/p')
    METH=$(echo "$line" | sed -nE 's/.*, method ([^,]*), file.*/\1/p')
}
