#!/usr/bin/env bash
# Leave-one-source-out on the DEV data (docs/BENCHMARKS.md, "Unseen sources: leave-one-source-out"):
# lumbar-real (sites: fastcleverseg VB3 = MyoSegmenTUM T1 water-fat bodies, fastcleverseg VB2 =
# T2 TSE bodies, fastcleverseg IVD = discs) and spider-t2space (SPIDER T2 SPACE: bodies, discs,
# canal, posterior elements) merged into one ontology label space; for a left-out site, plan and
# train on the other sites only, then score the left-out site's cases per structure and per level,
# with the level-assignment step on and off, and fold 0's validation cases (training sites) as the
# second column.
#
#   bench/loso.sh prepare RUNS                  # merge the datasets into RUNS/merged
#   bench/loso.sh train RUNS SITE [train flags]  # plan without SITE, train RUNS/SITE/model
#   bench/loso.sh eval RUNS SITE                # predict + evaluate SITE and the validation fold
#   python3 bench/loso_table.py RUNS            # the table
#
# SITE is one of vb3 vb2 ivd spider. Budget and settings: EPOCHS (default 10) x 100 iterations,
# AdamW 2e-3, batch 4, 2D at 1.5 mm, partial labels (default rule: by-range-neighbours), SEED
# (default 0). EVAL_GROUPS (default "unseen val") and EVAL_LEVELS (default "on off") narrow the
# evaluation (an ablation arm needs only the raw labels: EVAL_LEVELS=off; with both, each case is
# predicted once, the raw labels written by `predict --network-labels`); EVAL_EVERY=N scores
# every Nth case of the left-out site. REPORTS=FILE (case id -> report text, `spineseg text
# reports`) predicts the cases it lists with `--report` (models trained with `--reports`).
# PREDICT_FLAGS adds flags to every `spineseg predict` (e.g. --disable-tta).
# Needs a release build (`cargo build --release -p spineseg-cli`; SPINESEG overrides the binary)
# and, for the naming score, python3 with nibabel and numpy (PYTHON overrides the interpreter).
set -euo pipefail
stage=${1:?usage: loso.sh prepare|train|eval RUNS [SITE]}
runs=${2:?usage: loso.sh prepare|train|eval RUNS [SITE]}
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED:-$here/../../shared/data}
bin=${SPINESEG:-${CARGO_TARGET_DIR:-$here/../target}/release/spineseg}
python=${PYTHON:-python3}
epochs=${EPOCHS:-10}
seed=${SEED:-0}
merged=$runs/merged

site_name() {
  case "$1" in
    vb3) echo "fastcleverseg VB3" ;;
    vb2) echo "fastcleverseg VB2" ;;
    ivd) echo "fastcleverseg IVD" ;;
    spider) echo "spider-t2space" ;;
    *) echo "unknown site $1: expected vb3, vb2, ivd or spider" >&2; exit 2 ;;
  esac
}

# The merged case ids of a site, comma-separated.
site_cases() {
  "$python" - "$merged/sources.json" "$(site_name "$1")" <<'EOF'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
print(",".join(sorted(c for c, v in cases.items() if v["site"] == sys.argv[2])))
EOF
}

if [ "$stage" = prepare ]; then
  [ -d "$merged" ] || "$bin" dataset merge "$shared/lumbar-real" "$shared/spider-t2space" --out "$merged" --channel-names MRI
  for site in vb3 vb2 ivd spider; do echo "$site: $(site_cases $site | tr ',' '\n' | wc -l) cases"; done
  exit 0
fi

site=${3:?usage: loso.sh train|eval RUNS SITE}
# ARM names the run folder when one site has several arms (default: the site).
out=$runs/${ARM:-$site}
left_out=$(site_cases "$site")
if [ "$stage" = train ]; then
  shift 3
  "$bin" plan "$merged" --out "$out/work" --configurations 2d --target-spacing 1.5,1.5,1.5 \
    --max-features 256 --batch-size 4 --exclude-cases "$left_out"
  "$bin" train "$out/work" --out "$out/model" --configuration 2d --fold 0 --epochs "$epochs" \
    --iterations-per-epoch 100 --validation-batches 4 --optimizer adamw --lr 0.002 --seed "$seed" \
    --partial-labels --quiet "$@"
elif [ "$stage" = eval ]; then
  val=$("$python" -c "import json,sys; print(','.join(json.load(open(sys.argv[1]))[0]['val']))" "$out/work/splits_final.json")
  # EVAL_EVERY=N scores every Nth left-out case (sorted ids) where a site is too large to
  # predict twice within an ablation's time; the table then says how many cases it holds.
  every=${EVAL_EVERY:-1}
  left_out=$(echo "${left_out//,/ }" | tr ' ' '\n' | awk -v n="$every" '(NR - 1) % n == 0' | paste -sd, -)
  for group in ${EVAL_GROUPS:-unseen val}; do
    ids=$left_out; [ "$group" = val ] && ids=$val
    mkdir -p "$out/$group/images" "$out/$group/labels"
    for case in ${ids//,/ }; do
      cp -n "$merged/imagesTr/${case}_0000.nii.gz" "$out/$group/images/"
      cp -n "$merged/labelsTr/$case.nii.gz" "$out/$group/labels/"
    done
    levels_wanted=${EVAL_LEVELS:-on off}
    for levels in $levels_wanted; do
      pred=$out/$group/pred_levels_$levels
      extra=(${PREDICT_FLAGS:-}); [ "$levels" = off ] && extra+=(--no-level-assignment)
      # Both wanted: one prediction writes both (`--network-labels`: the labels before level
      # assignment, the same as a run with --no-level-assignment).
      if [ "$levels" = on ] && [[ " $levels_wanted " == *" off "* ]] && [ ! -d "$out/$group/pred_levels_off" ]; then
        extra+=(--network-labels "$out/$group/pred_levels_off")
      fi
      if [ ! -d "$pred" ]; then
        "$bin" predict -i "$out/$group/images" -o "$pred" -m "$out/model" "${extra[@]}" > "$pred.log" 2>&1
        # REPORTS=FILE (a JSON object case id -> report, `spineseg text reports`): a model
        # trained with --reports predicts each case that has a report again, with it.
        if [ -n "${REPORTS:-}" ]; then
          for case in ${ids//,/ }; do
            "$python" -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if sys.argv[2] in r else 1)" "$REPORTS" "$case" || continue
            "$python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$REPORTS" "$case" > "$out/$group/$case.report.txt"
            "$bin" predict -i "$out/$group/images/${case}_0000.nii.gz" -o "$pred/$case.nii.gz" -m "$out/model" "${extra[@]}" \
              --report "$out/$group/$case.report.txt" >> "$pred.log" 2>&1
          done
        fi
      fi
      "$bin" evaluate --pred "$pred" --ref "$out/$group/labels" --dataset-json "$merged/dataset.json" \
        --out "$out/eval/${group}_levels_$levels" > /dev/null
      "$python" "$here/level_naming.py" "$pred" "$out/$group/labels" --json "$out/eval/${group}_levels_$levels/naming.json" > /dev/null
    done
  done
else
  echo "unknown stage $stage: expected prepare, train or eval" >&2; exit 2
fi
