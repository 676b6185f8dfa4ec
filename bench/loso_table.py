#!/usr/bin/env python3
"""The leave-one-source-out table of docs/BENCHMARKS.md from bench/loso.sh's evaluations.

RUNS/<site>/eval/<group>_levels_<on|off>/{metrics.csv,naming.json}, group = unseen (the left-out
site's cases) or val (fold 0's validation cases, from the training sites). Each case is scored only
on the structures its reference contains (the datasets label different subsets: VB3 L1-L5 bodies,
VB2 T11-L5 bodies, IVD discs, SPIDER everything), so a structure a case does not label is neither
rewarded nor punished. Prints, per left-out site, the mean Dice per structure (levels on / off,
validation fold), the pooled group means and the share of bodies and discs named at the right level.
"""
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

root = Path(sys.argv[1])
# Run folders: a site (vb3, vb2, ivd, spider) or an arm of one (ARM=... in bench/loso.sh).
SITES = sorted(p.name for p in root.iterdir() if (p / "eval").is_dir())


def group_of(label):
    if 1 <= label <= 26:
        return "bodies"
    if 101 <= label <= 125:
        return "discs"
    if label == 61:
        return "canal"
    if label == 40:
        return "posterior elements"
    return "other"


def read(folder):
    """structure -> (label, list of Dice over cases that label it)."""
    path = folder / "metrics.csv"
    if not path.exists():
        return None
    out = defaultdict(list)
    labels = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if int(row["ref_voxels"]) == 0:
                continue
            labels[row["structure"]] = int(row["label"])
            out[row["structure"]].append(float(row["dice"]))
    return {s: (labels[s], v) for s, v in out.items()}


def mean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def fmt(v):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def naming(folder, kind):
    path = folder / "naming.json"
    if not path.exists():
        return None
    totals = json.load(open(path))["totals"].get(kind)
    return None if totals is None else (totals["right"], totals["n"])


for site in SITES:
    ev = root / site / "eval"
    if not ev.is_dir():
        continue
    on, off, val = read(ev / "unseen_levels_on"), read(ev / "unseen_levels_off"), read(ev / "val_levels_on")
    if on is None:
        continue
    print(f"\n### Left out: {site}\n")
    print("| structure | unseen, levels assigned | unseen, raw network labels | validation fold (training sites) |")
    print("|---|---|---|---|")
    structures = sorted(on, key=lambda s: on[s][0])
    for s in structures:
        row = [mean(on[s][1]), mean(off[s][1]) if off and s in off else None, mean(val[s][1]) if val and s in val else None]
        print(f"| {s} | " + " | ".join(fmt(v) for v in row) + " |")
    for group in ["bodies", "discs", "canal", "posterior elements"]:
        def pooled(table):
            if not table:
                return None
            values = [d for s, (label, ds) in table.items() if group_of(label) == group for d in ds]
            return mean(values) if values else None
        row = [pooled(on), pooled(off), pooled(val)]
        if row[0] is not None:
            print(f"| **{group} (mean)** | " + " | ".join(fmt(v) for v in row) + " |")
    for kind in ["body", "disc"]:
        cells = []
        for folder in ["unseen_levels_on", "unseen_levels_off", "val_levels_on"]:
            n = naming(ev / folder, kind)
            cells.append("-" if n is None else f"{n[0]}/{n[1]} ({100 * n[0] / n[1]:.0f} %)")
        if any(c != "-" for c in cells):
            print(f"| *{kind} named at the right level* | " + " | ".join(cells) + " |")
