#!/usr/bin/env bash
# scripts/test.sh - builds libbnorm and runs the whole test suite (ctest), three times: a normal
# warnings-as-errors build (with the benchmarks, smoke-tested), an AddressSanitizer +
# UndefinedBehaviorSanitizer build, and a warnings-as-errors build without OpenMP
# (BNORM_OPENMP=OFF: single-threaded kernels).
# Installs missing build packages (as root) or says what to install.
#   BNORM_TEST_BUILDS="normal"   run only the normal build ("normal sanitize serial" by default)
#   BNORM_REGEN_GOLDEN=1         also regenerate the PyTorch golden data (needs python3-torch)
#                                and fail if it differs from the committed file
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake libopenblas-openmp-dev zlib1g-dev libcjson-dev
jobs=$(nproc 2>/dev/null || echo 2)

if [ "${BNORM_REGEN_GOLDEN:-0}" = 1 ]; then
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        tmp=$(mktemp)
        /usr/bin/python3 tests/golden/gen_golden.py "$tmp"
        if ! cmp -s "$tmp" tests/golden/bn_golden.txt; then
            echo "bnorm: regenerated golden data differs from tests/golden/bn_golden.txt" >&2
            rm -f "$tmp"
            exit 1
        fi
        rm -f "$tmp"
        echo "golden data regenerated with PyTorch: identical"
    else
        echo "bnorm: PyTorch not installed, golden data not regenerated"
    fi
fi

for build in ${BNORM_TEST_BUILDS:-normal sanitize serial}; do
    case "$build" in
        normal) flags=(-DCMAKE_BUILD_TYPE=Release -DBNORM_WERROR=ON -DBNORM_BUILD_BENCH=ON) ;;
        sanitize) flags=(-DCMAKE_BUILD_TYPE=Debug -DBNORM_WERROR=ON -DBNORM_SANITIZE=ON) ;;
        serial) flags=(-DCMAKE_BUILD_TYPE=Release -DBNORM_WERROR=ON -DBNORM_OPENMP=OFF) ;;
        *) echo "bnorm: unknown build '$build'" >&2; exit 2 ;;
    esac
    echo "=== $build build"
    cmake -S . -B "build-test-$build" "${flags[@]}" >/dev/null
    cmake --build "build-test-$build" -j"$jobs" >/dev/null
    (cd "build-test-$build" && ctest --output-on-failure -j"$jobs")
done
