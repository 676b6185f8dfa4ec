#!/usr/bin/env python3
"""An ablation on the fixed left-out source: arms of bench/loso.sh (ARM=...) grouped by setting,
one line per setting with the mean and the spread (min..max) over its seeds.

    python3 bench/loso_arms.py RUNS NAME=ARM,ARM,ARM NAME=ARM,ARM,ARM ...

Reads RUNS/<arm>/eval/{unseen,val}_levels_off/{metrics.csv,naming.json} (raw network labels:
the ablation compares networks, not the level-assignment step); LEVELS=on reads the
`_levels_on` scores instead (what a user gets, after level assignment). Per arm: pooled mean Dice of
the bodies and of the discs over the structures each case labels, and the share of bodies named
at the right level; on the left-out source and on the validation fold (training sources).
PER_LEVEL=1 also prints the left-out source's body Dice per level (mean over each arm's cases,
then over its seeds). HD95=1 also prints the boundary table: per group and structure kind, the
mean HD95 (mm) over the structures an arm found (reference and prediction both non-empty) and
the share of labelled structures it found (an arm that misses a structure has no distance for
it, so the two columns are read together).
"""
import csv
import os
import json
import math
import sys
from pathlib import Path

root = Path(sys.argv[1])
LEVELS = os.environ.get("LEVELS", "off")
if LEVELS not in ("on", "off"):
    sys.exit(f"LEVELS must be on or off, not {LEVELS!r}")


def pooled(folder, low, high):
    path = folder / "metrics.csv"
    if not path.exists():
        return float("nan")
    values = [
        float(r["dice"])
        for r in csv.DictReader(open(path))
        if int(r["ref_voxels"]) > 0 and low <= int(r["label"]) <= high and not math.isnan(float(r["dice"]))
    ]
    return sum(values) / len(values) if values else float("nan")


def named(folder, kind):
    path = folder / "naming.json"
    if not path.exists():
        return float("nan")
    totals = json.load(open(path))["totals"].get(kind)
    return float("nan") if not totals else totals["right"] / totals["n"]


def cell(values, percent=False, digits=None):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    scale = 100 if percent else 1
    if digits is None:
        digits = 0 if percent else 3
    mean = sum(values) / len(values) * scale
    spread = f" ({min(values) * scale:.{digits}f}..{max(values) * scale:.{digits}f})" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{' %' if percent else ''}{spread}"


COLUMNS = [
    ("unseen bodies Dice", "unseen", lambda f: pooled(f, 1, 26), False),
    ("unseen bodies named right", "unseen", lambda f: named(f, "body"), True),
    ("val bodies Dice", "val", lambda f: pooled(f, 1, 26), False),
    ("val discs Dice", "val", lambda f: pooled(f, 101, 125), False),
    ("val bodies named right", "val", lambda f: named(f, "body"), True),
]
def settings():
    """(name, [arm, ...]) per NAME=ARM,ARM,... argument."""
    for spec in sys.argv[2:]:
        name, arms = spec.split("=", 1)
        yield name, arms.split(",")


print("| setting (seeds) | " + " | ".join(c[0] for c in COLUMNS) + " |")
print("|---|" + "---|" * len(COLUMNS))
for name, arms in settings():
    cells = []
    for _, group, metric, percent in COLUMNS:
        cells.append(cell([metric(root / arm / "eval" / f"{group}_levels_{LEVELS}") for arm in arms], percent))
    print(f"| {name} ({len(arms)}) | " + " | ".join(cells) + " |")


LEVEL_NAMES = {18: "T11", 19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}


def per_level(folder):
    path = folder / "metrics.csv"
    if not path.exists():
        return {}
    by_label = {}
    for r in csv.DictReader(open(path)):
        label = int(r["label"])
        if label in LEVEL_NAMES and int(r["ref_voxels"]) > 0 and not math.isnan(float(r["dice"])):
            by_label.setdefault(label, []).append(float(r["dice"]))
    return {label: sum(v) / len(v) for label, v in by_label.items()}


if os.environ.get("PER_LEVEL") == "1":
    print()
    print("| setting | " + " | ".join(LEVEL_NAMES.values()) + " |")
    print("|---|" + "---|" * len(LEVEL_NAMES))
    for name, arms in settings():
        levels = [per_level(root / arm / "eval" / f"unseen_levels_{LEVELS}") for arm in arms]
        cells = []
        for label in LEVEL_NAMES:
            values = [l[label] for l in levels if label in l]
            cells.append(f"{sum(values) / len(values):.2f}" if values else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


def boundary(folder, low, high):
    """(mean HD95 mm over found structures, share of labelled structures found)."""
    path = folder / "metrics.csv"
    if not path.exists():
        return float("nan"), float("nan")
    distances, labelled, found = [], 0, 0
    for r in csv.DictReader(open(path)):
        if int(r["ref_voxels"]) == 0 or not low <= int(r["label"]) <= high:
            continue
        labelled += 1
        if int(r["pred_voxels"]) > 0:
            found += 1
            distances.append(float(r["hd95_mm"]))
    hd95 = sum(distances) / len(distances) if distances else float("nan")
    return hd95, (found / labelled if labelled else float("nan"))


if os.environ.get("HD95") == "1":
    KINDS = [("unseen", "bodies", 1, 26), ("val", "bodies", 1, 26), ("val", "discs", 101, 125)]
    print()
    header = " | ".join(f"{g} {k} HD95 mm | {g} {k} found" for g, k, _, _ in KINDS)
    print(f"| setting (seeds) | {header} |")
    print("|---|" + "---|---|" * len(KINDS))
    for name, arms in settings():
        cells = []
        for group, _, low, high in KINDS:
            pairs = [boundary(root / arm / "eval" / f"{group}_levels_{LEVELS}", low, high) for arm in arms]
            cells += [cell([p[0] for p in pairs], digits=1), cell([p[1] for p in pairs], percent=True)]
        print(f"| {name} ({len(arms)}) | " + " | ".join(cells) + " |")
