#!/usr/bin/env python3
"""spineseg volume I/O against the reference tools, on the same volume in the same run.

    python3 bench/io_vs_reference.py [--repeats 7] [--skip-build]

1. Builds and runs `cargo run --release -p spineseg-io --example io_bench`, which generates a
   512 x 512 x 20 int16 MRI-like volume, times spineseg's write and read of .nii.gz and compressed
   .mha (median of --repeats), and dumps the voxels for step 2. If a format is not available
   (reader or writer missing), its rows say so and the rest still runs.
2. Times nibabel (.nii.gz: nib.save; nib.load + np.asarray(img.dataobj), and + get_fdata) and
   SimpleITK (.mha: WriteImage with compression; ReadImage) on the same voxels and geometry.
3. Repeats 1 and 2 for --rounds alternating rounds, then prints a table with ratios
   spineseg time / reference time (below 1: spineseg is faster).

Requires cargo, numpy, nibabel and SimpleITK.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np
import SimpleITK as sitk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (512, 512, 20)  # i, j, k
# The geometry io_bench.rs writes (RAS+): i -> posterior, j -> inferior, k -> right.
SPACING = (0.5859375, 0.5859375, 4.4)
DIRECTION_RAS = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
ORIGIN_RAS = np.array([-41.8, 150.0, 120.0])


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_spineseg(repeats, workdir, skip_build):
    raw = os.path.join(workdir, "volume.raw")
    cmd = ["cargo", "run", "--release", "-q", "-p", "spineseg-io", "--example", "io_bench", "--",
           "--repeats", str(repeats), "--json", "--dump-raw", raw, "--dir", os.path.join(workdir, "rust")]
    if not skip_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "spineseg-io", "--example", "io_bench"],
                       cwd=ROOT, check=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    voxels = np.fromfile(raw, dtype="<i2")
    assert voxels.size == np.prod(SHAPE), voxels.size
    return result, voxels.reshape(SHAPE[2], SHAPE[1], SHAPE[0])  # numpy [k, j, i]


def run_nibabel(volume_kji, repeats, workdir):
    path = os.path.join(workdir, "ref.nii.gz")
    affine = np.eye(4)
    affine[:3, :3] = DIRECTION_RAS * np.array(SPACING)
    affine[:3, 3] = ORIGIN_RAS
    data_ijk = volume_kji.transpose(2, 1, 0)  # nibabel's axis order; Fortran-contiguous view
    img = nib.Nifti1Image(data_ijk, affine)
    img.header.set_data_dtype(np.int16)

    write = median_time(lambda: nib.save(img, path), repeats)
    read = median_time(lambda: np.asarray(nib.load(path).dataobj), repeats)
    read_fdata = median_time(lambda: nib.load(path).get_fdata(), repeats)
    back = np.asarray(nib.load(path).dataobj)
    assert back.dtype == np.int16 and np.array_equal(back, data_ijk)
    return {"write_s": write, "read_s": read, "read_fdata_s": read_fdata, "bytes": os.path.getsize(path)}


def run_simpleitk(volume_kji, repeats, workdir):
    path = os.path.join(workdir, "ref.mha")
    img = sitk.GetImageFromArray(volume_kji)
    img.SetSpacing(SPACING)
    flip = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
    img.SetOrigin(tuple(ORIGIN_RAS * flip))
    img.SetDirection(tuple((DIRECTION_RAS * flip[:, None]).flatten()))

    write = median_time(lambda: sitk.WriteImage(img, path, True), repeats)
    read = median_time(lambda: sitk.ReadImage(path), repeats)
    back = sitk.GetArrayFromImage(sitk.ReadImage(path))
    assert np.array_equal(back, volume_kji)
    return {"write_s": write, "read_s": read, "bytes": os.path.getsize(path)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per operation and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of spineseg / reference")
    parser.add_argument("--skip-build", action="store_true", help="the example is already built")
    args = parser.parse_args()

    # Rounds alternate between the two sides, so a change in machine load during the run
    # (other builds, turbo) affects both; each number is the median over rounds of per-round medians.
    rounds = {"ours": [], "nib": [], "sitk": []}
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            ours, volume = run_spineseg(args.repeats, workdir, args.skip_build or round_index > 0)
            rounds["ours"].append(ours)
            rounds["nib"].append(run_nibabel(volume, args.repeats, workdir))
            rounds["sitk"].append(run_simpleitk(volume, args.repeats, workdir))

    def combine(results):
        out = {}
        for key, value in results[0].items():
            if isinstance(value, dict):
                out[key] = combine([r[key] for r in results])
            elif isinstance(value, (int, float)) and key != "repeats":
                out[key] = statistics.median(r[key] for r in results)
            else:
                out[key] = value
        return out

    ours, nib_result, sitk_result = combine(rounds["ours"]), combine(rounds["nib"]), combine(rounds["sitk"])

    print(f"Volume: {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16 MRI-like ({volume.nbytes / 2**20:.0f} MiB raw); "
          f"median over {args.rounds} alternating rounds of the median of {args.repeats} runs.")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
          f"nibabel {nib.__version__}, SimpleITK {sitk.Version_VersionString()}, numpy {np.__version__}")
    print()
    rows = []
    missing = "not available"

    def row(op, ours_s, ref_name, ref_s):
        if ours_s is None:
            rows.append((op, missing, f"{ref_name} {ref_s * 1e3:.1f}", "-"))
        else:
            rows.append((op, f"{ours_s * 1e3:.1f}", f"{ref_name} {ref_s * 1e3:.1f}", f"{ours_s / ref_s:.2f}"))

    nii, mha = ours.get("nii.gz"), ours.get("mha")
    row(".nii.gz write", nii and nii["write_s"], "nibabel", nib_result["write_s"])
    row(".nii.gz read", nii and nii["read_s"], "nibabel (asarray)", nib_result["read_s"])
    row(".nii.gz read", nii and nii["read_s"], "nibabel (get_fdata)", nib_result["read_fdata_s"])
    row(".mha write (zlib)", mha and mha["write_s"], "SimpleITK", sitk_result["write_s"])
    row(".mha read (zlib)", mha and mha["read_s"], "SimpleITK", sitk_result["read_s"])

    header = ("operation", "spineseg ms", "reference ms", "ratio")
    widths = [max(len(str(r[c])) for r in rows + [header]) for c in range(4)]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()
    sizes = [f"spineseg .nii.gz {nii['bytes'] / 2**20:.2f} MiB" if nii else None,
             f"nibabel .nii.gz {nib_result['bytes'] / 2**20:.2f} MiB",
             f"spineseg .mha {mha['bytes'] / 2**20:.2f} MiB" if mha else None,
             f"SimpleITK .mha {sitk_result['bytes'] / 2**20:.2f} MiB"]
    print("File sizes: " + ", ".join(s for s in sizes if s))
    print("ratio = spineseg time / reference time (below 1: spineseg is faster)")


if __name__ == "__main__":
    main()
