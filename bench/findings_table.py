#!/usr/bin/env python3
"""The disc-findings cross-validation table (docs/BENCHMARKS.md, "Disc findings").

Reads RUNS/<head>-<seq>-s<seed>/summary.json (bench/findings_cv.sh arm) and prints, per arm, the
mean over seeds and the range (min..max) of: each finding's recall, false-positive rate,
precision and AUC; the macro averages; Pfirrmann accuracy and linear kappa; how many graded
levels were scored. Standard library only.

    python3 bench/findings_table.py RUNS [--common]

--common reads summary_common.json (bench/findings_common.py: only the levels every arm scored).
"""
import collections
import json
import pathlib
import re
import statistics
import sys

runs = pathlib.Path(sys.argv[1])
summary = "summary_common.json" if "--common" in sys.argv[2:] else "summary.json"
arms = collections.defaultdict(list)
for path in sorted(runs.glob(f"*-s*/{summary}")):
    m = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
    arms[m.group(1)].append(json.loads(path.read_text()))


def cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}..{max(values):.3f})"


order = ["visual-t2", "text-t2", "visual-t1-t2", "text-t1-t2", "text-t1-t2-clip"]
names = sorted(arms, key=lambda a: order.index(a) if a in order else 99)
print("| arm | seeds | scored levels | macro recall | macro FPR | macro precision | macro AUC | Pfirrmann acc. | Pfirrmann kappa |")
print("|---|---|---|---|---|---|---|---|---|")
for arm in names:
    s = arms[arm]
    o = [x["overall"] for x in s]
    print(
        f"| {arm} | {len(s)} | {s[0]['counts']['matched']} of {s[0]['counts']['reference_levels']} "
        f"| {cell([x['macro_average']['recall']['value'] for x in o])} "
        f"| {cell([x['macro_average']['fpr']['value'] for x in o])} "
        f"| {cell([x['macro_average']['precision']['value'] for x in o])} "
        f"| {cell([x['macro_average']['auc']['value'] for x in o])} "
        f"| {cell([x['pfirrmann']['accuracy']['value'] for x in o])} "
        f"| {cell([x['pfirrmann']['kappa_linear']['value'] for x in o])} |"
    )
print()
print("| arm | finding | positives | recall | FPR | precision | AUC |")
print("|---|---|---|---|---|---|---|")
for arm in names:
    s = arms[arm]
    for i, f in enumerate(s[0]["overall"]["findings"]):
        rows = [x["overall"]["findings"][i] for x in s]
        print(
            f"| {arm} | {f['finding']} | {f['positives']} of {f['positives'] + f['negatives']} "
            f"| {cell([r['recall']['value'] for r in rows])} | {cell([r['fpr']['value'] for r in rows])} "
            f"| {cell([r['precision']['value'] for r in rows])} | {cell([r['auc']['value'] for r in rows])} |"
        )
