#!/usr/bin/env bash
# Sets everything up (packages, build) and runs the demo lab.
# Usage: sudo tools/demo.sh [PODS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target ruleplane-agent ruleplanectl ruleplane
exec bash tools/lab.sh build "${1:-3}"
