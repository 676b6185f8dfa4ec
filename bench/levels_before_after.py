#!/usr/bin/env python3
"""Level assignment before and after a change, on the same networks: per arm pair, how many
cases the lumbosacral anchor held (from predict's `<case>.levels.json`), and the cases whose
mean body (or disc) Dice after level assignment moved by more than 0.005.

    python3 bench/levels_before_after.py RUNS BEFORE_ARM:AFTER_ARM ...

Reads RUNS/<arm>/{unseen,val}/pred_levels_on/*.levels.json and
RUNS/<arm>/eval/{unseen,val}_levels_on/metrics.csv (bench/loso.sh eval).
"""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

root = Path(sys.argv[1])


def anchored(arm, group):
    files = sorted((root / arm / group / "pred_levels_on").glob("*.levels.json"))
    held = sum(json.load(open(f))["anchor"] == "lumbosacral junction" for f in files)
    return held, len(files)


def per_case(arm, group, low, high):
    path = root / arm / "eval" / f"{group}_levels_on" / "metrics.csv"
    values = defaultdict(list)
    for r in csv.DictReader(open(path)):
        if int(r["ref_voxels"]) > 0 and low <= int(r["label"]) <= high:
            values[r["case"]].append(float(r["dice"]))
    return {case: sum(v) / len(v) for case, v in values.items()}


for pair in sys.argv[2:]:
    before, after = pair.split(":")
    for group in ("unseen", "val"):
        (hb, n), (ha, _) = anchored(before, group), anchored(after, group)
        line = [f"{before} -> {after}, {group}: junction anchor {hb}/{n} -> {ha}/{n}"]
        for kind, (low, high) in (("bodies", (1, 99)), ("discs", (100, 199))):
            b, a = per_case(before, group, low, high), per_case(after, group, low, high)
            up = [c for c in b if c in a and a[c] > b[c] + 0.005]
            down = [c for c in b if c in a and a[c] < b[c] - 0.005]
            if b:
                line.append(f"{kind}: {len(up)} cases up, {len(down)} down"
                            + "".join(f"; {c} {b[c]:.2f}->{a[c]:.2f}" for c in down))
        print("; ".join(line))
