#!/usr/bin/env bash
# scripts/run.sh - the main job: builds bnorm and runs it. Until the training tool lands this is
# the batch-norm example (a BatchNorm2d + ReLU training loop on synthetic data); arguments are
# passed on to it (the number of steps, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec ./build/examples/bn_example "$@"
