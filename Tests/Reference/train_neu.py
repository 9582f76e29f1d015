"""The PyTorch peer for the NEU-Seg figure: the same U-Net, loss, optimiser,
schedule, crops and augmentation as `loupe train`, for the same wall-clock
budget on the same cores; then mIoU on the official test split.

    ~/.cache/loupe/bench/bin/pip install torch numpy pillow
    ~/.cache/loupe/bench/bin/python Tests/Reference/train_neu.py --dataset ../shared/datasets/neu-seg --minutes 20
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from unet import UNet, optimizer, segmentation_loss  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", required=True)
parser.add_argument("--minutes", type=float, default=20)
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--crop", type=int, default=192)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)


def load(split):
    names = sorted(os.listdir(os.path.join(args.dataset, "images", split)))
    images, masks = [], []
    for name in names:
        stem = os.path.splitext(name)[0]
        images.append(np.asarray(Image.open(os.path.join(args.dataset, "images", split, name)).convert("L"), dtype=np.uint8))
        masks.append(np.asarray(Image.open(os.path.join(args.dataset, "annotations", split, stem + ".png")), dtype=np.uint8))
    return np.stack(images), np.stack(masks)


train_x, train_y = load("training")
test_x, test_y = load("test")
mean, std = train_x.mean() / 255, train_x.std() / 255
counts = np.bincount(train_y.ravel(), minlength=4).astype(np.float64)
weights = torch.tensor(np.clip(np.sqrt(counts[0] / counts), 1, 10), dtype=torch.float32)
print(f"loaded {len(train_x)} training, {len(test_x)} test images; class weights {weights.tolist()}", file=sys.stderr)

model = UNet(1, 4, 16, 3)
opt = optimizer(model, args.lr, 1e-4)


def batch():
    idx = rng.integers(0, len(train_x), args.batch)
    xs, ys = [], []
    for i in idx:
        img = torch.from_numpy(train_x[i]).float()[None, None] / 255
        msk = torch.from_numpy(train_y[i]).float()[None, None]
        angle = math.radians(rng.uniform(-10, 10))
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]], dtype=torch.float32)[None]
        grid = F.affine_grid(theta, img.shape, align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        msk = F.grid_sample(msk, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        y0, x0 = rng.integers(0, 200 - args.crop + 1, 2)
        img = img[..., y0:y0 + args.crop, x0:x0 + args.crop]
        msk = msk[..., y0:y0 + args.crop, x0:x0 + args.crop]
        if rng.random() < 0.5:
            img, msk = img.flip(-1), msk.flip(-1)
        if rng.random() < 0.5:
            img, msk = img.flip(-2), msk.flip(-2)
        contrast, brightness = 1 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        img = ((img - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
        xs.append((img - mean) / std)
        ys.append(msk.long()[:, 0])
    return torch.cat(xs), torch.cat(ys)


budget = args.minutes * 60
start = time.time()
step = 0
model.train()
while time.time() - start < budget:
    progress = (time.time() - start) / budget
    lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    if step < 20:
        lr *= (step + 1) / 20
    for group in opt.param_groups:
        group["lr"] = lr
    x, y = batch()
    opt.zero_grad()
    loss = segmentation_loss(model(x), y, weights)
    loss.backward()
    opt.step()
    step += 1
    if step % 20 == 0:
        print(f"{time.time() - start:6.0f}s step {step} loss {loss.item():.4f} {step * args.batch / (time.time() - start):.2f} img/s", file=sys.stderr)
elapsed = time.time() - start

model.eval()
confusion = np.zeros((4, 4), dtype=np.int64)
with torch.no_grad():
    for i in range(len(test_x)):
        img = torch.from_numpy(test_x[i]).float()[None, None] / 255
        img = F.pad((img - mean) / std, (0, 8, 0, 8), mode="replicate")
        pred = model(img)[0, :, :200, :200].argmax(0).numpy()
        confusion += np.bincount(test_y[i].ravel().astype(np.int64) * 4 + pred.ravel(), minlength=16).reshape(4, 4)
iou = [confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum() - confusion[c, c]) for c in range(4)]
print(f"pytorch {torch.__version__}: {step} steps ({step * args.batch} images, {step * args.batch / elapsed:.2f} img/s) in {elapsed:.0f} s on {args.threads} threads")
print("test IoU per class: " + " ".join(f"{v:.4f}" for v in iou) + f"; mIoU {np.mean(iou):.4f}")
