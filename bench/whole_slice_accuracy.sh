#!/usr/bin/env bash
# Accuracy and time of `predict --whole-slice` and of `--step-size 1.0` against the default
# overlapping windows (step 0.5), with the
# shipped 2D model on the cases it did not train on (fold 0's validation cases of
# models/lumbar-2d/training/splits_final.json), read from a merged dataset folder
# (`spineseg dataset merge ../shared/data/lumbar-real ../shared/data/spider-t2space --out MERGED`).
#
#   bench/whole_slice_accuracy.sh MERGED [WORK]   (WORK: scratch folder, default a temporary one)
#
# Prints, per mode, the mean Dice over (case, structure) pairs with a reference (bodies, discs,
# canal and posterior elements separately, level assignment on as `predict` does by default),
# the share of bodies named at the right level (bench/level_naming.py, needs nibabel) and the
# summed network and total seconds (`--timings`).
set -euo pipefail

die() {
    echo "whole_slice_accuracy.sh: error: $*" >&2
    exit 1
}
MERGED="${1:?usage: bench/whole_slice_accuracy.sh MERGED [WORK]}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
MODEL="$ROOT/models/lumbar-2d"
PYTHON="${PYTHON:-python3}"
WORK="${2:-$(mktemp -d "${TMPDIR:-/tmp}/whole_slice.XXXXXX")}"
[[ -f "$MERGED/dataset.json" ]] || die "$MERGED: not a dataset folder (no dataset.json)"
cargo build --release -p spineseg-cli >&2 || die "cargo build --release -p spineseg-cli failed"
BIN="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/spineseg"

mkdir -p "$WORK/images" "$WORK/labels"
for case in $(python3 -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))[0]['val']))" \
    "$MODEL/training/splits_final.json"); do
    cp -n "$MERGED/imagesTr/${case}_0000.nii.gz" "$WORK/images/" || die "$case: image missing in $MERGED"
    cp -n "$MERGED/labelsTr/$case.nii.gz" "$WORK/labels/" || die "$case: labels missing in $MERGED"
done

echo "cases: $(ls "$WORK/labels" | wc -l) (fold 0 validation of models/lumbar-2d); CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores"
echo
echo "| windows | bodies Dice | discs Dice | canal Dice | posterior elements Dice | bodies named right | network s | total s |"
echo "|---------|-------------|------------|------------|-------------------------|--------------------|-----------|---------|"
for mode in patches patches-step-1.0 whole-slice; do
    extra=()
    [[ "$mode" == whole-slice ]] && extra+=(--whole-slice)
    [[ "$mode" == patches-step-1.0 ]] && extra+=(--step-size 1.0)
    pred="$WORK/pred-$mode"
    rm -rf "$pred"
    "$BIN" predict -m "$MODEL" -i "$WORK/images" -o "$pred" --timings "${extra[@]}" >"$WORK/$mode.log" 2>&1 ||
        { tail -n 20 "$WORK/$mode.log" >&2; die "predict ($mode) failed"; }
    "$BIN" evaluate --pred "$pred" --ref "$WORK/labels" --dataset-json "$MERGED/dataset.json" \
        --out "$WORK/eval-$mode" >/dev/null || die "evaluate ($mode) failed"
    "$PYTHON" bench/level_naming.py "$pred" "$WORK/labels" --json "$WORK/eval-$mode/naming.json" >/dev/null ||
        die "level_naming.py ($mode) failed"
    python3 - "$mode" "$WORK/eval-$mode/metrics.csv" "$WORK/eval-$mode/naming.json" "$WORK/$mode.log" <<'EOF'
import csv, json, math, re, sys
mode, metrics, naming, log = sys.argv[1:]
kinds = {"body": [], "disc": [], "canal": [], "posterior": []}
for row in csv.DictReader(open(metrics)):
    if int(row["ref_voxels"]) == 0:
        continue
    name = row["structure"]
    kind = "canal" if name == "spinal canal" else "posterior" if name == "posterior elements" else "disc" if "/" in name else "body"
    dice = float(row["dice"])
    kinds[kind].append(0.0 if math.isnan(dice) else dice)
mean = lambda v: f"{sum(v) / len(v):.3f} ({len(v)})" if v else "-"
named = json.load(open(naming))["totals"]["body"]
network = total = 0.0
for line in open(log):
    m = re.match(r"timings .*network ([0-9.]+) s.*\(total ([0-9.]+) s\)", line)
    if m:
        network += float(m.group(1))
        total += float(m.group(2))
print(f"| {mode} | {mean(kinds['body'])} | {mean(kinds['disc'])} | {mean(kinds['canal'])} | {mean(kinds['posterior'])} "
      f"| {named['right']}/{named['n']} | {network:.1f} | {total:.1f} |")
EOF
done
