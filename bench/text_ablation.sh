#!/usr/bin/env bash
# Text-guidance ablation on ../shared/data/lumbar-real (docs/BENCHMARKS.md, "Text guidance:
# ablation"): visual-only vs text-guided U-Net, same plan, split, steps and seeds, partial labels
# (vertebral-body cases and disc cases in one model).
#
#   bench/text_ablation.sh train RUNS   # plan + 6 training runs (about 16 min each on 2 cores)
#   bench/text_ablation.sh eval RUNS    # predict + evaluate the validation cases, print the table
#
# Needs a release build (`cargo build --release -p spineseg-cli`; SPINESEG overrides the binary)
# and, for the text arm, the text encoder (scripts/fetch_text_encoder.sh).
set -euo pipefail
stage=${1:?usage: text_ablation.sh train|eval RUNS}
runs=${2:?usage: text_ablation.sh train|eval RUNS}
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-$here/../../shared/data/lumbar-real}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
seeds=${SEEDS:-"0 1 2"}
mkdir -p "$runs"

if [ "$stage" = train ]; then
  "$bin" plan "$data" --out "$runs/work" --configurations 2d --target-spacing 1.5,1.5,1.5 --max-features 256 --batch-size 4
  # Fold 0 = the engine benchmark's fold (the same 9 vertebral-body validation cases) plus one of
  # the three disc cases; the other two disc cases train.
  cp "$here/lumbar-real-splits.json" "$runs/work/splits_final.json"
  for seed in $seeds; do
    for arm in visual text; do
      extra=(); [ "$arm" = text ] && extra=(--text-guided)
      "$bin" train "$runs/work" --out "$runs/${arm}_s$seed" --configuration 2d --fold 0 --epochs 15 \
        --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw --lr 0.002 --seed "$seed" \
        --partial-labels --partial-label-rule by-kind "${extra[@]}" --quiet
    done
  done
elif [ "$stage" = eval ]; then
  val=$(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))[0]['val']))" "$here/lumbar-real-splits.json")
  # Each case is scored only on the structures its dataset labels: bodies (1-9) on the VB cases,
  # discs (10-15) on the disc case.
  mkdir -p "$runs/val_images" "$runs/val_labels/vb" "$runs/val_labels/ivd"
  for case in $val; do
    group=vb; [[ $case == ivd_* ]] && group=ivd
    cp -n "$data/imagesTr/${case}_0000.nii.gz" "$runs/val_images/"
    cp -n "$data/labelsTr/$case.nii.gz" "$runs/val_labels/$group/"
  done
  for model in "$runs"/visual_s* "$runs"/text_s*; do
    [ -f "$model/model.json" ] || continue
    name=$(basename "$model")
    [ -d "$runs/pred/$name" ] || "$bin" predict -i "$runs/val_images" -o "$runs/pred/$name" -m "$model" --largest-component
    mkdir -p "$runs/pred/$name.vb" "$runs/pred/$name.ivd"
    for f in "$runs/pred/$name"/*.nii.gz; do
      group=vb; [[ $(basename "$f") == ivd_* ]] && group=ivd
      cp "$f" "$runs/pred/$name.$group/"
    done
    "$bin" evaluate --pred "$runs/pred/$name.vb" --ref "$runs/val_labels/vb" --labels 1,2,3,4,5,6,7,8,9 \
      --dataset-json "$data/dataset.json" --out "$runs/eval/$name/vb" > /dev/null
    "$bin" evaluate --pred "$runs/pred/$name.ivd" --ref "$runs/val_labels/ivd" --labels 10,11,12,13,14,15 \
      --dataset-json "$data/dataset.json" --out "$runs/eval/$name/ivd" > /dev/null
  done
  python3 "$here/ablation_table.py" "$runs/eval"
else
  echo "unknown stage $stage: expected train or eval" >&2; exit 2
fi
