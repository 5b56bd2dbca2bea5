#!/usr/bin/env python3
"""Merge the per-case rows of several `dsinfer eval` runs (their .cases.csv files) into one table.

    eval/merge-cases.py [--task niah] [--budget 1/16] [--out NAME] FILE[:TAG] ...

A case is identified by its seed and expected answer, so runs of the same cases by different
binaries or settings line up. TAG (optional) is appended to the settings of that file, to tell
apart runs of one method with different flags (e.g. runs/ds.cases.csv:+recent). A later file's
row replaces an earlier one's for the same case and setting. For each setting at the budget
(and dense), the table gives the cases it answered in full and the cases it ran, and the same
over the cases every listed setting ran. Writes NAME.md and NAME.csv when --out is given.
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
    if not os.path.exists(path):
        sys.exit(f"merge-cases: {path}: no such file")
    for r in csv.DictReader(open(path)):
        if r["task"] != a.task:
            continue
        s = r["setting"] + tag
        if s != "dense" and not s.split("+")[0].endswith("@" + a.budget):
            continue
        score[(r["seed"], r["expected"], s)] = int(r["score"])
        if s not in order:
            order.append(s)
cases = sorted({(seed, exp) for seed, exp, _ in score})
common = [c for c in cases if all((c[0], c[1], s) in score for s in order)]
rows = []
for s in order:
    ran = [c for c in cases if (c[0], c[1], s) in score]
    full = sum(score[(c[0], c[1], s)] >= 1000 for c in ran)
    fc = sum(score[(c[0], c[1], s)] >= 1000 for c in common)
    rows.append((s, full, len(ran), fc, len(common)))
dense = next((r for r in rows if r[0] == "dense"), None)
L = [f"| setting ({a.task}, k = {a.budget}) | answered / ran | on the {len(common)} cases all ran | vs dense there |",
     "|---|---|---|---|"]
for s, full, n, fc, nc in rows:
    rel = f"{fc / dense[3]:.3f}x" if dense and dense[3] else "-"
    L.append(f"| {s} | {full} / {n} | {fc} / {nc} | {rel} |")
print("\n".join(L))
if a.out:
    with open(a.out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "answered", "ran", "answered_common", "common"])
        w.writerows(rows)
    with open(a.out + ".md", "w") as f:
        f.write(f"Merged from: {' '.join(os.path.basename(x) for x in a.files)} "
                f"(`eval/merge-cases.py --task {a.task} --budget {a.budget}`)\n\n" + "\n".join(L) + "\n")
