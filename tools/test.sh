#!/usr/bin/env bash
# Sets everything up and runs every test tier: unit, privileged (real
# nftables in throwaway network namespaces), e2e, then unit + privileged
# again under AddressSanitizer + UndefinedBehaviorSanitizer.
# Usage: sudo tools/test.sh [--no-sanitizers]
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizers=1
[[ "${1:-}" == "--no-sanitizers" ]] && sanitizers=0

bash tools/setup.sh
jobs=$(nproc)

echo "== build (RelWithDebInfo) [t=${SECONDS}s]"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

echo "== tests: unit, privileged, bpf, e2e [t=${SECONDS}s]"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 300

if ((sanitizers)); then
  echo "== build (ASan + UBSan) [t=${SECONDS}s]"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DRULEPLANE_SANITIZE=address,undefined >/dev/null
  cmake --build build-asan -j"$jobs"
  echo "== tests under ASan + UBSan: unit, privileged [t=${SECONDS}s]"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -L 'unit|privileged' --output-on-failure -j"$jobs" --timeout 600
fi
echo "== all test tiers passed [t=${SECONDS}s]"
