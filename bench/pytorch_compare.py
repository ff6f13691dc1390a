#!/usr/bin/env python3
"""PyTorch's CPU batch norm against libbnorm, side by side in one process on the same tensors.

libbnorm is called through ctypes on the tensors' own memory, and every round runs each
contender once, who goes first alternating, each after a 256 MiB cache wash, so drift in the
machine hits both alike; tables show medians.
Ops: fwd_train and fwd_infer (F.batch_norm), bwd (aten.native_batch_norm_backward), and the
fused-ReLU variants, which for PyTorch are batch norm followed by relu (what users run).
Layouts: contiguous (NCHW) and channels_last (NHWC; identical memory for (N,C)).
Data type: float32, or float64 with --f64 (parameters and running statistics then float64 too).

The memory floors run in the same rounds (float32; libbnorm_floors.so, built with the benchmarks
from bench/floors_lib.c): plain loops that move each op's bytes in as many passes as the layout
forces (bench/floors.h), called through ctypes after the same wash, stored and streamed, on all
threads and (tensors up to 4 MiB) on one; "floor ms" is the fastest. A goal's time below it
(PyTorch's time / 3 for NCHW forward training, / 1.5 for the best layout) is one that no kernel
making those passes, called this way, can reach.

Needs Debian's python3-torch and a shared libbnorm (e.g. build-bench/libbnorm.so):
    /usr/bin/python3 bench/pytorch_compare.py --lib build-bench/libbnorm.so [--threads 2]
        [--reps 11] [--shapes all|source|"N,C,H,W;N,C"] [--f64] [--json FILE]
        [--floors build-bench/bench/libbnorm_floors.so | --no-floors]
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import summarize  # bench/summarize.py: the goals against the floors

SHAPES = {
    "all": [(32, 64, 56, 56), (32, 256, 14, 14), (128, 32, 28, 28), (256, 1024),
            (64, 64, 112, 112), (128, 64, 14, 14), (128, 128)],
    "source": [(128, 32, 28, 28), (128, 64, 14, 14), (128, 128)],
}
OPS = ["fwd_train", "fwd_train_relu", "fwd_infer", "bwd", "bwd_relu"]
FLOOR_SERIAL_MAX = 4 << 20  # tensors up to this many bytes also get a one-thread floor


class Desc(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int64), ("c", ctypes.c_int64), ("spatial", ctypes.c_int64),
                ("layout", ctypes.c_int), ("dtype", ctypes.c_int)]


class Running(ctypes.Structure):
    _fields_ = [("mean", ctypes.c_void_p), ("var", ctypes.c_void_p),
                ("num_batches_tracked", ctypes.c_void_p), ("momentum", ctypes.c_double)]


def load(lib_path):
    lib = ctypes.CDLL(os.path.abspath(lib_path))
    p, d, u = ctypes.c_void_p, ctypes.c_double, ctypes.c_uint
    lib.bnorm_desc_init.argtypes = [ctypes.POINTER(Desc), ctypes.c_int, ctypes.c_int,
                                    ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    lib.bnorm_bn_forward_train.argtypes = [ctypes.POINTER(Desc), p, p, p, p, p, p,
                                           ctypes.POINTER(Running), d, u]
    lib.bnorm_bn_forward_infer.argtypes = [ctypes.POINTER(Desc), p, p, p, p, p, p, d, u]
    lib.bnorm_bn_backward.argtypes = [ctypes.POINTER(Desc), p, p, p, p, p, p, p, p, p,
                                      ctypes.c_int, u]
    lib.bnorm_last_error.restype = ctypes.c_char_p
    lib.bnorm_kernels.restype = ctypes.c_char_p
    return lib


def load_floors(path):
    lib = ctypes.CDLL(os.path.abspath(path))
    p = ctypes.c_void_p
    lib.bnorm_bench_floor.argtypes = [ctypes.c_int, p, p, p, ctypes.c_int64, ctypes.c_int,
                                      ctypes.c_int]
    lib.bnorm_bench_floor_of.argtypes = [ctypes.c_int] * 3
    return lib


def floor_of(floors, op, shape, layout):
    """op's floor in layout (bench/floors.h's floor_of: 0 one pass x -> y, 1 two passes
    (x; x -> y), 2 one pass (x, dy -> dx), 3 two passes); (N,C) data lies as channels-last does"""
    return floors.bnorm_bench_floor_of(int(op.startswith("bwd")), int(op.startswith("fwd_train")),
                                       int(layout == "nhwc" or len(shape) == 2))


def ptr(t):
    return ctypes.c_void_p(t.data_ptr())


class Case:
    """One shape in one layout: the tensors both libraries work on."""

    def __init__(self, lib, shape, layout, dtype=torch.float32):
        self.lib, self.shape, self.layout = lib, shape, layout
        g = torch.Generator().manual_seed(7)
        c = shape[1]
        view = [1, c] + [1] * (len(shape) - 2)
        t = {"dtype": dtype}
        x = ((torch.rand(shape, generator=g, **t) - 0.5) * 3
             + torch.arange(c, **t).reshape(view) * 0.01)
        dy = torch.rand(shape, generator=g, **t) - 0.5
        if layout == "nhwc" and len(shape) == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            dy = dy.contiguous(memory_format=torch.channels_last)
        self.x, self.dy = x, dy
        self.y, self.dx = torch.empty_like(x), torch.empty_like(x)
        self.w = torch.rand(c, generator=g, **t) + 0.5
        self.b = torch.rand(c, generator=g, **t) - 0.5
        self.rm, self.rv = torch.zeros(c, **t), torch.ones(c, **t)
        self.mean = torch.zeros(c, dtype=torch.float64)
        self.invstd = torch.zeros(c, dtype=torch.float64)
        self.dw, self.db = torch.zeros(c, **t), torch.zeros(c, **t)
        self.nbt = ctypes.c_int64(0)
        self.calls, self.status = {}, 0
        self.desc = Desc()
        dims = (ctypes.c_int64 * len(shape))(*shape)
        lay = 1 if layout == "nhwc" else 0
        bnorm_dtype = 1 if dtype == torch.float64 else 0
        if lib.bnorm_desc_init(ctypes.byref(self.desc), bnorm_dtype, lay, len(shape), dims) != 0:
            raise RuntimeError(lib.bnorm_last_error().decode())
        # PyTorch's saved statistics for its backward
        _, self.t_mean, self.t_invstd = torch.ops.aten.native_batch_norm(
            x, self.w, self.b, None, None, True, 0.1, 1e-5)

    def check(self, status):
        if status != 0:
            raise RuntimeError(self.lib.bnorm_last_error().decode())

    # ---- libbnorm
    def bnorm_call(self, op):
        """the libbnorm function and its ctypes arguments for op, built once: the timed call then
        costs what a C caller pays, not Python's argument conversions"""
        if op not in self.calls:
            relu = 1 if op.endswith("relu") else 0
            if op.startswith("fwd_train"):
                self.run = Running(self.rm.data_ptr(), self.rv.data_ptr(),
                                   ctypes.addressof(self.nbt), 0.1)
                call = (self.lib.bnorm_bn_forward_train,
                        (ctypes.byref(self.desc), ptr(self.y), ptr(self.mean), ptr(self.invstd),
                         ptr(self.x), ptr(self.w), ptr(self.b), ctypes.byref(self.run), 1e-5,
                         relu))
            elif op == "fwd_infer":
                call = (self.lib.bnorm_bn_forward_infer,
                        (ctypes.byref(self.desc), ptr(self.y), ptr(self.x), ptr(self.w),
                         ptr(self.b), ptr(self.rm), ptr(self.rv), 1e-5, 0))
            else:
                call = (self.lib.bnorm_bn_backward,
                        (ctypes.byref(self.desc), ptr(self.dx), ptr(self.dw), ptr(self.db),
                         ptr(self.dy), ptr(self.x), ptr(self.mean), ptr(self.invstd),
                         ptr(self.w), ptr(self.b), 0, relu))
            self.calls[op] = call
        return self.calls[op]

    def bnorm(self, op):
        fn, args = self.bnorm_call(op)
        self.status = fn(*args)

    def bnorm_prepare(self, op):
        self.bnorm_call(op)
        if op.startswith("bwd"):  # saved statistics from a training forward
            self.bnorm("fwd_train_relu" if op == "bwd_relu" else "fwd_train")
            self.check(self.status)

    # ---- PyTorch
    def torch_op(self, op):
        with torch.no_grad():
            if op.startswith("fwd_train"):
                y = F.batch_norm(self.x, self.rm, self.rv, self.w, self.b, True, 0.1, 1e-5)
                return F.relu(y, inplace=True) if op.endswith("relu") else y
            if op == "fwd_infer":
                return F.batch_norm(self.x, self.rm, self.rv, self.w, self.b, False, 0.1, 1e-5)
            g = self.dy
            if op == "bwd_relu":
                g = torch.ops.aten.threshold_backward(self.dy, self.y_relu, 0)
            return torch.ops.aten.native_batch_norm_backward(
                g, self.x, self.w, None, None, self.t_mean, self.t_invstd, True, 1e-5,
                [True, True, True])

    # ---- the floor: plain loops moving op's bytes (into libbnorm's output tensor)
    def floor_variants(self, threads):
        """(threads, streamed) pairs timed for the floor: all threads, and one for small tensors"""
        ts = [threads] + ([1] if threads > 1 and self.x.numel() * 4 <= FLOOR_SERIAL_MAX else [])
        return [(t, nt) for t in ts for nt in (0, 1)]

    def floor_call(self, floors, op, variant):
        """the floor's arguments for op, built once as bnorm_call's are"""
        key = (op, variant)
        if key not in self.calls:
            out, dy = (self.dx, self.dy) if op.startswith("bwd") else (self.y, None)
            self.calls[key] = (floors.bnorm_bench_floor,
                               (floor_of(floors, op, self.shape, self.layout), ptr(out),
                                ptr(self.x),
                                ptr(dy) if dy is not None else None, self.x.numel(), variant[1],
                                variant[0]))
        return self.calls[key]

    def floor(self, fn, args):
        if fn(*args) != 0:
            raise RuntimeError("bnorm_bench_floor failed")

    def torch_prepare(self, op):
        if op == "bwd_relu":
            with torch.no_grad():
                self.y_relu = F.relu(F.batch_norm(self.x, None, None, self.w, self.b, True,
                                                  0.1, 1e-5))


