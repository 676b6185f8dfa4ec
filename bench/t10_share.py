"""Share of each case's voxels an arm's raw labels put in T10 (17) or T10/T11 (117), mean over the
cases of each evaluation group (issue 13, docs/BENCHMARKS.md "Stage 2 with stage-1 context"):
a partial-label network can fill the background with classes few cases annotate.

    python3 bench/t10_share.py RUNS ARM [ARM ...]   # reads RUNS/ARM/{unseen,val}/pred_levels_off
"""
import glob
import sys

import nibabel as nib
import numpy as np

T10_CLASSES = [17, 117]


def main():
    runs, arms = sys.argv[1], sys.argv[2:]
    for arm in arms:
        row = []
        for group in ("unseen", "val"):
            files = sorted(glob.glob(f"{runs}/{arm}/{group}/pred_levels_off/*.nii.gz"))
            shares = [np.isin(np.asarray(nib.load(f).dataobj), T10_CLASSES).mean() for f in files]
            row.append(f"{group} {100 * np.mean(shares):.1f} % ({len(files)} cases)" if shares else f"{group} -")
        print(arm, *row)


if __name__ == "__main__":
    main()
