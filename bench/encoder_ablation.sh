#!/usr/bin/env bash
# Encoder ablation (issue 15, docs/BENCHMARKS.md "Pretrained encoders"): the plan's U-Net
# encoder vs ConvNeXt V2 from scratch vs ConvNeXt V2 pretrained with FCMAE, on the fixed left-out
# source VB2, with the same plan, steps, seeds and flags as the other VB2 ablations.
#
#   bench/encoder_ablation.sh plan RUNS              # merge the DEV data, plan without VB2 (RUNS/vb2/work)
#   bench/encoder_ablation.sh pretrain RUNS          # FCMAE -> RUNS/fcmae (spider-gradings images + fold-0 training images)
#   bench/encoder_ablation.sh arm RUNS ARM SEED      # ARM: plain, convnext or fcmae -> RUNS/<ARM>-s<SEED>
#   python3 bench/loso_arms.py RUNS plain=plain-s0,plain-s1,plain-s2 convnext=... fcmae=...
#
# The plan is bench/loso.sh's VB2 plan (2D at 1.5 mm, patch 160, batch 4, 6 stages 16..256);
# every arm trains 1,000 steps (10 x 100), AdamW 2e-3 poly, --partial-labels (by-range-neighbours),
# default augmentation; then bench/loso.sh eval scores the raw network labels on VB2 and on the
# fold-0 validation cases. Pretraining: PRETRAIN_EPOCHS (default 10) x 100 steps, AdamW 1e-3,
# mask ratio 0.6, on ../shared/data/spider-gradings/images (T1 and T2 of SPIDER patients: no
# VB2 image) plus the fold-0 training images of the VB2-out plan; its CPU time is in
# RUNS/fcmae/model.json (training.train_time_s).
# Needs a release build (SPINESEG overrides the binary) and python3 with nibabel and numpy
# (PYTHON overrides the interpreter).
set -euo pipefail
stage=${1:?usage: encoder_ablation.sh plan|pretrain|arm RUNS ...}
runs=${2:?usage: encoder_ablation.sh plan|pretrain|arm RUNS ...}
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED:-$here/../../shared/data}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
python=${PYTHON:-python3}
export SPINESEG=$bin PYTHON=$python
mkdir -p "$runs"
case "$stage" in
  plan)
    "$here/loso.sh" prepare "$runs"
    left_out=$("$python" - "$runs/merged/sources.json" <<'PY'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
print(",".join(sorted(c for c, v in cases.items() if v["site"] == "fastcleverseg VB2")))
PY
)
    "$bin" plan "$runs/merged" --out "$runs/vb2/work" --configurations 2d --target-spacing 1.5,1.5,1.5 \
      --max-features 256 --batch-size 4 --exclude-cases "$left_out"
    ;;
  pretrain)
    "$bin" pretrain "$runs/vb2/work" --images "$shared/spider-gradings/images" --out "$runs/fcmae" \
      --epochs "${PRETRAIN_EPOCHS:-10}" --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw \
      --seed 0 --quiet
    ;;
  arm)
    arm=${3:?arm: plain, convnext or fcmae}
    seed=${4:?seed}
    case "$arm" in
      plain) extra=() ;;
      convnext) extra=(--encoder-kind convnext-v2) ;;
      fcmae) extra=(--encoder "$runs/fcmae") ;;
      *) echo "unknown arm $arm: expected plain, convnext or fcmae" >&2; exit 2 ;;
    esac
    out=$runs/$arm-s$seed
    mkdir -p "$out"
    [ -e "$out/work" ] || ln -s ../vb2/work "$out/work"
    "$bin" train "$out/work" --out "$out/model" --configuration 2d --fold 0 --epochs 10 \
      --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw --lr 0.002 --seed "$seed" \
      --partial-labels --quiet "${extra[@]}"
    ARM=$arm-s$seed EVAL_LEVELS=off "$here/loso.sh" eval "$runs" vb2
    ;;
  *) echo "unknown stage $stage: expected plan, pretrain or arm" >&2; exit 2 ;;
esac
