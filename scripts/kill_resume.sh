#!/usr/bin/env bash
# kill -9 anywhere, at full scale: runs `spineseg train WORK --out OUT [FLAGS]`, kills it with
# SIGKILL after a random MIN..MAX seconds, resumes it (`--resume`), and repeats until the run
# finishes; then compares the weights with a reference run of the same flags, if given.
#
#   scripts/kill_resume.sh WORK OUT MIN_S MAX_S [REFERENCE_MODEL] -- TRAIN_FLAGS...
#
# Example (a 1,000-step lumbar run killed every 20-200 s):
#   scripts/kill_resume.sh RUNS/vb2/work RUNS/killed 20 200 RUNS/vb2d0/model -- \
#     --configuration 2d --epochs 10 --iterations-per-epoch 100 --validation-batches 4 \
#     --optimizer adamw --lr 0.002 --seed 0 --partial-labels --augmentation default
# The small-scale version of this check runs in `cargo test` (crates/cli/tests/cli_kill.rs).
set -euo pipefail
work=${1:?WORK}; out=${2:?OUT}; min=${3:?MIN_S}; max=${4:?MAX_S}; shift 4
reference=""
if [ "${1:-}" != "--" ]; then reference=${1:-}; shift; fi
[ "${1:-}" = "--" ] && shift
bin=${SPINESEG:-$(dirname "$0")/../target/release/spineseg}
kills=0
while true; do
    if [ -f "$out/training/checkpoint_last/state.json" ] || [ -f "$out/training/checkpoint_last.old/state.json" ]; then
        args=(train "$work" --out "$out" --resume --quiet)
    else
        args=(train "$work" --out "$out" --quiet "$@")
    fi
    "$bin" "${args[@]}" > /dev/null 2>&1 &
    pid=$!
    delay=$(( min + RANDOM % (max - min + 1) ))
    for _ in $(seq "$delay"); do
        sleep 1
        kill -0 "$pid" 2> /dev/null || break
    done
    if kill -0 "$pid" 2> /dev/null; then
        kill -9 "$pid"; wait "$pid" 2> /dev/null || true
        kills=$((kills + 1))
        echo "killed after ${delay} s (kill $kills)"
    else
        wait "$pid"
        break
    fi
done
echo "finished after $kills kills"
if [ -n "$reference" ]; then
    # Weight files hold random parameter ids, so compare what training logged instead: every
    # log.csv column but the timings (losses, Dice per class, EMA, lr, gradient norm), per epoch.
    # (crates/cli/tests/cli_kill.rs compares the parameter values themselves.)
    untimed() { awk -F, -v OFS=, '{ $(NF-3) = ""; $(NF-2) = ""; print }' "$1/training/log.csv"; }
    if diff <(untimed "$out") <(untimed "$reference") > /dev/null; then
        echo "log.csv (losses, Dice, gradient norms): identical to $reference"
    else
        echo "log.csv DIFFERS from $reference"; exit 1
    fi
fi
