#!/usr/bin/env bash
# Side-by-side speed benchmark: spineseg (burn flex, CPU) vs PyTorch (CPU, 2 threads) on the same
# nnU-Net PlainConvUNet, loss, optimiser and shapes.
#
#   bench/vs_pytorch.sh [--runs N] [--warmup N] [--retries N]   (from anywhere; defaults 10, 2, 2)
#
# 1. builds crates/train/examples/vs_pytorch.rs in release (honours CARGO_TARGET_DIR);
# 2. creates bench/.venv and installs CPU-usable PyTorch into it when `import torch` fails there;
# 3. runs every workload of both sides in its own process (so peak RSS is per workload),
#    alternating sides, after waiting for the machine to be idle, and again when other processes
#    took CPU during the run (see step 3);
# 4. prints the table (bench/vs_pytorch_table.py). The last line is
#    `ratios infer2d=A infer3d=B train2d=C train3d=D infer3d_s2=E train3d_s2=F` (spineseg time / PyTorch time).
#
# PyTorch comes from PyPI (the only Python index reachable here), whose Linux x86_64 torch wheel is
# a CUDA build. Installed the plain way it pulls about 3.0 GB of wheels (triton, cuSOLVER, ...).
# This script installs the torch wheel without its dependencies, then only the pure-Python ones
# and the CUDA libraries that libtorch links against (the loader needs them to import torch even
# on a machine without a GPU; nothing CUDA runs): about 2.4 GB of wheels, about 4 GB on disk. If
# that import fails, it falls back to the plain `pip install torch==VERSION`.
set -euo pipefail

die() {
    echo "vs_pytorch.sh: error: $*" >&2
    exit 1
}
trap 'echo "vs_pytorch.sh: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR

RUNS=10
WARMUP=2
RETRIES=2
while [[ $# -gt 0 ]]; do
    case "$1" in
    --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
    --warmup) WARMUP="${2:?--warmup needs a value}"; shift 2 ;;
    --retries) RETRIES="${2:?--retries needs a value}"; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: bench/vs_pytorch.sh [--runs N] [--warmup N] [--retries N])" ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive whole number, got '$RUNS'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number, got '$WARMUP'"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--retries must be a whole number, got '$RETRIES'"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV="$ROOT/bench/.venv"
PY="$VENV/bin/python"

# torch and the runtime libraries its 2.15.0 Linux wheel links against (from its Requires-Dist:
# cuda-toolkit extras minus cusolver and nvtx, cuDNN, cuSPARSELt, NCCL, NVSHMEM). Left out:
# triton (torch.compile on GPUs), cuda-bindings, cuSOLVER (loaded only for GPU linear algebra),
# NVTX. Change the list together with TORCH_VERSION.
TORCH_VERSION=2.15.0
TORCH_RUNTIME=(
    filelock 'typing-extensions>=4.13.0' 'setuptools>=77.0.3' 'sympy>=1.13.3' 'networkx>=2.5.1' jinja2 'fsspec>=0.8.5'
    'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2'
    'nvidia-cudnn-cu13==9.26.0.51' 'nvidia-cusparselt-cu13==0.8.1' 'nvidia-nccl-cu13==2.30.7'
    'nvidia-nvshmem-cu13==3.7.2'
)

step() { echo "== $*" >&2; }

# ---- 1. spineseg's half ------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found"
step "building the spineseg example (release)"
cargo build --release -p spineseg-train --example vs_pytorch >&2 ||
    die "cargo build --release -p spineseg-train --example vs_pytorch failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
    die "cannot find cargo's target directory"
RUST_BIN="$TARGET_DIR/release/examples/vs_pytorch"
[[ -x "$RUST_BIN" ]] || die "built example not found at $RUST_BIN"

# ---- 2. PyTorch's half -------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    step "creating $VENV"
    command -v python3 >/dev/null || die "python3 not found"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    free_kb="$(df -Pk "$ROOT/bench" | awk 'NR == 2 { print $4 }')"
    ((free_kb > 6 * 1024 * 1024)) ||
        die "installing PyTorch needs about 6 GB free under $ROOT/bench, only $((free_kb / 1024)) MB free"
    log="$VENV/torch-install.log"
    step "installing torch $TORCH_VERSION (CPU use of the PyPI wheel, about 2.4 GB download) into $VENV; log: $log"
    {
        "$PY" -m pip install --no-cache-dir --no-deps "torch==$TORCH_VERSION" &&
            "$PY" -m pip install --no-cache-dir "${TORCH_RUNTIME[@]}"
    } >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "pip install of torch $TORCH_VERSION failed (see $log)"; }
    # pip complains that triton etc. are missing; that is expected. What matters is the import.
    if ! "$PY" -c 'import torch' >>"$log" 2>&1; then
        step "import torch failed with the reduced install; installing torch $TORCH_VERSION with all its dependencies"
        "$PY" -m pip install --no-cache-dir "torch==$TORCH_VERSION" >>"$log" 2>&1 ||
            { tail -n 30 "$log" >&2; die "pip install torch==$TORCH_VERSION failed (see $log)"; }
        "$PY" -c 'import torch' || die "torch still does not import (see $log)"
    fi
fi
TORCH_INFO="$("$PY" -W ignore -c 'import torch; print(torch.__version__)' 2>/dev/null)" ||
    die "cannot import torch from $PY"

