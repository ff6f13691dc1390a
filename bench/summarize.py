#!/usr/bin/env python3
"""Markdown tables for docs/performance.md from one run's JSON records.

    python3 bench/summarize.py [--bench docs/results/bench.json] [--pytorch docs/results/pytorch.json]

Prints: the geometric-mean speed-up over oneDNN's best layout (overall and by op, with the
worst case and how many cases reach 1x), the same against PyTorch, the DRAM-bound shape's
fractions of the copy loop, the cases below oneDNN's best against their layout's memory floor
(bench/floors.h; runs from before the floors have none), and the per-case table (ops without
fused ReLU).
"""
import argparse
import json
import math
import os
from collections import defaultdict

OPS = ["fwd_train", "fwd_train_relu", "fwd_infer", "bwd", "bwd_relu"]
GOAL_NCHW_TRAIN, GOAL_BEST = 3.0, 1.5  # the goals against PyTorch (docs/performance.md)
DRAM_SHAPE = [64, 64, 112, 112]


def gmean(v):
    return math.exp(sum(math.log(x) for x in v) / len(v))


def shape_str(s):
    return "(" + ",".join(str(d) for d in s) + ")"


def below(recs):
    """The cases below oneDNN's best layout, each against the floor of its layout's passes. Where
    oneDNN's best beats that floor on a call from memory, no kernel that makes those passes can
    match it; on repeated calls (the data in cache) the floor bounds nothing."""
    low = [r for r in recs if r["onednn_best_ms"] < r["ms"]]
    out_of_reach = [r for r in low if r["calls"] == 1 and r["onednn_best_ms"] < r["floor_ms"]]
    clear = [r for r in out_of_reach if r["onednn_best_ms"] * 1.05 < r["floor_ms"]]
    print(f"Below oneDNN's best layout: {len(low)} of {len(recs)} cases. Of these, "
          f"{len(out_of_reach)} are calls from memory where oneDNN's best is faster than the floor "
          f"of our layout's passes, {len(clear)} of them by more than 5%.\n")
    if not low:
        return
    print("| shape | op | ours | x oneDNN best | floor passes | of floor | oneDNN best, of floor "
          "| calls timed together |")
    print("|---|---|---|---|---|---|---|---|")
    for r in low:
        print(f"| {shape_str(r['shape'])} | {r['op']} | {r['layout']} "
              f"| {r['onednn_best_ms'] / r['ms']:.2f} | {r['floor_passes']} "
              f"| {r['floor_ms'] / r['ms']:.2f} | {r['floor_ms'] / r['onednn_best_ms']:.2f} "
              f"| {r['calls']} |")
    print()


