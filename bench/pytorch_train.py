#!/usr/bin/env python3
"""Training and inference throughput of the source network: bnorm's tool against PyTorch on the
same model, batch size, threads and images, alternating rounds so drift hits both alike.

The model is bnorm's default spec written in PyTorch (convs and the hidden linear without bias,
as bnorm builds them before a bn). Each round trains one epoch over the first --images training
images of Fashion-MNIST with SGD (momentum 0.9, weight decay 5e-4), then evaluates that many
images in eval mode; bnorm's side runs `bnorm train`/`bnorm eval` and reads their images/s.

    /usr/bin/python3 bench/pytorch_train.py --bnorm build/bnorm [--threads 2] [--rounds 3]
        [--images 12800] [--data /usr/share/datasets/fashion-mnist] [--json FILE]
"""
import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn


def load(data, n):
    with gzip.open(os.path.join(data, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784].reshape(n, 1, 28, 28)
    with gzip.open(os.path.join(data, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    x = torch.from_numpy(x.astype(np.float32) / 255.0)
    return (x - x.mean()) / x.std(), torch.from_numpy(y.astype(np.int64))


def model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128, bias=False), nn.BatchNorm1d(128),
        nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))


def torch_round(x, y, batch):
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    lossf = nn.CrossEntropyLoss()
    perm = torch.randperm(len(x))
    m.train()
    t0 = time.perf_counter()
    for s in range(0, len(x) - 1, batch):
        idx = perm[s:s + batch]
        opt.zero_grad()
        lossf(m(x[idx]), y[idx]).backward()
        opt.step()
    train = len(x) / (time.perf_counter() - t0)
    m.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            m(x[s:s + batch])
    return train, len(x) / (time.perf_counter() - t0)


def bnorm_round(tool, data, images, batch, threads):
    val = 60000 - images
    with tempfile.TemporaryDirectory() as d:
        ck, met = os.path.join(d, "c.safetensors"), os.path.join(d, "m.jsonl")
        subprocess.run([tool, "train", "--data", data, "--epochs", "1", "--val", str(val),
                        "--batch", str(batch), "--threads", str(threads), "--quiet",
                        "--checkpoint", ck, "--metrics", met], check=True, capture_output=True)
        with open(met) as f:
            train = json.loads(f.readline())["images_per_sec"]
        out = subprocess.run([tool, "eval", "--data", data, "--checkpoint", ck, "--split",
                              "train", "--val", str(val), "--threads", str(threads)],
                             check=True, capture_output=True, text=True).stdout
        infer = float(re.search(r"([0-9.]+) images/s", out).group(1))
    return train, infer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bnorm", required=True)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=12800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.data, a.images)
    res = {"torch_train": [], "torch_infer": [], "bnorm_train": [], "bnorm_infer": []}
    for r in range(a.rounds):
        t, i = torch_round(x, y, a.batch)
        res["torch_train"].append(t), res["torch_infer"].append(i)
        t, i = bnorm_round(a.bnorm, a.data, a.images, a.batch, a.threads)
        res["bnorm_train"].append(t), res["bnorm_infer"].append(i)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in res.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"PyTorch {torch.__version__}, {a.threads} threads, batch {a.batch}, {a.images} images, "
          f"medians of {a.rounds} rounds (images/s):")
    print(f"  training:  bnorm {med['bnorm_train']:.0f}  PyTorch {med['torch_train']:.0f}  "
          f"ratio {med['bnorm_train'] / med['torch_train']:.2f}")
    print(f"  inference: bnorm {med['bnorm_infer']:.0f}  PyTorch {med['torch_infer']:.0f}  "
          f"ratio {med['bnorm_infer'] / med['torch_infer']:.2f}")
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump({"rounds": res, "median": med}, f, indent=1)
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