# ---- 3. measurements, one process per workload and side ----------------------------------------
# Other processes on this 2-core machine skew the comparison, and not evenly: PyTorch's OpenMP
# threads slow down far more than rayon's when they share the cores (another benchmark running
# beside this one made PyTorch's 2D training step 6x slower, spineseg's 1.1x). So before each run
# the script waits (up to QUIET_WAIT_S seconds, default 30) for the machine to be idle, measures the
# CPU time other processes take during the run (all busy CPU time from /proc/stat minus the run's
# own, from bash's `times`), and measures again (up to --retries times) when that exceeds 0.25
# cores and the machine has become idle, keeping the least disturbed attempt. The table shows the
# CPU other processes took during the kept runs and warns when it is too much.
RESULTS="$(mktemp -d "${TMPDIR:-/tmp}/vs_pytorch.XXXXXX")"
trap 'rm -rf "$RESULTS"' EXIT
WORKLOADS=(infer2d infer3d train2d train3d infer3d_s2 train3d_s2 matmul)
CLK_TCK="$(getconf CLK_TCK)"
QUIET_WAIT_S="${QUIET_WAIT_S:-30}"

cpu_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# CPU seconds (user + system) of this shell's finished children, from `times`' second line, into
# CHILDREN_CPU_S. `times` must run in this shell: in a command substitution it would report the
# subshell's own (empty) children, and every run would look disturbed.
children_cpu_s() {
    times >"$RESULTS/times"
    CHILDREN_CPU_S="$(awk 'NR == 2 { for (i = 1; i <= NF; i++) { sub(/s$/, "", $i); split($i, p, "m"); t += p[1] * 60 + p[2] }; printf "%.3f", t }' \
        "$RESULTS/times")"
}
now_s() { date +%s.%N; }
# Cores' worth of CPU that other processes use over the next 2 seconds.
idle_check_cores() {
    local b1 b2 t1 t2
    b1="$(cpu_busy_ticks)"; t1="$(now_s)"
    sleep 2
    b2="$(cpu_busy_ticks)"; t2="$(now_s)"
    awk -v b=$((b2 - b1)) -v hz="$CLK_TCK" -v t1="$t1" -v t2="$t2" 'BEGIN { printf "%.2f", b / hz / (t2 - t1) }'
}
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
# Waits up to QUIET_WAIT_S seconds for the machine to be idle; fails if it stays busy.
wait_for_quiet() {
    local waited=0 busy
    while busy="$(idle_check_cores)" && above "$busy" 0.2; do
        if ((waited >= QUIET_WAIT_S)); then
            return 1
        fi
        if ((waited == 0)); then
            step "waiting up to ${QUIET_WAIT_S} s for other processes ($busy cores busy) to finish"
        fi
        waited=$((waited + 2))
    done
}
# measure_once OUT CMD...: runs CMD with stdout to OUT; sets BACKGROUND (cores used by others).
measure_once() {
    local out="$1" b1 b2 t1 t2 c1 c2
    shift
    children_cpu_s; c1="$CHILDREN_CPU_S"; b1="$(cpu_busy_ticks)"; t1="$(now_s)"
    "$@" >"$out" || return 1
    b2="$(cpu_busy_ticks)"; t2="$(now_s)"; children_cpu_s; c2="$CHILDREN_CPU_S"
    BACKGROUND="$(awk -v b=$((b2 - b1)) -v hz="$CLK_TCK" -v c="$c2" -v c0="$c1" -v t1="$t1" -v t2="$t2" \
        'BEGIN { x = (b / hz - (c - c0)) / (t2 - t1); printf "%.2f", x < 0 ? 0 : x }')"
}
# run_workload LABEL CMD...: the least disturbed of up to 1 + RETRIES runs, appended to results.
# Runs again only when the machine became idle after a disturbed run (a machine that stays busy
# would just triple the time).
run_workload() {
    local label="$1" attempt best=""
    shift
    wait_for_quiet || true
    for ((attempt = 0; ; attempt++)); do
        measure_once "$RESULTS/attempt" "$@" || die "$label failed: $*"
        if [[ -z "$best" ]] || above "$best" "$BACKGROUND"; then
            best="$BACKGROUND"
            cp "$RESULTS/attempt" "$RESULTS/best"
        fi
        if ! above "$BACKGROUND" 0.25 || ((attempt >= RETRIES)); then
            break
        fi
        if ! wait_for_quiet; then
            step "$label: other processes used $BACKGROUND cores during the run and the machine stays busy; keeping it"
            break
        fi
        step "$label: other processes used $BACKGROUND cores during the run; measuring again"
    done
    python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["background_cores"] = float(sys.argv[1]); print(json.dumps(r))' \
        "$best" <"$RESULTS/best" >>"$RESULTS/results.jsonl" || die "$label did not print one JSON line"
}

count=0
for workload in "${WORKLOADS[@]}"; do
    count=$((count + 1))
    step "[$count/${#WORKLOADS[@]}] $workload: spineseg"
    run_workload "spineseg $workload" "$RUST_BIN" --only "$workload" --runs "$RUNS" --warmup "$WARMUP"
    step "[$count/${#WORKLOADS[@]}] $workload: PyTorch"
    run_workload "PyTorch $workload" "$PY" bench/pytorch_unet.py --only "$workload" --runs "$RUNS" --warmup "$WARMUP"
done

# ---- 4. the table ------------------------------------------------------------------------------
echo "spineseg: burn flex (rayon, simd), $(nproc) cores; PyTorch $TORCH_INFO on CPU, torch.set_num_threads(2)"
echo
python3 bench/vs_pytorch_table.py "$RESULTS/results.jsonl" || die "the table could not be made from the results"