def torch_goal_lines(records):
    """The PyTorch goals, case by case against the floors (pytorch_compare.py's records with
    floor_ms): the cases below each goal, and which of them no kernel can reach, the goal's time
    (PyTorch's divided by the goal) being below the floor of the layout's passes, called the same
    way (through ctypes, after the wash)."""
    lines = []
    for name, goal, key, sel in (
            (f"{GOAL_NCHW_TRAIN:g}x PyTorch's NCHW forward training", GOAL_NCHW_TRAIN, "torch_ms",
             lambda r: r["op"] == "fwd_train" and r["layout"] == "nchw"),
            (f"{GOAL_BEST:g}x PyTorch's best layout", GOAL_BEST, "torch_best_ms",
             lambda r: True)):
        cases = [r for r in records if sel(r)]
        low = [r for r in cases if r[key] / r["bnorm_ms"] < goal]
        out = [r for r in low if r[key] / goal < r["floor_ms"]]
        lines.append(f"{name}: {len(cases) - len(low)} of {len(cases)} cases; of the {len(low)} "
                     f"below it, {len(out)} have the goal's time below the floor of their "
                     f"layout's passes (out of reach).")
        for r in low:
            lines.append(f"  {shape_str(r['shape'])} {r['op']} {r['layout']}: "
                         f"{r[key] / r['bnorm_ms']:.2f}x; goal {r[key] / goal:.3f} ms, floor "
                         f"{r['floor_ms']:.3f} ({r['floor_passes']} pass"
                         f"{'es' if r['floor_passes'] > 1 else ''}), ours {r['bnorm_ms']:.3f}"
                         + ("" if r in out else "  (within reach)"))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="docs/results/bench.json")
    ap.add_argument("--pytorch", default="docs/results/pytorch.json")
    a = ap.parse_args()
    recs = json.load(open(a.bench))
    torch = json.load(open(a.pytorch)) if os.path.exists(a.pytorch) else []
    tkey = {(r["op"], tuple(r["shape"]), r["layout"]): r for r in torch}

    x_best = [r["onednn_best_ms"] / r["ms"] for r in recs]
    if torch and all("floor_ms" in r for r in torch):
        print("PyTorch's goals against the floors (pytorch_compare.py):\n\n```\n"
              + "\n".join(torch_goal_lines(torch)) + "\n```\n")
    print(f"Geometric mean over all {len(recs)} cases of the speed-up over oneDNN's best layout: "
          f"**{gmean(x_best):.2f}x** ({sum(x >= 1 for x in x_best)} of {len(recs)} cases >= 1x).\n")
    print("| op | vs oneDNN best, geo mean | worst | cases >= 1x | vs PyTorch best, geo mean "
          "| worst | cases >= 1.5x | vs PyTorch NCHW, worst |")
    print("|---|---|---|---|---|---|---|---|")
    for op in OPS:
        v = [r["onednn_best_ms"] / r["ms"] for r in recs if r["op"] == op]
        tb = [r["speedup_best"] for r in torch if r["op"] == op]
        tn = [r["speedup_same"] for r in torch if r["op"] == op and r["layout"] == "nchw"]
        tcols = (f"{gmean(tb):.2f} | {min(tb):.2f} | {sum(x >= 1.5 for x in tb)} of {len(tb)} "
                 f"| {min(tn):.2f}") if tb else "- | - | - | -"
        print(f"| {op} | {gmean(v):.2f} | {min(v):.2f} | {sum(x >= 1 for x in v)} of {len(v)} "
              f"| {tcols} |")
    print()
    dram = {r["op"]: r for r in recs if r["shape"] == DRAM_SHAPE and r["layout"] == "nchw"}
    if dram:
        print(f"DRAM-bound {shape_str(DRAM_SHAPE)} NCHW, fraction of the copy loop's bandwidth: "
              + ", ".join(f"{op} {dram[op]['copy_fraction']:.2f}" for op in OPS if op in dram)
              + ".\n")
    floors = all("floor_ms" in r for r in recs)
    if floors:
        below(recs)
    print("| shape | op | ours | ms | GB/s | of copy | " + ("of floor | " if floors else "")
          + "oneDNN same layout ms | oneDNN best ms | x oneDNN best | x PyTorch best |")
    print("|---|---|---|---|---|---|" + ("---|" if floors else "") + "---|---|---|---|")
    for r in recs:
        if r["op"].endswith("_relu"):
            continue
        t = tkey.get((r["op"], tuple(r["shape"]), r["layout"]))
        fcol = f"{r['floor_ms'] / r['ms']:.2f} | " if floors else ""
        print(f"| {shape_str(r['shape'])} | {r['op']} | {r['layout']} | {r['ms']:.4f} "
              f"| {r['gbps']:.1f} | {r['copy_fraction']:.2f} | {fcol}{r['onednn_ms']:.4f} "
              f"| {r['onednn_best_ms']:.4f} {r['onednn_best_layout']} "
              f"| {r['onednn_best_ms'] / r['ms']:.2f} | "
              + (f"{t['speedup_best']:.2f} |" if t else "- |"))


if __name__ == "__main__":
    main()
