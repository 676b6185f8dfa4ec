#!/usr/bin/env bash
# A T1 + T2 findings arm's fold models given one sequence only (docs/BENCHMARKS.md, "Disc findings"):
# each fold's saved model predicts its held-out patients from SEQ (t2 or t1-t2), the five folds are
# joined and scored.
#
#   bench/findings_one_sequence.sh RUNS ARM SEQ     # e.g. RUNS text-t1-t2-s0 t2 -> RUNS/ARM/given-t2.json
set -euo pipefail
runs=${1:?RUNS}; arm=${2:?ARM}; seq=${3:?t2 or t1-t2}
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED:-$here/../../shared/data}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
gradings=$shared/spider-gradings/gradings.csv
out=$runs/$arm/given-$seq
mkdir -p "$out"
for fold in 0 1 2 3 4; do
  "$bin" findings predict --rois "$runs/rois" --gradings "$gradings" -f "$runs/$arm/fold$fold" --sequences "$seq" \
    --folds 5 --fold "$fold" -o "$out/fold$fold.csv" > /dev/null
done
head -n 1 "$out/fold0.csv" > "$out/all.csv"
for fold in 0 1 2 3 4; do tail -n +2 "$out/fold$fold.csv" >> "$out/all.csv"; done
"$bin" evaluate-findings --pred "$out/all.csv" --ref "$gradings" -o "$runs/$arm/given-$seq.json" --bootstrap 200 --seed 0 \
  | sed -n '1,9p'
