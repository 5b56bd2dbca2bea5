#!/usr/bin/env python3
"""Summarise a DSINFER_SEL_DIAG file (src/sparse_diag.c): how much of the exact attention each
method's selections hold, against the exact top-k of the same size, over the question steps and
the answer steps of one retrieval case, per layer for one method, and per (layer, KV head) at
chosen steps (e.g. the step where two methods' answers part).

    DSINFER_SEL_DIAG=diag.txt ./dsinfer eval ... --cases 1 --methods dense,ds,oracle
    python3 eval/seldiag.py diag.txt --prompt-tokens P [--method ds] [--steps N,N] [--gap 0.05]

Line format: method layer kvh n m mass_mean mass_min oracle_mean oracle_min recall top1 G, where n
is the number of visible positions (the step that feeds the prompt's last token has n = P)."""
import argparse
import collections


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--prompt-tokens", type=int, required=True, help="the case's prompt length (eval prints it)")
    ap.add_argument("--method", default="ds", help="method for the per-layer and per-step tables")
    ap.add_argument("--steps", default="", help="comma-separated n for the per-(layer, head) table")
    ap.add_argument("--gap", type=float, default=0.05, help="per-step table: rows whose mass trails the oracle's by more")
    a = ap.parse_args()
    rows = []
    with open(a.file) as f:
        for line in f:
            p = line.split()
            if len(p) != 12:
                continue
            rows.append((p[0], int(p[1]), int(p[2]), int(p[3]), int(p[4])) + tuple(map(float, p[5:10])) + (int(p[10]), int(p[11])))
    if not rows:
        raise SystemExit("seldiag: no diagnostic lines in " + a.file)
    P = a.prompt_tokens

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    print(f"# Selection diagnostics: {a.file}, prompt {P} tokens\n")
    print("| method | steps | lines | mass (mean head) | mass (least head) | exact top-k mass | recall of exact top-k | heads' top-1 kept |")
    print("|---|---|---|---|---|---|---|---|")
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r[0], "answer" if r[3] > P else "question")].append(r)
    for (m, ph), rs in sorted(groups.items()):
        print(f"| {m} | {ph} | {len(rs)} | {mean([r[5] for r in rs]):.3f} | {mean([r[6] for r in rs]):.3f} | "
              f"{mean([r[7] for r in rs]):.3f} | {mean([r[9] for r in rs]):.3f} | {mean([r[10] / r[11] for r in rs]):.3f} |")

    print(f"\n## {a.method} per layer, question steps (n <= {P})\n")
    print("| layer | mass | exact top-k mass | gap | least head | exact top-k, least head | recall | top-1 kept |")
    print("|---|---|---|---|---|---|---|---|")
    by_layer = collections.defaultdict(list)
    for r in rows:
        if r[0] == a.method and r[3] <= P:
            by_layer[r[1]].append(r)
    for L in sorted(by_layer):
        rs = by_layer[L]
        ms, os_ = mean([r[5] for r in rs]), mean([r[7] for r in rs])
        print(f"| {L} | {ms:.3f} | {os_:.3f} | {os_ - ms:.3f} | {mean([r[6] for r in rs]):.3f} | "
              f"{mean([r[8] for r in rs]):.3f} | {mean([r[9] for r in rs]):.2f} | {mean([r[10] / r[11] for r in rs]):.3f} |")

    for n in [int(x) for x in a.steps.split(",") if x]:
        print(f"\n## {a.method} at step n = {n} (prompt + {n - P}): units whose mass trails the exact top-k's by "
              f"> {a.gap} or that lose a head's top-1\n")
        print("| layer | KV head | mass | exact top-k mass | least head | exact top-k, least head | top-1 kept |")
        print("|---|---|---|---|---|---|---|")
        for r in sorted((r for r in rows if r[0] == a.method and r[3] == n), key=lambda r: (r[1], r[2])):
            if r[7] - r[5] > a.gap or r[10] < r[11]:
                print(f"| {r[1]} | {r[2]} | {r[5]:.3f} | {r[7]:.3f} | {r[6]:.3f} | {r[8]:.3f} | {r[10]}/{r[11]} |")


if __name__ == "__main__":
    main()
