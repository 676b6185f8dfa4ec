#!/usr/bin/env python3
"""Level naming of vertebral bodies and discs: for every reference instance (a body or a disc with
an ontology level id), the predicted label that covers most of its voxels.

    level_naming.py PRED_DIR REF_DIR [--json OUT]

A reference instance is
- named right when the most frequent non-background predicted label over its voxels is its own
  label,
- named wrong when it is another body or disc label (the shift in levels is reported),
- missed when fewer than 10 % of its voxels are predicted as any body or disc.
Labels are ontology ids (vertebrae 1-25 and the sacrum 26, discs 100 + the vertebra above;
crates/anatomy). Prints one line per case and the totals; with --json also writes them.
"""
import json
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np


def is_body(v):
    return 1 <= v <= 26


def is_disc(v):
    return 101 <= v <= 125


def level_shift(ref, pred):
    """Signed shift in levels (positive: the prediction names a lower level)."""
    if is_body(ref) and is_body(pred):
        return int(pred - ref)
    if is_disc(ref) and is_disc(pred):
        return int(pred - ref)
    return None


def main():
    pred_dir, ref_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[sys.argv.index("--json") + 1]) if "--json" in sys.argv else None
    totals = Counter()
    cases = {}
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        pred_path = pred_dir / ref_path.name
        if not pred_path.exists():
            print(f"{ref_path.name}: no prediction", file=sys.stderr)
            continue
        ref = np.asarray(nib.load(str(ref_path)).dataobj).astype(np.int32)
        pred = np.asarray(nib.load(str(pred_path)).dataobj).astype(np.int32)
        if ref.shape != pred.shape:
            sys.exit(f"{pred_path}: shape {pred.shape} differs from the reference's {ref.shape}")
        rows = []
        for label in sorted(int(v) for v in np.unique(ref) if is_body(v) or is_disc(v)):
            voxels = pred[ref == label]
            kind = "body" if is_body(label) else "disc"
            counts = Counter(int(v) for v in voxels if is_body(v) or is_disc(v))
            covered = sum(counts.values()) / max(len(voxels), 1)
            if covered < 0.1 or not counts:
                outcome, shift = "missed", None
            else:
                named = counts.most_common(1)[0][0]
                shift = level_shift(label, named)
                outcome = "right" if named == label else "wrong"
            totals[(kind, outcome)] += 1
            rows.append({"label": label, "kind": kind, "outcome": outcome, "shift": shift, "covered": round(covered, 3)})
        cases[ref_path.name] = rows
        summary = " ".join(f"{r['label']}:{r['outcome'][0]}" + (f"{r['shift']:+d}" if r["shift"] else "") for r in rows)
        print(f"{ref_path.name}: {summary}")
    result = {}
    for kind in ("body", "disc"):
        n = sum(totals[(kind, o)] for o in ("right", "wrong", "missed"))
        if n:
            result[kind] = {o: totals[(kind, o)] for o in ("right", "wrong", "missed")}
            result[kind]["n"] = n
            result[kind]["right_fraction"] = totals[(kind, "right")] / n
            print(f"{kind}: {n} instances, named right {totals[(kind, 'right')]} ({100 * totals[(kind, 'right')] / n:.1f} %), "
                  f"wrong {totals[(kind, 'wrong')]}, missed {totals[(kind, 'missed')]}")
    if out:
        out.write_text(json.dumps({"totals": result, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
