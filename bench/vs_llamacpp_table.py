#!/usr/bin/env python3
"""Combine llama-bench JSON and `dsinfer bench` tables (several rounds) into one markdown table.
Per test the median over rounds of each engine's tok/s is shown, with the ratio."""
import argparse, datetime, json, os, platform, re, statistics


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, required=True)
ap.add_argument("--dir", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--threads", required=True)
ap.add_argument("--commit", required=True)
a = ap.parse_args()

lc, ds, extra, bw = {}, {}, {}, None
for r in range(1, a.rounds + 1):
    for row in json.load(open(os.path.join(a.dir, f".lb{r}.json"))):
        if row["n_prompt"] > 0:
            key = (f"pp{row['n_prompt']}", row.get("n_depth", 0))
        else:
            key = (f"tg{row['n_gen']}", row.get("n_depth", 0))
        lc.setdefault(key, []).append(row["avg_ts"])
    for line in open(os.path.join(a.dir, f".ds{r}.txt")):
        m = re.search(r"measured read bandwidth ([\d.]+) GB/s", line)
        if m:
            bw = float(m.group(1))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.match(r"(pp|tg)\d+$", cells[0]):
            key = (cells[0], int(cells[1]))
            ds.setdefault(key, []).append(float(cells[2]))
            extra[key] = cells[3:]

print(f"# CPU: dsinfer vs llama.cpp\n")
print(f"- date {datetime.date.today()}, dsinfer commit {a.commit}, CPU {cpu_name()}, {os.cpu_count()} cores, "
      f"{a.threads} threads, model {os.path.basename(a.model)}")
print(f"- llama.cpp: llama-bench from llama-cpp-python's vendored source (AMX off), -r 3; dsinfer: dsinfer bench -r 3;"
      f" {a.rounds} alternating rounds, median of the rounds shown")
if bw:
    print(f"- measured read bandwidth ({a.threads} threads): {bw:.1f} GB/s")
print("- command: bench/vs-llamacpp.sh (raw outputs in the .raw.txt beside this file)\n")
print("| test | depth | llama.cpp tok/s | dsinfer tok/s | ratio | dsinfer bytes/token (MB) | dsinfer GB/s | % of measured bw |")
print("|---|---|---|---|---|---|---|---|")
for key in sorted(set(lc) | set(ds), key=lambda k: (k[0][:2] != "pp", k[1])):
    l = statistics.median(lc[key]) if key in lc else float("nan")
    d = statistics.median(ds[key]) if key in ds else float("nan")
    e = extra.get(key, ["-", "-", "-"])
    print(f"| {key[0]} | {key[1]} | {l:.1f} | {d:.1f} | {d / l:.2f}x | {e[0]} | {e[1]} | {e[2]} |")
