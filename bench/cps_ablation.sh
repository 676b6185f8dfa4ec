#!/usr/bin/env bash
# SSHSNet stage-1 ablation (issue 13, docs/BENCHMARKS.md "Cross pseudo supervision"): 2D
# supervised vs 2D cross pseudo supervision (CPS), on the fixed left-out source VB2, with all
# labelled training cases and with a quarter of them (the other three quarters unlabelled).
#
#   bench/encoder_ablation.sh plan RUNS      # the VB2-out plan (RUNS/vb2/work), as the other ablations
#   bench/cps_ablation.sh quarter RUNS       # RUNS/vb2q/work: a quarter labelled, the rest unlabelled
#   bench/cps_ablation.sh arm RUNS ARM SEED  # ARM: sup-all, cps-all, cps-all-ramp, sup-q, cps-q or cps-q-ramp
#                                            # -> RUNS/<ARM><ARM_TAG>-s<SEED>
#                                            # (ARM_TAG names a variant, e.g. SUP_EPOCHS=30 ARM_TAG=-3k;
#                                            # ARM_FLAGS adds training flags, e.g. ARM_TAG=-dl
#                                            # ARM_FLAGS="--network deeplabv3plus", ARM_TAG=-25d ARM_FLAGS="--slice-context 1")
#   python3 bench/loso_arms.py RUNS sup-q=sup-q-s0,sup-q-s1,sup-q-s2 cps-q=cps-q-s0,...
#
# Stage 2 (SSHSNet's hybrid, 3d_fullres at the same 1.5 mm):
#   bench/cps_ablation.sh plan3d RUNS                      # RUNS/vb2-3d/work (3d_fullres, same cases and fold)
#                                                          # and RUNS/vb2q-3d/work (the quarter's split)
#   bench/cps_ablation.sh stage2 RUNS ARM SEED STAGE1_ARM  # ARM: hybrid, concat, prior (hybrid + --stage1-prior)
#                                                          # or prior-concat (concat + --stage1-prior),
#                                                          # on RUNS/<STAGE1_ARM>/model
#     -> RUNS/<ARM><STAGE2_TAG>-<STAGE1_ARM>-s<SEED>; STAGE2_EPOCHS (default 10) x 100 steps, same optimiser.
#
# Budget: the same CPU per arm. A supervised arm trains SUP_EPOCHS (default 10) x 100 steps; a
# CPS step costs CPS_COST (default 2.14, measured: docs/BENCHMARKS.md) supervised steps (two
# networks step, and both predict the unlabelled patches), so a CPS arm trains
# round(SUP_EPOCHS / CPS_COST) x 100 steps. Both: AdamW 2e-3 poly, batch 4 (CPS: 2 labelled +
# 2 unlabelled), --partial-labels (by-range-neighbours), default augmentation, the plan's U-Net.
# Unlabelled pool: the 297 T1/T2 mid-sagittal SPIDER images of ../shared/data/spider-gradings
# (no VB2 image), plus, in the quarter regime, the images of the training cases whose labels are
# withheld. The quarter: per training site, every fourth training case in sorted order (11 of
# 42); the validation fold is unchanged. Scoring: bench/loso.sh eval (raw network labels).
# Needs a release build (SPINESEG overrides the binary) and python3 with nibabel and numpy
# (PYTHON overrides the interpreter).
set -euo pipefail
stage=${1:?usage: cps_ablation.sh quarter|arm|plan3d|stage2 RUNS ...}
runs=${2:?usage: cps_ablation.sh quarter|arm|plan3d|stage2 RUNS ...}
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED:-$here/../../shared/data}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
python=${PYTHON:-python3}
export SPINESEG=$bin PYTHON=$python
sup_epochs=${SUP_EPOCHS:-10}
cps_cost=${CPS_COST:-2.14}
case "$stage" in
  plan3d)
    left_out=$("$python" - "$runs/merged/sources.json" <<'PY'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
print(",".join(sorted(c for c, v in cases.items() if v["site"] == "fastcleverseg VB2")))
PY
)
    "$bin" plan "$runs/merged" --out "$runs/vb2-3d/work" --configurations 3d_fullres --target-spacing 1.5,1.5,1.5 \
      --max-features 256 --exclude-cases "$left_out"
    # The same fold as the 2D arms (the stage-1 networks never saw its validation cases).
    cp "$runs/vb2/work/splits_final.json" "$runs/vb2-3d/work/"
    # The quarter regime's 3D work folder: the same preprocessed data, the quarter's split (stage 2
    # learns from the same 11 labelled cases as its stage 1).
    mkdir -p "$runs/vb2q-3d/work"
    for name in fingerprint.json labels.json plans.json preprocessed; do
      [ -e "$runs/vb2q-3d/work/$name" ] || ln -s "../../vb2-3d/work/$name" "$runs/vb2q-3d/work/$name"
    done
    cp "$runs/vb2q/work/splits_final.json" "$runs/vb2q-3d/work/"
    ;;
  stage2)
    arm=${3:?arm: hybrid or concat}
    seed=${4:?seed}
    stage1=${5:?stage-1 arm, e.g. cps-q-s0}
    case "$arm" in
      hybrid) extra=() ;;
      concat) extra=(--no-tri-attention) ;;
      prior) extra=(--stage1-prior) ;;
      prior-concat) extra=(--stage1-prior --no-tri-attention) ;;
      *) echo "unknown stage-2 arm $arm: expected hybrid, concat, prior or prior-concat" >&2; exit 2 ;;
    esac
    # A stage 1 of the quarter regime (sup-q-*, cps-q-*) gets the quarter's 3D split.
    case "$stage1" in
      *-q-*) work3d=vb2q-3d ;;
      *) work3d=vb2-3d ;;
    esac
    # STAGE2_TAG names a variant of the arm (its folder is $arm$STAGE2_TAG-$stage1-s$seed).
    out=$runs/$arm${STAGE2_TAG:-}-$stage1-s$seed
    mkdir -p "$out"
    [ -e "$out/work" ] || ln -s "../$work3d/work" "$out/work"
    "$bin" train "$out/work" --out "$out/model" --configuration 3d_fullres --fold 0 --epochs "${STAGE2_EPOCHS:-10}" \
      --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw --lr 0.002 --seed "$seed" \
      --partial-labels --quiet --stage1 "$runs/$stage1/model" "${extra[@]}"
    # Scored without test-time mirroring, as the 2D arms are (a 2D model has no mirror axis);
    # mirroring would double the 3D network's share of the evaluation.
    PREDICT_FLAGS=--disable-tta ARM=$arm${STAGE2_TAG:-}-$stage1-s$seed EVAL_LEVELS=${EVAL_LEVELS:-off} "$here/loso.sh" eval "$runs" vb2
    ;;
  quarter)
    "$python" - "$runs" <<'PY'
