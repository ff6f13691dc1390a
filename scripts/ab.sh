#!/usr/bin/env bash
# scripts/ab.sh - times two or more revisions of libbnorm against each other in one run
# (bench/ab_bench.c: alternated round by round after a cache wash, tensors aligned and offset).
# Each revision's shared library is built in a git worktree under ${AB_DIR:-/tmp/bnorm-ab};
# "." is the working tree as it is, uncommitted changes included. The worktrees stay registered
# in git until the folder is removed and `git worktree prune` runs.
#
# Usage: scripts/ab.sh REV REV... -- [ab_bench options] N C SPATIAL
#   e.g. scripts/ab.sh HEAD~1 . -- --op bwd --nhwc 32 256 196
set -euo pipefail
cd "$(dirname "$0")/.."
revs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    revs+=("$1")
    shift
done
if [ ${#revs[@]} -lt 1 ] || [ $# -lt 1 ]; then
    echo "usage: scripts/ab.sh REV REV... -- [ab_bench options] N C SPATIAL" >&2
    exit 2
fi
shift # the --
bash scripts/deps.sh build-essential cmake libcjson-dev
dir=${AB_DIR:-/tmp/bnorm-ab}
mkdir -p "$dir"
jobs=$(nproc 2>/dev/null || echo 2)
libs=()
for rev in "${revs[@]}"; do
    if [ "$rev" = "." ]; then
        src=.
        name=worktree
    else
        hash=$(git rev-parse --short "$rev^{commit}")
        src=$dir/src-$hash
        name=$hash
        [ -d "$src" ] || git worktree add --detach "$src" "$hash" >/dev/null
    fi
    cmake -S "$src" -B "$dir/build-$name" -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_TESTS=OFF \
        >/dev/null
    cmake --build "$dir/build-$name" -j"$jobs" --target bnorm_shared >/dev/null
    libs+=("$dir/build-$name/libbnorm.so")
done
cmake -S . -B "$dir/build-tool" -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCH=ON \
    -DBNORM_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir/build-tool" -j"$jobs" --target ab_bench >/dev/null
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "$dir/build-tool/bench/ab_bench" "$@" "${libs[@]}"
