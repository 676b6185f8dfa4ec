#!/usr/bin/env python3
"""HD95 on a 512x512x20 mask pair: medpy 0.5.2 next to spineseg, in one run.

    python3 bench/metrics_vs_medpy.py [--threads 2] [--repeats 3] [--rounds 3]

Builds a deterministic pair (a few blobby structures spread over the image, as one binary mask;
the prediction is the reference shifted by a voxel and perturbed), spacing 0.34 x 0.34 x 4.4 mm
(i, j in-plane, 20 sagittal slices along k), writes it as raw bytes to a temporary folder, times
`medpy.metric.binary.hd95(pred, ref, voxelspacing)` and runs
`cargo run --release -p spineseg-metrics --example hd95_bench` on the same files with
RAYON_NUM_THREADS=threads, alternating the two for a few rounds (the machine may be shared).
Prints both values, the best time of each side per round and the speed-up (medpy / spineseg).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from medpy.metric import binary as mb
from scipy import ndimage as ndi

SHAPE = (512, 512, 20)
SPACING = (0.34, 0.34, 4.4)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_pair(seed=7):
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE, bool)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij", sparse=True)
    # Five vertebra-sized blobs along j, two smaller ones off-axis: spread over the whole image.
    centres = [(256 + rng.integers(-30, 30), 60 + 90 * t, 10) for t in range(5)]
    centres += [(120, 200, 8), (400, 330, 12)]
    for t, (ci, cj, ck) in enumerate(centres):
        ri, rj, rk = (70, 35, 7) if t < 5 else (30, 30, 4)
        ref |= ((ii - ci) / ri) ** 2 + ((jj - cj) / rj) ** 2 + ((kk - ck) / rk) ** 2 <= 1.0
    noise = ndi.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), (4, 4, 1))
    ref &= noise > -0.25 * noise.std()
    pred = np.roll(ref, (2, -1, 1), axis=(0, 1, 2))
    pred ^= ndi.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), (3, 3, 1)) > 0.9 * 0.15
    pred = ndi.binary_opening(pred)
    return pred, ref


def run_spineseg(paths, threads, repeats):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "run", "--release", "-q", "-p", "spineseg-metrics", "--example", "hd95_bench", "--",
           *paths, *map(str, SHAPE), *map(str, SPACING), str(repeats)]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side and round (best is kept)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating medpy / spineseg rounds")
    args = ap.parse_args()

    pred, ref = make_pair()
    print(f"pair: shape {SHAPE}, spacing {SPACING} mm, ref {int(ref.sum())} voxels, pred {int(pred.sum())} voxels")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "spineseg-metrics", "--example", "hd95_bench"],
                   cwd=REPO, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, mask in (("pred", pred), ("ref", ref)):
            path = os.path.join(tmp, f"{name}.raw")
            mask.astype(np.uint8).ravel(order="F").tofile(path)  # i fastest
            paths.append(path)
        for _ in range(args.rounds):
            medpy_times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                medpy_value = mb.hd95(pred, ref, SPACING)
                medpy_times.append(time.perf_counter() - t0)
            rust = run_spineseg(paths, args.threads, args.repeats)
            rows.append((min(medpy_times), rust))

    ok = all(abs(r["hd95_pooled_mm"] - medpy_value) <= 1e-6 * abs(medpy_value) for _, r in rows)
    print(f"medpy.metric.binary.hd95 = {medpy_value:.6f} mm; spineseg pooled = {rows[-1][1]['hd95_pooled_mm']:.6f} mm, "
          f"MONAI definition = {rows[-1][1]['hd95_mm']:.6f} mm; agree within 1e-6: {ok}")
    print(f"{'round':>5} {'medpy s':>9} {'spineseg HD95 s':>16} {'all metrics s':>14} {'speed-up':>9}")
    ratios = []
    for n, (m, r) in enumerate(rows):
        ratios.append(m / r["hd95_best_s"])
        print(f"{n:>5} {m:>9.3f} {r['hd95_best_s']:>16.3f} {r['all_metrics_best_s']:>14.3f} {ratios[-1]:>8.1f}x")
    ratios.sort()
    print(f"speed-up over medpy (HD95, {rows[0][1]['threads']} threads): median {ratios[len(ratios) // 2]:.1f}x, "
          f"range {ratios[0]:.1f}-{ratios[-1]:.1f}x; load average {os.getloadavg()[0]:.1f}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
