#!/usr/bin/env bash
# scripts/bench.sh - builds and runs the kernel benchmarks, writing docs/results/:
#   bench.txt / bench.json       libbnorm vs the copy loop and oneDNN (bench/bnorm_bench.c)
#   pytorch.txt / pytorch.json   libbnorm vs PyTorch and the memory floors
#                                (bench/pytorch_compare.py, build-bench/bench/libbnorm_floors.so),
#                                when Debian's python3-torch is installed
# Installs libcjson-dev and libdnnl-dev (as root) or says what to install. Extra arguments go to
# bnorm_bench (e.g. --shapes source --reps 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake libcjson-dev libdnnl-dev
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCH=ON \
    -DBNORM_BUILD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
mkdir -p docs/results
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
./build-bench/bench/bnorm_bench --json docs/results/bench.json "$@" | tee docs/results/bench.txt
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 bench/pytorch_compare.py --lib build-bench/libbnorm.so \
        --json docs/results/pytorch.json | tee docs/results/pytorch.txt
else
    echo "PyTorch not installed (apt-get install python3-torch): PyTorch comparison skipped"
fi
