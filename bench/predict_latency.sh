#!/usr/bin/env bash
# Whole-volume latency of `spineseg predict` with the shipped model on real volumes of three
# sizes, split into read, preprocess, network, postprocess and write (`predict --timings`), with
# the process's peak memory. Prints a Markdown table naming the CPU.
#
#   bench/predict_latency.sh [--model DIR] [--data DIR]   (defaults models/lumbar-2d, ../shared/data)
#
# Cases: ivd_11 (221 x 221 x 59, 1 mm) and vb2_09 (381 x 381 x 72, 1 mm) of lumbar-real, and
# spider_35 of spider-t2space (619 x 363 x 20, 0.47 x 0.47 x 1 mm, the largest field of view
# there). Each runs at nnU-Net's window step 0.5 (the default) and at step 1.0 (fewer windows),
# with test-time mirroring on (the default) and off: the shipped 2D model has no anatomically
# safe mirror axis, so for it the two are the same run. Each configuration runs once, after one
# warm-up run of the first case (file cache), on an otherwise idle machine.
set -euo pipefail

die() {
    echo "predict_latency.sh: error: $*" >&2
    exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL=models/lumbar-2d
DATA=../shared/data
while [[ $# -gt 0 ]]; do
    case "$1" in
    --model) MODEL="${2:?--model needs a folder}"; shift 2 ;;
    --data) DATA="${2:?--data needs a folder}"; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: bench/predict_latency.sh [--model DIR] [--data DIR])" ;;
    esac
done
CASES=(
    "$DATA/lumbar-real/imagesTr/ivd_11_0000.nii.gz"
    "$DATA/lumbar-real/imagesTr/vb2_09_0000.nii.gz"
    "$DATA/spider-t2space/imagesTr/spider_35_0000.nii.gz"
)
for case in "${CASES[@]}"; do
    [[ -f "$case" ]] || die "$case: no such file (is --data the shared data folder?)"
done
[[ -f "$MODEL/model.json" ]] || die "$MODEL: not a model folder (no model.json)"

echo "== building spineseg (release)" >&2
cargo build --release -p spineseg-cli >&2 || die "cargo build --release -p spineseg-cli failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/spineseg"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/predict_latency.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
flags="$(grep -o -w -E 'avx512f|avx512bw|avx512vl|avx512_bf16|avx2|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
shape() {
    python3 - "$1" <<'EOF'
import gzip, struct, sys
with gzip.open(sys.argv[1]) as f:
    header = f.read(348)
dims = struct.unpack("<8h", header[40:56])
pixdim = struct.unpack("<8f", header[76:108])
print(" x ".join(str(d) for d in dims[1:dims[0] + 1]), "@", " x ".join(f"{p:g}" for p in pixdim[1:dims[0] + 1]), "mm")
EOF
}

"$BIN" predict -m "$MODEL" -i "${CASES[0]}" -o "$OUT/" >/dev/null 2>&1 || die "warm-up prediction failed"
echo "spineseg predict, model $MODEL, $(nproc) cores; CPU: $cpu ($flags)"
echo
echo "| case | size | step | TTA | read s | preprocess s | network s | postprocess s | write s | total s | wall s | peak MiB |"
echo "|------|------|------|-----|--------|--------------|-----------|---------------|---------|---------|--------|----------|"
for case in "${CASES[@]}"; do
    size="$(shape "$case")"
    for step in 0.5 1.0; do
        for tta in on off; do
            extra=()
            [[ "$tta" == off ]] && extra+=(--disable-tta)
            start="$(date +%s.%N)"
            line="$("$BIN" predict -m "$MODEL" -i "$case" -o "$OUT/" --step-size "$step" --timings "${extra[@]}" 2>"$OUT/log" |
                grep '^timings ')" || { cat "$OUT/log" >&2; die "prediction of $case failed"; }
            wall="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')"
            # "timings ID: read A s, preprocess B s, network C s, postprocess D s, write E s (total F s); peak memory G MiB"
            echo "$line" | awk -v size="$size" -v step="$step" -v tta="$tta" -v wall="$wall" '{
                id = $2; sub(/:$/, "", id)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                    id, size, step, tta, $4, $7, $10, $13, $16, $19, wall, $23
            }'
        done
    done
done
