#!/usr/bin/env python3
"""Checks of eval/merge-cases.py on small hand-made .cases.csv files: the answered, ratio and
"kept of dense's" counts, the TAG=METHOD rule, a later file's row replacing an earlier one's, and a
clear error for a missing file. Prints one "N passed, N failed" line, as tests/run.sh expects."""
import csv, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "eval", "merge-cases.py")
HEAD = ["task", "case", "seed", "depth", "prompt_tokens", "setting", "score", "expected", "answer"]
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  PASS {name}")
    else:
        failed += 1
        print(f"  FAIL {name} {detail}")


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEAD)
        for case, setting, score in rows:
            w.writerow(["niah", case, 100 + case, 50, 4000, setting, score, f"ans{case}", "x"])


def table(args):
    p = subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True)
    rows = {}
    for line in p.stdout.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) == 5 and not c[0].startswith("setting") and not c[0].startswith("---"):
            rows[c[0]] = c[1:]
    return p, rows


with tempfile.TemporaryDirectory() as d:
    a, b, c = (os.path.join(d, x) for x in ("a.cases.csv", "b.cases.csv", "c.cases.csv"))
    # case 0: dense and ds answer; case 1: only ds (dense misses); case 2: only dense
    write(a, [(0, "dense", 1000), (0, "ds@1/16", 1000), (1, "dense", 0), (1, "ds@1/16", 1000),
              (2, "dense", 1000), (2, "ds@1/16", 0), (0, "ds@1/8", 0)])
    # the same cases with another rule, tagged +max; its dense rows join the untagged ones
    write(b, [(0, "dense", 1000), (0, "ds@1/16", 0), (1, "ds@1/16", 0), (2, "ds@1/16", 1000)])
    p, t = table(["--budget", "1/16", a, b + ":+max=ds"])
    check("exit 0", p.returncode == 0, p.stderr)
    check("dense row", t.get("dense") == ["2 / 3", "2 / 3", "-", "-"], t.get("dense"))
    # ds answers 2 of 3, dense 2 of the same: ratio 1.000x, but it keeps only 1 of dense's 2
    check("ratio vs kept", t.get("ds@1/16") == ["2 / 3", "2 / 3", "1.000x", "1 / 2"], t.get("ds@1/16"))
    check("tagged setting", t.get("ds@1/16+max") == ["1 / 3", "2 / 3", "0.500x", "1 / 2"], t.get("ds@1/16+max"))
    check("other budgets left out", "ds@1/8" not in t, list(t))
    # a later file's row replaces an earlier one's for the same case and setting
    write(c, [(2, "ds@1/16", 1000)])
    p, t = table(["--budget", "1/16", a, c])
    check("later row wins", t.get("ds@1/16") == ["3 / 3", "2 / 3", "1.500x", "2 / 2"], t.get("ds@1/16"))
    out = os.path.join(d, "merged")
    p, t = table(["--budget", "1/16", "--out", out, a])
    with open(out + ".csv") as f:
        r = {x["setting"]: x for x in csv.DictReader(f)}
    check("csv kept column", r.get("ds@1/16", {}).get("answered_where_dense_answered") == "1", r.get("ds@1/16"))
    check("md written", os.path.exists(out + ".md"))
    p, t = table(["--budget", "1/16", os.path.join(d, "missing.cases.csv")])
    check("missing file: clear error", p.returncode != 0 and "no such file" in p.stderr, (p.returncode, p.stderr))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
