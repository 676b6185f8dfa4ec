#!/usr/bin/env python3
"""Boundary accuracy with the level names set aside: each labelled reference structure is matched
to the predicted structure of the same kind (body or disc) that overlaps it most, whatever its
level, and the pair is scored by Dice and HD95 (mm, medpy's definition: the 95th percentile of
the surface distances in both directions, computed in the reference image's voxel spacing).

    python3 bench/matched_boundary.py RUNS NAME=ARM,ARM,ARM ...

Reads RUNS/<arm>/{unseen,val}/pred_levels_off (raw network labels) and RUNS/<arm>/{unseen,val}/labels.
A reference structure no predicted structure touches is "missed" (no distance). Per arm and
group: mean matched Dice (a miss counts 0), mean HD95 over the matched structures, share matched;
then mean (min..max) over the arms of a setting. Each arm's scores are cached in
RUNS/<arm>/eval/matched_boundary_<group>.json. Needs nibabel, numpy and scipy.
"""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, spatial

KINDS = {"bodies": (1, 26), "discs": (101, 125)}


def surface(mask):
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def hd95(a, b, spacing):
    # Nearest-surface distances through k-d trees of the two surfaces' points (in mm): the same
    # distances as medpy's distance transforms, without transforming the whole box.
    pa = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    to_b = spatial.cKDTree(pb).query(pa)[0]
    to_a = spatial.cKDTree(pa).query(pb)[0]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def union_box(a, b):
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def score_case(pred_path, ref_path):
    ref_img = nib.load(str(ref_path))
    ref = np.asarray(ref_img.dataobj).astype(np.int32)
    pred = np.asarray(nib.load(str(pred_path)).dataobj).astype(np.int32)
    spacing = ref_img.header.get_zooms()[:3]
    ref_boxes = ndimage.find_objects(ref)
    pred_boxes = ndimage.find_objects(pred)
    rows = {kind: [] for kind in KINDS}
    for kind, (low, high) in KINDS.items():
        for label in np.unique(ref):
            if not low <= label <= high:
                continue
            ref_box = ref_boxes[label - 1]
            r_small = ref[ref_box] == label
            overlap = pred[ref_box][r_small]
            overlap = overlap[(overlap >= low) & (overlap <= high)]
            if overlap.size == 0:
                rows[kind].append((0.0, None))
                continue
            best = int(np.bincount(overlap).argmax())
            box = union_box(ref_box, pred_boxes[best - 1])
            r, p = ref[box] == label, pred[box] == best
            dice = 2.0 * np.count_nonzero(r & p) / (np.count_nonzero(r) + np.count_nonzero(p))
            rows[kind].append((dice, hd95(r, p, spacing)))
    return rows


def score_arm(folder, group):
    # Cached beside the arm's other scores: the predictions of a finished arm do not change.
    cache = folder / "eval" / f"matched_boundary_{group}.json"
    if cache.exists():
        return {kind: tuple(v) for kind, v in json.load(open(cache)).items()}
    out = score_predictions(folder, group)
    cache.parent.mkdir(parents=True, exist_ok=True)
    json.dump(out, open(cache, "w"), indent=1)
    return out


def score_predictions(folder, group):
    rows = {kind: [] for kind in KINDS}
    pred_dir, ref_dir = folder / group / "pred_levels_off", folder / group / "labels"
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        pred_path = pred_dir / ref_path.name
        if not pred_path.exists():
            sys.exit(f"{pred_path}: missing prediction")
        for kind, values in score_case(pred_path, ref_path).items():
            rows[kind] += values
    out = {}
    for kind, values in rows.items():
        if not values:
            continue
        matched = [h for _, h in values if h is not None]
        out[kind] = (
            sum(d for d, _ in values) / len(values),
            sum(matched) / len(matched) if matched else float("nan"),
            len(matched) / len(values),
        )
    return out


def cell(values, digits, scale=1.0, suffix=""):
    values = [v * scale for v in values if v == v]
    if not values:
        return "-"
    spread = f" ({min(values):.{digits}f}..{max(values):.{digits}f})" if len(values) > 1 else ""
    return f"{sum(values) / len(values):.{digits}f}{suffix}{spread}"


def main():
    root = Path(sys.argv[1])
    columns = [("unseen", "bodies"), ("val", "bodies"), ("val", "discs")]
    head = " | ".join(f"{g} {k} Dice | {g} {k} HD95 mm | {g} {k} matched" for g, k in columns)
    print(f"| setting (seeds) | {head} |")
    print("|---|" + "---|---|---|" * len(columns))
    for spec in sys.argv[2:]:
        name, arms = spec.split("=", 1)
        arms = arms.split(",")
        scores = {(g, a): score_arm(root / a, g) for g in ("unseen", "val") for a in arms}
        cells = []
        for group, kind in columns:
            triples = [scores[(group, a)].get(kind, (float("nan"),) * 3) for a in arms]
            cells += [
                cell([t[0] for t in triples], 3),
                cell([t[1] for t in triples], 1),
                cell([t[2] for t in triples], 0, 100, " %"),
            ]
        print(f"| {name} ({len(arms)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
