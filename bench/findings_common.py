#!/usr/bin/env python3
"""Like-for-like rows for the findings ablation: the levels every arm scored.

A T1 + T2 arm scores a level found on either sequence, a T2 arm only levels found on T2, so
their summaries cover different levels. This writes RUNS/<arm>/common.csv with only the
(case, level) rows found in every arm's all.csv, and evaluates each with
`spineseg evaluate-findings` into RUNS/<arm>/summary_common.json (read by
`findings_table.py RUNS --common`).

    python3 bench/findings_common.py RUNS SPINESEG GRADINGS
"""
import csv
import pathlib
import subprocess
import sys

runs, spineseg, gradings = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
arms = sorted(p.parent for p in runs.glob("*-s*/all.csv"))
found = []
for arm in arms:
    with open(arm / "all.csv", newline="") as f:
        found.append({(r["case"], r["level"]) for r in csv.DictReader(f) if r["found"] == "1"})
common = set.intersection(*found)
print(f"{len(common)} levels found in all {len(arms)} arm runs")
for arm in arms:
    with open(arm / "all.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (r["case"], r["level"]) in common]
        fields = reader.fieldnames
    with open(arm / "common.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    subprocess.run([spineseg, "evaluate-findings", "--pred", str(arm / "common.csv"), "--ref", gradings,
                    "-o", str(arm / "summary_common.json"), "--bootstrap", "1000", "--seed", "0"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
