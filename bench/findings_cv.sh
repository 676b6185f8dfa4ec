#!/usr/bin/env bash
# Disc findings: patient-level 5-fold cross-validation on spider-gradings (DEV), per arm and seed
# (docs/BENCHMARKS.md, "Disc findings").
#
#   bench/findings_cv.sh rois RUNS                 # segment every image once: RUNS/rois
#   bench/findings_cv.sh arm RUNS HEAD SEQ SEED    # 5 folds -> RUNS/HEAD-SEQ-sSEED/{fold*,all.csv,summary.json}
#   python3 bench/findings_table.py RUNS           # the table (mean and spread over seeds)
#
# HEAD is visual or text, SEQ t2 or t1-t2. Every arm trains STEPS (default 600) steps per fold with
# the same settings; thresholds are chosen on validation patients inside each training fold;
# the five held-out folds together cover every patient once and are scored with
# `spineseg evaluate-findings` against gradings.csv (1000 bootstrap resamples over patients).
# PRETRAIN_STEPS=N (text head only) adds N contrastive image-text steps on each fold's training
# patients before the supervised ones (`--image-text-pretrain-steps`); the arm is then
# RUNS/HEAD-SEQ-clip-sSEED, e.g. text-t1-t2-clip-s0. ENCODER=convnext-v2 trains a ConvNeXt V2
# image encoder from scratch (arm suffix -convnext), ENCODER=DIR one started from the encoder
# folder DIR (`spineseg pretrain`; arm suffix -fcmae), e.g. text-t1-t2-fcmae-s0.
# Needs a release build (`cargo build --release -p spineseg-cli`; SPINESEG overrides the binary)
# and, for the text head, the text encoder (scripts/fetch_text_encoder.sh).
set -euo pipefail
stage=${1:?usage: findings_cv.sh rois|arm RUNS ...}
runs=${2:?usage: findings_cv.sh rois|arm RUNS ...}
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED:-$here/../../shared/data}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
model=${MODEL:-$here/../models/lumbar-2d}
steps=${STEPS:-600}
pretrain_steps=${PRETRAIN_STEPS:-0}
gradings=$shared/spider-gradings/gradings.csv
mkdir -p "$runs"
case "$stage" in
  rois)
    "$bin" findings rois --images "$shared/spider-gradings/images" -m "$model" --sequences t1,t2 -o "$runs/rois" \
      2>&1 | tee "$runs/rois.log"
    ;;
  arm)
    head=${3:?head: visual or text}
    seq=${4:?sequences: t2 or t1-t2}
    seed=${5:?seed}
    arm=$runs/$head-$seq-s$seed
    pretrain=()
    if [ "$pretrain_steps" -gt 0 ]; then
      arm=$runs/$head-$seq-clip-s$seed
      pretrain=(--image-text-pretrain-steps "$pretrain_steps")
    fi
    encoder=()
    case "${ENCODER:-}" in
      "") ;;
      convnext-v2) arm=${arm%-s$seed}-convnext-s$seed; encoder=(--encoder-kind convnext-v2) ;;
      *) arm=${arm%-s$seed}-fcmae-s$seed; encoder=(--encoder "$ENCODER") ;;
    esac
    mkdir -p "$arm"
    for fold in 0 1 2 3 4; do
      "$bin" findings train --rois "$runs/rois" --gradings "$gradings" --head "$head" --sequences "$seq" \
        --folds 5 --fold "$fold" --seed "$seed" --steps "$steps" "${pretrain[@]}" "${encoder[@]}" -o "$arm/fold$fold" > "$arm/fold$fold.log" 2>&1
    done
    head -n 1 "$arm/fold0/heldout_findings.csv" > "$arm/all.csv"
    for fold in 0 1 2 3 4; do tail -n +2 "$arm/fold$fold/heldout_findings.csv" >> "$arm/all.csv"; done
    "$bin" evaluate-findings --pred "$arm/all.csv" --ref "$gradings" -o "$arm/summary.json" --bootstrap 1000 --seed 0 \
      > "$arm/summary.txt"
    cat "$arm/summary.txt"
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
