#!/usr/bin/env bash
# scripts/run.sh - the main job: builds bnorm and trains the source document's network
# (Conv2d -> BatchNorm2d -> ReLU, twice, then a BatchNorm1d MLP head) on Fashion-MNIST from
# Debian's dataset-fashion-mnist, with the tool's defaults (5 epochs, about 2 minutes on 2 cores),
# reporting validation accuracy after every epoch and test accuracy at the end. Installs what is
# missing (as root) or says what to install. Arguments go to `bnorm train` (e.g. --epochs 1,
# --augment, --no-bn, --metrics run.jsonl; `build/bnorm --help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake libopenblas-openmp-dev zlib1g-dev libcjson-dev \
    dataset-fashion-mnist
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec ./build/bnorm train "$@"
