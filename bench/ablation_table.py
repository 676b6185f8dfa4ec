#!/usr/bin/env python3
"""Aggregates bench/text_ablation.sh's evaluations into the ablation table of docs/BENCHMARKS.md.

EVAL/<arm>_s<seed>/{vb,ivd}/metrics.csv (spineseg evaluate) -> per structure, for each arm: the
mean over seeds of the per-seed mean over validation cases, +- the standard deviation over seeds
(the spread the issue asks for), for Dice and MONAI HD95 (mm); group rows pool the (case,
structure) pairs of their structures. Non-finite HD95 (a structure not
predicted at all) is left out of the HD95 mean and counted in the "missed" column.
"""
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

root = Path(sys.argv[1])
# per[arm][seed][structure] = list of (dice, hd95)
per = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
label_of, group_of = {}, {}
for metrics in sorted(root.glob("*/*/metrics.csv")):
    arm, seed = metrics.parent.parent.name.rsplit("_s", 1)
    with open(metrics) as f:
        for row in csv.DictReader(f):
            # A structure the case's reference does not contain is not annotated there (VB3 cases
            # label L1-L5 only, although T12 is in view): nothing to score.
            if int(row["ref_voxels"]) == 0:
                continue
            name = row["structure"]
            label_of[name] = int(row["label"])
            group_of[name] = metrics.parent.name
            per[arm][seed][name].append((float(row["dice"]), float(row["hd95_mm"])))

def summary(arm, names):
    """Mean and spread over seeds of the per-seed means over cases (and over `names`)."""
    dice_means, hd_means, missed = [], [], 0
    for seed, structures in per[arm].items():
        values = [v for n in names for v in structures.get(n, [])]
        if not values:
            continue
        dice_means.append(statistics.mean(d for d, _ in values))
        finite = [h for _, h in values if math.isfinite(h)]
        missed += len(values) - len(finite)
        if finite:
            hd_means.append(statistics.mean(finite))
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return (statistics.mean(dice_means), sd(dice_means), statistics.mean(hd_means) if hd_means else float("nan"),
            sd(hd_means) if hd_means else float("nan"), missed, len(dice_means))

arms = [a for a in ("visual", "text") if a in per] + [a for a in per if a not in ("visual", "text")]
rows = sorted(label_of, key=lambda n: label_of[n])
bodies = [n for n in rows if group_of[n] == "vb"]
lumbar = [n for n in bodies if n in ("L1", "L2", "L3", "L4", "L5")]
discs = [n for n in rows if group_of[n] == "ivd"]
groups = [("**mean L1-L5 bodies**", lumbar), ("**mean all bodies**", bodies), ("**mean discs**", discs)]

header = "| structure | " + " | ".join(f"{a} Dice | {a} HD95 mm" for a in arms) + " |"
print(header)
print("|" + "---|" * (1 + 2 * len(arms)))
for label, names in [(n, [n]) for n in rows] + groups:
    if not names:
        continue
    cells = []
    for arm in arms:
        d, dsd, h, hsd, missed, seeds = summary(arm, names)
        miss = f" ({missed} missed)" if missed else ""
        cells.append(f"{d:.3f} +- {dsd:.3f} | {h:.1f} +- {hsd:.1f}{miss}")
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
for arm in arms:
    print(f"{arm}: seeds {sorted(per[arm])}")
