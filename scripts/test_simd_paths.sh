#!/usr/bin/env bash
# Runs the test suite (or any `cargo test` arguments) on an emulated CPU, so that the SIMD paths
# the host CPU would not take are exercised too.
#
#   scripts/test_simd_paths.sh avx2      [cargo test args]   # AVX2 + FMA, no AVX-512 (Haswell)
#   scripts/test_simd_paths.sh baseline  [cargo test args]   # x86-64 baseline: SSE2 only
#
# Every SIMD choice in the process is made at run time from CPUID: flex's element-wise and
# reduction kernels (macerator: AVX-512 / AVX2 / SSE4.2 / scalar), gemm's micro-kernels (FMA or
# scalar) and spineseg-kernels' norm loops (AVX2 or SSE2). None of the dependencies offers a
# switch, so instead of a flag the tests run under qemu-user with a pinned CPU model: CPUID then
# reports that model's features (and its cache sizes, which set gemm's blocking), for the test
# binaries and, through crates/cli/tests/support, for every `spineseg` they start.
# Emulation is slow (see docs/ARCHITECTURE.md, "Determinism"); pass a filter to run a part.
set -euo pipefail
cd "$(dirname "$0")/.."

level="${1:-}"
case "$level" in
    # Haswell without the features TCG cannot emulate (it warns about each one otherwise).
    avx2) cpu="Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid" ;;
    baseline) cpu="qemu64" ;;
    *) echo "usage: $0 avx2|baseline [cargo test args]" >&2; exit 2 ;;
esac
shift

if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    echo "qemu-x86_64 not found; installing Debian's qemu-user" >&2
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get install -y -qq qemu-user >&2
fi

export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64 -cpu $cpu"
echo "running the tests on an emulated CPU: $CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER" >&2
if [ "$#" -eq 0 ]; then
    set -- --workspace --locked
fi
cargo test "$@"
