#!/usr/bin/env python3
"""Writes PyTorch reference data for libbnorm's golden tests (tests/golden/bn_golden.txt).

Needs Debian's python3-torch (PyTorch 1.13): `apt-get install python3-torch`, then
    /usr/bin/python3 tests/golden/gen_golden.py tests/golden/bn_golden.txt

Each case builds nn.BatchNorm1d/2d/3d with the case's options, gives weight/bias random values,
runs `steps` training steps (forward, loss = sum(y * dy), backward, grads zeroed between steps),
then one eval-mode forward and backward (the frozen-BN case: gradients through fixed running
statistics). float32 cases also carry dx64: PyTorch's float64 gradient from the same float32
inputs, the truth where float32 backward cancels badly. Every tensor is written in logical (N, C, *spatial) order whatever the memory layout;
layout=last cases run PyTorch in channels_last memory format (2d/3d) so its channels-last kernels
produce the numbers, and the C test lays the values out channels-last itself.

File format, line based:
    case NAME key=value ...        options: dim dtype layout shape affine track momentum eps relu steps
    tensor NAME COUNT              followed by one line of COUNT values
    end
Values are written so that they parse back to the exact float32/float64 values.
"""
import copy
import sys

import numpy as np
import torch

SEED = 20261123


def fmt_values(t, dtype):
    a = t.detach().contiguous().reshape(-1).numpy()
    if dtype == "f32":
        return " ".join(np.format_float_positional(np.float32(v), unique=True, trim="-")
                        if abs(v) >= 1e-4 or v == 0 else
                        np.format_float_scientific(np.float32(v), unique=True, trim="-")
                        for v in a)
    return " ".join(repr(float(v)) for v in a)


def write_tensor(out, name, t, dtype):
    out.write(f"tensor {name} {t.numel()}\n{fmt_values(t, dtype)}\n")


def module_for(dim, c, affine, track, momentum, eps, dtype):
    cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[dim]
    m = cls(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track)
    return m.to(dtype)


def make_input(gen, shape, dtype):
    """Random data with a different mean and scale per channel, so statistics matter."""
    c = shape[1]
    view = [1, c] + [1] * (len(shape) - 2)
    offset = torch.randn(c, generator=gen, dtype=torch.float64).reshape(view) * 3.0
    scale = torch.rand(c, generator=gen, dtype=torch.float64).reshape(view) * 2.0 + 0.25
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + offset
    return x.to(dtype)


