#!/usr/bin/env python3
"""Merge the per-case rows of several `dsinfer eval` runs (their .cases.csv files) into one table.

    eval/merge-cases.py [--task niah] [--budget 1/16] [--out NAME] FILE[:TAG[=METHOD,...]] ...

A case is identified by its seed and expected answer, so runs of the same cases by different
binaries or settings line up. TAG (optional) is appended to the settings of that file, to tell
apart runs of one method with different flags (e.g. runs/ds.cases.csv:+recent); with =METHOD,...
only those methods' settings get it (runs/all.cases.csv:+recent=ds: the run's dense and baseline rows
join the untagged ones). A later file's
row replaces an earlier one's for the same case and setting. For each setting at the budget
(and dense), the table gives the cases it answered in full of those it ran, what dense answered
of the same cases, and the ratio (a setting's cases without a dense row are left out of it); then
how many of the cases dense answered the setting answered too ("kept"): the ratio counts a case
dense misses and the setting answers as making up for one it loses, "kept" does not, so where the
two differ the setting is answering cases dense does not. Writes NAME.md and NAME.csv when --out
is given.
"""
import argparse, csv, os, sys

ap = argparse.ArgumentParser()
ap.add_argument("--task", default="niah")
ap.add_argument("--budget", default="1/16")
ap.add_argument("--out")
ap.add_argument("files", nargs="+")
a = ap.parse_args()

score, order = {}, []
for spec in a.files:
    path, _, tag = spec.partition(":")
    tag, _, methods = tag.partition("=")
    only = set(methods.split(",")) if methods else set()
    if not os.path.exists(path):
        sys.exit(f"merge-cases: {path}: no such file")
    for r in csv.DictReader(open(path)):
        if r["task"] != a.task:
            continue
        meth = r["setting"].split("@")[0]
        s = r["setting"] + (tag if not only or meth in only else "")
        if s != "dense" and not s.split("+")[0].endswith("@" + a.budget):
            continue
        score[(r["seed"], r["expected"], s)] = int(r["score"])
        if s not in order:
            order.append(s)
cases = sorted({(seed, exp) for seed, exp, _ in score})
rows = []
for s in order:
    ran = [c for c in cases if (c[0], c[1], s) in score]
    full = sum(score[(c[0], c[1], s)] >= 1000 for c in ran)
    both = [c for c in ran if (c[0], c[1], "dense") in score]
    dense_full = sum(score[(c[0], c[1], "dense")] >= 1000 for c in both)
    mine = sum(score[(c[0], c[1], s)] >= 1000 for c in both)
    kept = sum(score[(c[0], c[1], s)] >= 1000 and score[(c[0], c[1], "dense")] >= 1000 for c in both)
    rows.append((s, full, len(ran), dense_full, len(both), mine, kept))
L = [f"| setting ({a.task}, k = {a.budget}) | answered / ran | dense on those cases | vs dense | kept of dense's |",
     "|---|---|---|---|---|"]
for s, full, n, dfull, nboth, mine, kept in rows:
    rel = f"{mine / dfull:.3f}x" if dfull and s != "dense" else "-"
    kp = f"{kept} / {dfull}" if s != "dense" else "-"
    L.append(f"| {s} | {full} / {n} | {dfull} / {nboth} | {rel} | {kp} |")
print("\n".join(L))
if a.out:
    with open(a.out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "answered", "ran", "dense_answered", "dense_ran", "answered_where_dense_ran",
                    "answered_where_dense_answered"])
        w.writerows(rows)
    with open(a.out + ".md", "w") as f:
        f.write(f"Merged from: {' '.join(os.path.basename(x) for x in a.files)} "
                f"(`eval/merge-cases.py --task {a.task} --budget {a.budget}`)\n\n" + "\n".join(L) + "\n")
