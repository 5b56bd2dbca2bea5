#!/usr/bin/env bash
# The test command behind `make test`: C unit/integration tests, the checks against the
# independent numpy reference (tests/reference), then the eval tools' own checks (tests/tools).
# Prints one combined "N passed, N failed" line.
set -u
BUILD=${1:-build}
BIN=${2:-./dsinfer}
case "$BIN" in /*|./*) ;; *) BIN=./$BIN;; esac
cd "$(dirname "$0")/.."
passed=0; failed=0; skipped=0

add_counts() {  # parse "N passed, N failed[, N skipped]" from the last line of a log
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
    if [ -z "$line" ]; then failed=$((failed + 1)); echo "  (no summary line: counted as a failure)"; return; fi
    passed=$((passed + $(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')))
    failed=$((failed + $(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')))
    if echo "$line" | grep -q skipped; then
        skipped=$((skipped + $(echo "$line" | sed -E 's/.*, ([0-9]+) skipped.*/\1/')))
    fi
}

log=$(mktemp)
echo "== C tests ($BUILD/test_dsinfer)"
"$BUILD/test_dsinfer" 2>&1 | tee "$log"
add_counts "$log"

echo "== reference checks (numpy + gguf)"
if python3 -c "import numpy, gguf" 2>/dev/null; then
    python3 tests/reference/check_all.py --dsinfer "$BIN" 2>&1 | tee "$log"
    add_counts "$log"
else
    echo "  numpy/gguf not installed (pip install numpy gguf): reference checks skipped"
    skipped=$((skipped + 1))
fi
echo "== eval tools (python)"
python3 tests/tools/test_merge_cases.py 2>&1 | tee "$log"
add_counts "$log"
rm -f "$log"
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