def run_case(out, gen, name, dim, dtype, layout, shape, affine=True, track=True, momentum=0.1,
             eps=1e-5, relu=False, steps=2):
    tdtype = torch.float32 if dtype == "f32" else torch.float64
    c = shape[1]
    m = module_for(dim, c, affine, track, momentum, eps, tdtype)
    fmt = None
    if layout == "last" and len(shape) == 4:
        fmt = torch.channels_last
    elif layout == "last" and len(shape) == 5:
        fmt = torch.channels_last_3d
    mom = "none" if momentum is None else repr(momentum)
    out.write(f"case {name} dim={dim} dtype={dtype} layout={layout} "
              f"shape={','.join(map(str, shape))} affine={int(affine)} track={int(track)} "
              f"momentum={mom} eps={eps!r} relu={int(relu)} steps={steps}\n")
    if affine:
        with torch.no_grad():
            m.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 1.5 + 0.25)
            m.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        write_tensor(out, "weight", m.weight, dtype)
        write_tensor(out, "bias", m.bias, dtype)

    def step(tag):
        x = make_input(gen, shape, tdtype)
        dy = torch.randn(*shape, generator=gen, dtype=torch.float64).to(tdtype)
        xin = x.clone()
        if fmt is not None:
            xin = xin.contiguous(memory_format=fmt)
        xin.requires_grad_(True)
        # float32 cases also get PyTorch's float64 dx from the same inputs and state: where dx
        # cancels (few values per channel), that is the truth a float32 result is held to.
        m64 = copy.deepcopy(m).double() if dtype == "f32" else None
        if affine:
            m.weight.grad = None
            m.bias.grad = None
        y = m(xin)
        if relu:
            y = torch.relu(y)
        (y * dy).sum().backward()
        write_tensor(out, f"x.{tag}", x, dtype)
        write_tensor(out, f"dy.{tag}", dy, dtype)
        write_tensor(out, f"y.{tag}", y, dtype)
        write_tensor(out, f"dx.{tag}", xin.grad, dtype)
        if m64 is not None:
            x64 = x.double().requires_grad_(True)
            y64 = m64(x64)
            if relu:
                y64 = torch.relu(y64)
            (y64 * dy.double()).sum().backward()
            write_tensor(out, f"dx64.{tag}", x64.grad, "f64")
        if affine:
            write_tensor(out, f"dweight.{tag}", m.weight.grad, dtype)
            write_tensor(out, f"dbias.{tag}", m.bias.grad, dtype)
        if track:
            write_tensor(out, f"running_mean.{tag}", m.running_mean, dtype)
            write_tensor(out, f"running_var.{tag}", m.running_var, dtype)
            out.write(f"tensor num_batches_tracked.{tag} 1\n{int(m.num_batches_tracked)}\n")

    m.train()
    for i in range(steps):
        step(str(i))
    m.eval()
    step("eval")
    out.write("end\n")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/bn_golden.txt"
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    shapes = {"nc": (1, (6, 5)), "1d": (1, (3, 5, 7)), "2d": (2, (2, 3, 4, 3)),
              "3d": (3, (2, 3, 3, 2, 3))}
    with open(path, "w") as out:
        out.write(f"# bnorm golden data: tests/golden/gen_golden.py, PyTorch {torch.__version__}\n")
        # every rank, layout and dtype with the defaults
        for dtype in ("f32", "f64"):
            for layout in ("first", "last"):
                for key, (dim, shape) in shapes.items():
                    run_case(out, gen, f"base_{key}_{dtype}_{layout}", dim, dtype, layout, shape)
        # each option away from its default, on 2d, both dtypes and layouts
        variants = {
            "momentum_none": dict(momentum=None, steps=3),
            "no_affine": dict(affine=False),
            "no_track": dict(track=False),
            "relu": dict(relu=True),
            "relu_no_affine": dict(relu=True, affine=False),
            "eps_momentum": dict(eps=1e-3, momentum=0.3),
            "momentum_zero": dict(momentum=0.0),
            "momentum_one": dict(momentum=1.0),
        }
        for vname, kw in variants.items():
            for dtype in ("f32", "f64"):
                for layout in ("first", "last"):
                    run_case(out, gen, f"{vname}_2d_{dtype}_{layout}", 2, dtype, layout,
                             (2, 3, 4, 3), **kw)
        run_case(out, gen, "momentum_none_1d_f32_first", 1, "f32", "first", (4, 3, 6),
                 momentum=None, steps=3)
        run_case(out, gen, "no_track_3d_f64_last", 3, "f64", "last", (2, 2, 2, 3, 2), track=False)
        # odd shapes: N=1 with spatial > 1, C=1, sizes off the vector width, 1x1 spatial
        odd = {
            "n1": (2, (1, 4, 5, 3)),
            "c1": (2, (4, 1, 6, 5)),
            "c17": (1, (2, 17, 9)),
            "nc_c33": (1, (5, 33)),
            "hw1x1": (2, (2, 3, 1, 1)),
            "n1_3d": (3, (1, 2, 3, 1, 5)),
        }
        for key, (dim, shape) in odd.items():
            for layout in ("first", "last"):
                run_case(out, gen, f"odd_{key}_f32_{layout}", dim, "f32", layout, shape,
                         relu=(key == "c17"))
        run_case(out, gen, "odd_c17_f64_last", 1, "f64", "last", (2, 17, 9), momentum=None)


if __name__ == "__main__":
    main()