_WASH = torch.ones(64 << 20)  # 256 MiB, as bnorm_bench's wash


def timed(fn):
    """fn's time in ms, after reading 256 MiB of unrelated data: every measurement starts from the
    same cache state, none paying for the write-back of the previous one's output"""
    float(_WASH.sum())
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--shapes", default="all")
    ap.add_argument("--f64", action="store_true", help="float64 data instead of float32")
    ap.add_argument("--json")
    ap.add_argument("--floors", help="libbnorm_floors.so (default: bench/ beside --lib)")
    ap.add_argument("--no-floors", action="store_true", help="do not time the memory floors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    lib = load(args.lib)
    floors_path = args.floors or os.path.join(os.path.dirname(os.path.abspath(args.lib)), "bench",
                                              "libbnorm_floors.so")
    floors = None
    if not args.no_floors and not args.f64:
        if os.path.exists(floors_path):
            floors = load_floors(floors_path)
        elif args.floors:
            sys.exit(f"pytorch_compare: {args.floors} not found")
    print(f"PyTorch {torch.__version__}, {args.threads} threads, "
          f"{'float64' if args.f64 else 'float32'}; libbnorm kernels "
          f"{lib.bnorm_kernels().decode()}; {args.reps} rounds (medians); memory floors "
          + ("timed" if floors else "not timed"))
    print(f"{'shape':19} {'op':15} {'layout':6} {'torch ms':>9} {'bnorm ms':>9} {'x torch':>8}"
          f" {'x torch best':>12}" + (f" {'floor ms':>9} {'passes':>6}" if floors else ""))
    records = []
    shapes = SHAPES.get(args.shapes) or [tuple(int(v) for v in s.split(","))
                                         for s in args.shapes.split(";")]
    for shape in shapes:
        dtype = torch.float64 if args.f64 else torch.float32
        cases = {lay: Case(lib, shape, lay, dtype) for lay in ("nchw", "nhwc")}
        for op in OPS:
            times = {lay: {} for lay in cases}
            for rep in range(-2, args.reps):
                for lay, c in cases.items():
                    who = ["torch", "bnorm"]
                    if floors:
                        who += [("floor",) + v for v in c.floor_variants(args.threads)]
                    k = rep % len(who)  # who goes first rotates
                    for w in who[k:] + who[:k]:
                        if w == "torch":
                            c.torch_prepare(op)
                            t = timed(lambda: c.torch_op(op))
                        elif w == "bnorm":
                            c.bnorm_prepare(op)
                            t = timed(lambda: c.bnorm(op))
                            c.check(c.status)
                        else:
                            fn, fargs = c.floor_call(floors, op, w[1:])
                            t = timed(lambda: c.floor(fn, fargs))
                        if rep >= 0:
                            times[lay].setdefault(w, []).append(t)
            med = {lay: {w: statistics.median(v) for w, v in tl.items()}
                   for lay, tl in times.items()}
            best_t = min(m["torch"] for m in med.values())
            for lay in cases:
                m = med[lay]
                rec = {"op": op, "shape": list(shape), "layout": lay, "torch_ms": m["torch"],
                       "bnorm_ms": m["bnorm"], "torch_best_ms": best_t,
                       "speedup_same": m["torch"] / m["bnorm"],
                       "speedup_best": best_t / m["bnorm"]}
                line = (f"{str(shape):19} {op:15} {lay:6} {m['torch']:9.3f} {m['bnorm']:9.3f}"
                        f" {rec['speedup_same']:8.2f} {rec['speedup_best']:12.2f}")
                if floors:
                    fw = min((w for w in m if w[0] == "floor"), key=lambda w: m[w])
                    f = floor_of(floors, op, shape, lay)
                    rec.update(floor_ms=m[fw], floor_passes=2 if f in (1, 3) else 1,
                               floor_threads=fw[1], floor_streamed=bool(fw[2]))
                    line += f" {m[fw]:9.3f} {rec['floor_passes']:6d}"
                records.append(rec)
                print(line, flush=True)
        del cases
    worst = min(r["speedup_best"] for r in records)
    nchw_train = [r["speedup_same"] for r in records
                  if r["op"] == "fwd_train" and r["layout"] == "nchw"]
    print(f"smallest speed-up over PyTorch's best layout: {worst:.2f}x; "
          f"NCHW fwd_train speed-up: min {min(nchw_train):.2f}x")
    if floors:
        print("\n".join(summarize.torch_goal_lines(records)))
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        fd, tmp = tempfile.mkstemp(dir=d)
        with os.fdopen(fd, "w") as f:
            json.dump(records, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    sys.exit(main())
