#!/usr/bin/env bash
# The recorded fuzzing runs of docs/RELIABILITY.md: 10^7 executions per target, one target at a
# time (one core), no crash, no input over 1 s, no allocation over 2 GiB.
#
#   scripts/fuzz_long.sh TARGET...          # e.g. scripts/fuzz_long.sh nifti metaimage
#   MAXT=3000 scripts/fuzz_long.sh gradings # seconds allowed per target (default 1500)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); logs go to fuzz/logs/TARGET.log, new inputs to
# fuzz/corpus-run/TARGET (ignored by git). Run at normal priority on an idle core: a starved
# run reports timeouts that are not hangs.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
mkdir -p logs
cargo fuzz build -s none -O
for target in "$@"; do
  mkdir -p "corpus-run/$target"
  status=0
  cargo fuzz run -s none -O "$target" "corpus-run/$target" "corpus/$target" -- -runs=10000000 \
    -max_total_time="${MAXT:-1500}" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    > "logs/$target.log" 2>&1 || status=$?
  echo "$target: exit $status, $(grep -h '^Done' "logs/$target.log" || echo 'no Done line')"
done
