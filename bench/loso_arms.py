#!/usr/bin/env python3
"""An ablation on the fixed left-out source: arms of bench/loso.sh (ARM=...) grouped by setting,
one line per setting with the mean and the spread (min..max) over its seeds.

    python3 bench/loso_arms.py RUNS NAME=ARM,ARM,ARM NAME=ARM,ARM,ARM ...

Reads RUNS/<arm>/eval/{unseen,val}_levels_off/{metrics.csv,naming.json} (raw network labels:
the ablation compares networks, not the level-assignment step); LEVELS=on reads the
`_levels_on` scores instead (what a user gets, after level assignment). Per arm: pooled mean Dice of
the bodies and of the discs over the structures each case labels, and the share of bodies named
at the right level; on the left-out source and on the validation fold (training sources).
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


def cell(values, percent=False):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    scale = 100 if percent else 1
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
print("| setting (seeds) | " + " | ".join(c[0] for c in COLUMNS) + " |")
print("|---|" + "---|" * len(COLUMNS))
for spec in sys.argv[2:]:
    name, arms = spec.split("=", 1)
    arms = arms.split(",")
    cells = []
    for _, group, metric, percent in COLUMNS:
        cells.append(cell([metric(root / arm / "eval" / f"{group}_levels_{LEVELS}") for arm in arms], percent))
    print(f"| {name} ({len(arms)}) | " + " | ".join(cells) + " |")
