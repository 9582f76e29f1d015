"""Runs Loupe, ONNX Runtime and PyTorch on the same U-Net and input sizes,
in one run, and prints each figure and the ratios (docs/benchmarks.md).

    python3 -m venv ~/.cache/loupe/bench && ~/.cache/loupe/bench/bin/pip install torch onnxruntime numpy
    swift build -c release --scratch-path .build-release --product loupe
    ~/.cache/loupe/bench/bin/python Tests/Reference/bench_peers.py --loupe .build-release/release/loupe

Targets (issue #3): Loupe fp32 <= 1.25x ONNX Runtime fp32 latency; Loupe bf16
<= 0.8x ONNX Runtime fp32; Loupe training images/s >= PyTorch's."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(__file__))
from unet import UNet, optimizer, segmentation_loss  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--loupe", default=".build-release/release/loupe")
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--repetitions", type=int, default=15)
parser.add_argument("--steps", type=int, default=8)
parser.add_argument("--base-width", type=int, default=16)
parser.add_argument("--depth", type=int, default=3)
args = parser.parse_args()
torch.set_num_threads(args.threads)


def median_ms(fn, repetitions):
    fn()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


with tempfile.TemporaryDirectory() as tmp:
    onnx_path = os.path.join(tmp, "unet.onnx")
    print(f"running {args.loupe} bench segmentation …", file=sys.stderr)
    out = subprocess.run([args.loupe, "bench", "segmentation", "--json", "--export-onnx", onnx_path,
                          "--threads", str(args.threads), "--repetitions", str(args.repetitions), "--steps", str(args.steps),
                          "--base-width", str(args.base_width), "--depth", str(args.depth)],
                         check=True, capture_output=True, text=True).stdout
    loupe = json.loads(out)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    rows = []
    model = UNet(1, 4, args.base_width, args.depth).eval()
    for size in (256, 512):
        x = np.random.default_rng(size).standard_normal((1, 1, size, size), dtype=np.float32)
        print(f"onnxruntime {size}x{size} …", file=sys.stderr)
        ort_ms = median_ms(lambda: session.run(["logits"], {"input": x}), args.repetitions)
        print(f"pytorch inference {size}x{size} …", file=sys.stderr)
        tx = torch.from_numpy(x)
        with torch.no_grad():
            torch_ms = median_ms(lambda: model(tx), args.repetitions)
        fp32 = loupe[f"inference fp32 {size}x{size}"]
        bf16 = loupe[f"inference bf16 {size}x{size}"]
        rows.append((f"inference {size}x{size} (ms, batch 1)", fp32, bf16, ort_ms, torch_ms))

    print("pytorch training batch 8 256x256 …", file=sys.stderr)
    train_model = UNet(1, 4, args.base_width, args.depth).train()
    opt = optimizer(train_model, 1e-4, 1e-4)
    x = torch.randn(8, 1, 256, 256)
    y = torch.randint(0, 4, (8, 256, 256))
    weights = torch.ones(4)

    def step():
        opt.zero_grad()
        segmentation_loss(train_model(x), y, weights).backward()
        opt.step()

    step_ms = median_ms(step, args.steps)
    torch_train = 8 / (step_ms / 1000)
    loupe_train = loupe["training batch 8 256x256"]

print(f"U-Net base width {args.base_width}, depth {args.depth}; {args.threads} threads; medians; "
      f"onnxruntime {ort.__version__}, torch {torch.__version__}")
print(f"{'figure':34} {'loupe fp32':>10} {'loupe bf16':>10} {'ORT fp32':>9} {'torch fp32':>10} {'fp32/ORT':>9} {'bf16/ORT':>9}")
verdicts = []
for name, fp32, bf16, ort_ms, torch_ms in rows:
    print(f"{name:34} {fp32:10.2f} {bf16:10.2f} {ort_ms:9.2f} {torch_ms:10.2f} {fp32 / ort_ms:9.2f} {bf16 / ort_ms:9.2f}")
    verdicts.append((f"{name}: fp32 <= 1.25x ORT", fp32 / ort_ms <= 1.25))
    verdicts.append((f"{name}: bf16 <= 0.80x ORT", bf16 / ort_ms <= 0.8))
print(f"{'training batch 8 256x256 (img/s)':34} {loupe_train:10.2f} {'':>10} {'':>9} {torch_train:10.2f}   loupe/torch {loupe_train / torch_train:.2f}")
verdicts.append(("training >= PyTorch", loupe_train >= torch_train))
for name, ok in verdicts:
    print(f"target {name}: {'met' if ok else 'MISSED'}")