import json, os, sys
from pathlib import Path
runs = Path(sys.argv[1]).resolve()
full, quarter = runs / "vb2" / "work", runs / "vb2q" / "work"
quarter.mkdir(parents=True, exist_ok=True)
for name in ("fingerprint.json", "labels.json", "plans.json", "preprocessed"):
    link = quarter / name
    if not link.exists():
        link.symlink_to(full / name)
splits = json.load(open(full / "splits_final.json"))
sites = json.load(open(runs / "merged" / "sources.json"))["cases"]
train = sorted(splits[0]["train"])
by_site = {}
for case in train:
    by_site.setdefault(sites[case]["site"], []).append(case)
labelled = sorted(c for cases in by_site.values() for c in cases[::4])
withheld = [c for c in train if c not in labelled]
splits[0] = {"train": labelled, "val": splits[0]["val"]}
json.dump(splits, open(quarter / "splits_final.json", "w"), indent=2)
# The pool: the full pool's images (if an arm or `spineseg pretrain` made it), plus the withheld cases' images with no label file.
pool, full_pool = quarter / "unlabelled" / "2d", full / "unlabelled" / "2d"
pool.mkdir(parents=True, exist_ok=True)
for entry in full_pool.iterdir() if full_pool.is_dir() else []:
    link = pool / entry.name
    if not link.exists():
        link.symlink_to(entry)
src = full / "preprocessed" / "2d"
for case in withheld:
    header = json.load(open(src / f"{case}.json"))
    header["seg_file"] = None
    json.dump(header, open(pool / f"{case}.json", "w"), indent=2)
    data = pool / header["data_file"]
    if not data.exists():
        data.symlink_to(src / header["data_file"])
print(f"quarter: {len(labelled)} labelled ({', '.join(f'{s}: {len(c[::4])}' for s, c in sorted(by_site.items()))}), "
      f"{len(withheld)} withheld into the pool ({len([p for p in pool.iterdir() if p.suffix == '.json'])} unlabelled images)")
PY
    ;;
  arm)
    arm=${3:?arm: sup-all, cps-all, cps-all-ramp, sup-q, cps-q or cps-q-ramp}
    seed=${4:?seed}
    case "$arm" in
      sup-all|cps-all|cps-all-ramp) work=vb2 ;;
      sup-q|cps-q|cps-q-ramp) work=vb2q ;;
      *) echo "unknown arm $arm: expected sup-all, cps-all, cps-all-ramp, sup-q, cps-q or cps-q-ramp" >&2; exit 2 ;;
    esac
    case "$arm" in
      sup-*) epochs=$sup_epochs; extra=() ;;
      cps-*) epochs=$("$python" -c "print(max(1, round($sup_epochs / $cps_cost)))")
        extra=(--cps --images "$shared/spider-gradings/images")
        # cps-*-ramp: the CPS weight ramped up over the whole run (SSL4MIS's schedule).
        case "$arm" in *-ramp) extra+=(--cps-rampup $((epochs * 100))) ;; esac ;;
    esac
    # shellcheck disable=SC2206 # ARM_FLAGS is a list of flags, split on spaces on purpose.
    extra+=(${ARM_FLAGS:-})
    out=$runs/$arm${ARM_TAG:-}-s$seed
    mkdir -p "$out"
    [ -e "$out/work" ] || ln -s "../$work/work" "$out/work"
    "$bin" train "$out/work" --out "$out/model" --configuration 2d --fold 0 --epochs "$epochs" \
      --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw --lr 0.002 --seed "$seed" \
      --partial-labels --quiet "${extra[@]}"
    ARM=$arm${ARM_TAG:-}-s$seed EVAL_LEVELS=${EVAL_LEVELS:-off} "$here/loso.sh" eval "$runs" vb2
    ;;
  *) echo "unknown stage $stage: expected quarter, arm, plan3d or stage2" >&2; exit 2 ;;
esac
