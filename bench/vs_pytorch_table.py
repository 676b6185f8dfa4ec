"""Prints the spineseg vs PyTorch table from the JSON lines of both benchmark halves.

Usage: python3 bench/vs_pytorch_table.py RESULTS.jsonl

RESULTS.jsonl holds the lines printed by crates/train/examples/vs_pytorch.rs ("side":
"spineseg") and bench/pytorch_unet.py ("side": "pytorch"), one workload per process. Fails
(exit 1) when a workload is missing or the two sides disagree on the parameter count or the
analytic FLOP count, i.e. when they did not measure the same network. The last line printed is
`ratios infer2d=A infer3d=B train2d=C train3d=D infer3d_s2=E train3d_s2=F` (spineseg time / PyTorch time).

Standard library only, so any Python 3 runs it.
"""

import json
import sys

NETWORK_WORKLOADS = ["infer2d", "infer3d", "train2d", "train3d", "infer3d_s2", "train3d_s2"]
SIDES = ["spineseg", "pytorch"]
# Above this, a run was disturbed by other processes (bench/vs_pytorch.sh retries such runs).
BUSY_CORES = 0.25


def fail(message):
    print(f"vs_pytorch_table: error: {message}", file=sys.stderr)
    sys.exit(1)


def load(path):
    results = {}
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                fail(f"{path}:{number}: not JSON ({err}): {line[:120]}")
            results[(record["side"], record["workload"])] = record
    for workload in NETWORK_WORKLOADS + ["matmul"]:
        for side in SIDES:
            if (side, workload) not in results:
                fail(f"{path}: no result for {side} {workload}")
    return results


def check_same_network(results):
    for workload in NETWORK_WORKLOADS:
        ours, theirs = results[("spineseg", workload)], results[("pytorch", workload)]
        if ours["params"] != theirs["params"]:
            fail(f"{workload}: parameter counts differ (spineseg {ours['params']}, PyTorch {theirs['params']})")
        if abs(ours["gflop"] - theirs["gflop"]) > 1e-6 * max(ours["gflop"], 1.0):
            fail(f"{workload}: analytic GFLOP differ (spineseg {ours['gflop']}, PyTorch {theirs['gflop']})")


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def main():
    if len(sys.argv) != 2:
        fail("usage: vs_pytorch_table.py RESULTS.jsonl")
    results = load(sys.argv[1])
    check_same_network(results)

    header = [
        "workload",
        "spineseg s",
        "PyTorch s",
        "ratio",
        "spineseg GFLOP/s",
        "PyTorch GFLOP/s",
        "spineseg peak MB",
        "PyTorch peak MB",
        "memory ratio",
    ]
    rows = [header]
    ratios = {}
    for workload in NETWORK_WORKLOADS:
        ours, theirs = results[("spineseg", workload)], results[("pytorch", workload)]
        ratio = ours["median_s"] / theirs["median_s"]
        ratios[workload] = ratio
        memory_ratio = (
            "n/a"
            if ours["peak_rss_mb"] is None or theirs["peak_rss_mb"] is None
            else f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}"
        )
        rows.append(
            [
                workload,
                f"{ours['median_s']:.3f}",
                f"{theirs['median_s']:.3f}",
                f"{ratio:.2f}",
                f"{ours['gflop'] / ours['median_s']:.1f}",
                f"{theirs['gflop'] / theirs['median_s']:.1f}",
                mb(ours["peak_rss_mb"]),
                mb(theirs["peak_rss_mb"]),
                memory_ratio,
            ]
        )
    print(table(rows))
    print()

    ours, theirs = results[("spineseg", "matmul")], results[("pytorch", "matmul")]
    print(
        f"matmul ceiling ({ours['gflop']:.1f} GFLOP f32 gemm): "
        f"spineseg {ours['gflop'] / ours['median_s']:.1f} GFLOP/s ({ours['median_s']:.3f} s), "
        f"PyTorch {theirs['gflop'] / theirs['median_s']:.1f} GFLOP/s ({theirs['median_s']:.3f} s)"
    )
    first = results[("spineseg", NETWORK_WORKLOADS[0])]
    print(
        f"median of {first['runs']} runs each; parameters 2D {first['params']}, "
        f"3D {results[('spineseg', 'infer3d')]['params']}, "
        f"stage-2 3D {results[('spineseg', 'infer3d_s2')]['params']} (equal on both sides); "
        f"GFLOP per run (convolutions, a training step counted as 3 forwards): "
        + ", ".join(f"{w} {results[('spineseg', w)]['gflop']:.1f}" for w in NETWORK_WORKLOADS)
    )
    base = {side: max(results[(side, w)]["base_rss_mb"] or 0.0 for w in NETWORK_WORKLOADS) for side in SIDES}
    print(
        f"peak MB = the process's peak resident set, one process per workload; resident set at "
        f"start-up: spineseg {base['spineseg']:.0f} MB, PyTorch {base['pytorch']:.0f} MB (after import torch)"
    )
    background = {
        (side, w): results[(side, w)].get("background_cores") for w in NETWORK_WORKLOADS + ["matmul"] for side in SIDES
    }
    if any(v is not None for v in background.values()):
        print(
            "CPU used by other processes during the runs (cores, spineseg/PyTorch): "
            + ", ".join(
                f"{w} {background[('spineseg', w)] or 0:.2f}/{background[('pytorch', w)] or 0:.2f}"
                for w in NETWORK_WORKLOADS + ["matmul"]
            )
        )
        if any((v or 0) > BUSY_CORES for v in background.values()):
            print(
                f"WARNING: other processes used more than {BUSY_CORES} cores during some runs; PyTorch (OpenMP) "
                "suffers from shared cores much more than spineseg, so those ratios are too low: rerun on an "
                "idle machine"
            )
    print("ratios " + " ".join(f"{w}={ratios[w]:.2f}" for w in NETWORK_WORKLOADS))


if __name__ == "__main__":
    main()
