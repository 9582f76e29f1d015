"""Runs Loupe, ONNX Runtime and PyTorch on the same U-Net and input sizes,
in one run, and prints each figure and the ratios (docs/benchmarks.md).

    python3 -m venv ~/.cache/loupe/bench && ~/.cache/loupe/bench/bin/pip install torch onnxruntime numpy
    swift build -c release --scratch-path .build-release --product loupe
    ~/.cache/loupe/bench/bin/python Tests/Reference/bench_peers.py --loupe .build-release/release/loupe --rounds 5

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
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--rounds", type=int, default=5, help="alternating inference rounds")
parser.add_argument("--training-rounds", type=int, default=3)
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


def loupe_bench(onnx_path, repetitions, steps):
    command = [args.loupe, "bench", "segmentation", "--json", "--threads", str(args.threads),
               "--repetitions", str(repetitions), "--steps", str(steps),
               "--base-width", str(args.base_width), "--depth", str(args.depth)]
    if onnx_path:
        command += ["--export-onnx", onnx_path]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


# Rounds alternate Loupe, ONNX Runtime and PyTorch, so that the machine's
# slow and fast minutes fall on all of them; each figure is the median over
# rounds, and each ratio the median of the rounds' ratios.
with tempfile.TemporaryDirectory() as tmp:
    onnx_path = os.path.join(tmp, "unet.onnx")
    loupe_bench(onnx_path, 1, 0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    model = UNet(1, 4, args.base_width, args.depth).eval()
    inputs = {size: np.random.default_rng(size).standard_normal((1, 1, size, size), dtype=np.float32) for size in (256, 512)}
    samples = {size: [] for size in (256, 512)}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds} …", file=sys.stderr)
        loupe = loupe_bench(None, args.repetitions, 0)
        for size in (256, 512):
            x = inputs[size]
            ort_ms = median_ms(lambda: session.run(["logits"], {"input": x}), args.repetitions)
            tx = torch.from_numpy(x)
            with torch.no_grad():
                torch_ms = median_ms(lambda: model(tx), args.repetitions)
            samples[size].append((loupe[f"inference fp32 {size}x{size}"], loupe[f"inference bf16 {size}x{size}"], ort_ms, torch_ms))
    rows = []
    for size in (256, 512):
        s = samples[size]
        rows.append((f"inference {size}x{size} (ms, batch 1)",
                     statistics.median(r[0] for r in s), statistics.median(r[1] for r in s),
                     statistics.median(r[2] for r in s), statistics.median(r[3] for r in s),
                     statistics.median(r[0] / r[2] for r in s), statistics.median(r[1] / r[2] for r in s)))

    print("training …", file=sys.stderr)
    train_model = UNet(1, 4, args.base_width, args.depth).train()
    opt = optimizer(train_model, 1e-4, 1e-4)
    x = torch.randn(8, 1, 256, 256)
    y = torch.randint(0, 4, (8, 256, 256))
    weights = torch.ones(4)

    def step():
        opt.zero_grad()
        segmentation_loss(train_model(x), y, weights).backward()
        opt.step()

    train_ratios, loupe_rates, torch_rates = [], [], []
    for _ in range(args.training_rounds):
        loupe_rate = loupe_bench(None, 1, args.steps)["training batch 8 256x256"]
        torch_rate = 8 / (median_ms(step, args.steps) / 1000)
        loupe_rates.append(loupe_rate)
        torch_rates.append(torch_rate)
        train_ratios.append(loupe_rate / torch_rate)
    loupe_train, torch_train = statistics.median(loupe_rates), statistics.median(torch_rates)
    train_ratio = statistics.median(train_ratios)

print(f"U-Net base width {args.base_width}, depth {args.depth}; {args.threads} threads; {args.rounds} alternating rounds of "
      f"{args.repetitions} runs (training: {args.training_rounds} rounds of {args.steps} steps); medians; "
      f"onnxruntime {ort.__version__}, torch {torch.__version__}")
print(f"{'figure':34} {'loupe fp32':>10} {'loupe bf16':>10} {'ORT fp32':>9} {'torch fp32':>10} {'fp32/ORT':>9} {'bf16/ORT':>9}")
verdicts = []
for name, fp32, bf16, ort_ms, torch_ms, fp32_ratio, bf16_ratio in rows:
    print(f"{name:34} {fp32:10.2f} {bf16:10.2f} {ort_ms:9.2f} {torch_ms:10.2f} {fp32_ratio:9.2f} {bf16_ratio:9.2f}")
    verdicts.append((f"{name}: fp32 <= 1.25x ORT", fp32_ratio <= 1.25))
    verdicts.append((f"{name}: bf16 <= 0.80x ORT", bf16_ratio <= 0.8))
print(f"{'training batch 8 256x256 (img/s)':34} {loupe_train:10.2f} {'':>10} {'':>9} {torch_train:10.2f}   loupe/torch {train_ratio:.2f}")
verdicts.append(("training >= PyTorch", train_ratio >= 1))
for name, ok in verdicts:
    print(f"target {name}: {'met' if ok else 'MISSED'}")
