"""Writes Tests/Reference/unet-fixture.bin: a small U-Net with fixed weights
and a fixed batch, its logits, loss, every parameter gradient, and the losses
(and final weights) of 5 AdamW steps. The Swift test checks each.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch numpy
    /tmp/venv/bin/python Tests/Reference/make_fixture.py

Format: b"LOUPEFX1", u32 count, then per tensor: u32 name length, name
(UTF-8), u32 rank, u32 dims, float32 values (little-endian)."""
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from unet import UNet, optimizer, segmentation_loss  # noqa: E402

torch.manual_seed(20261128)
torch.use_deterministic_algorithms(True)
CONFIG = dict(input_channels=1, classes=3, base_width=8, depth=2)
BATCH, SIZE = 2, 32
LR, WD = 1e-2, 1e-2

model = UNet(**CONFIG).double()
# Non-trivial batch-norm parameters, so their gradients are tested too.
with torch.no_grad():
    for name, p in model.named_parameters():
        if ".bn" in name and name.endswith("weight"):
            p.uniform_(0.5, 1.5)
        elif ".bn" in name and name.endswith("bias"):
            p.uniform_(-0.2, 0.2)
model.train()

x = torch.randn(BATCH, CONFIG["input_channels"], SIZE, SIZE, dtype=torch.float64)
yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
labels = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.long)
labels[0][(yy - 10) ** 2 + (xx - 12) ** 2 < 30] = 1
labels[0][(yy > 20) & (xx > 4) & (xx < 28) & (yy < 23)] = 2
labels[1][(yy - 20) ** 2 + (xx - 20) ** 2 < 50] = 2
labels[1][(xx - yy).abs() < 2] = 1
class_weights = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)

tensors = []


def add(name, t):
    tensors.append((name, t.detach().to(torch.float64).clone().contiguous()))


add("config", torch.tensor([CONFIG["input_channels"], CONFIG["classes"], CONFIG["base_width"], CONFIG["depth"]]))
add("optimizer", torch.tensor([LR, WD]))
add("input", x)
add("labels", labels)
add("class_weights", class_weights)
for name, p in model.named_parameters():
    add("param/" + name, p)
for name, b in model.named_buffers():
    if "num_batches" not in name:
        add("buffer/" + name, b)

logits = model(x)
loss = segmentation_loss(logits, labels, class_weights)
loss.backward()
add("logits", logits)
add("loss", loss.reshape(1))
for name, p in model.named_parameters():
    add("grad/" + name, p.grad)

# That forward updated the running statistics; start the steps from the saved ones.
with torch.no_grad():
    for name, b in model.named_buffers():
        if "num_batches" not in name:
            b.copy_(dict(tensors)["buffer/" + name])
model.zero_grad()
opt = optimizer(model, LR, WD)
losses = []
for _ in range(5):
    opt.zero_grad()
    step_loss = segmentation_loss(model(x), labels, class_weights)
    step_loss.backward()
    opt.step()
    losses.append(step_loss.item())
add("adamw_losses", torch.tensor(losses))
for name, p in model.named_parameters():
    add("final/" + name, p)
for name, b in model.named_buffers():
    if "num_batches" not in name:
        add("final/" + name, b)

# Inference: batch norm on the running statistics (what the Segmenter folds in).
model.eval()
with torch.no_grad():
    add("eval_logits", model(x))

out = os.path.join(os.path.dirname(__file__), "unet-fixture.bin")
with open(out, "wb") as f:
    f.write(b"LOUPEFX1")
    f.write(struct.pack("<I", len(tensors)))
    for name, t in tensors:
        raw = name.encode()
        f.write(struct.pack("<I", len(raw)))
        f.write(raw)
        f.write(struct.pack("<I", t.dim()))
        for d in t.shape:
            f.write(struct.pack("<I", d))
        f.write(t.to(torch.float32).numpy().tobytes())
print(f"wrote {out}: {len(tensors)} tensors, loss {loss.item():.6f}, AdamW losses {', '.join(f'{l:.6f}' for l in losses)}")
