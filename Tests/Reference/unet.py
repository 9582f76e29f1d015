"""The Loupe U-Net in PyTorch: the same layers, names and loss as
Sources/LoupeSegmentation, for fixtures and for the benchmark peer."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class UNet(nn.Module):
    def __init__(self, input_channels=1, classes=4, base_width=16, depth=3):
        super().__init__()
        self.depth = depth
        w = [base_width << i for i in range(depth + 1)]
        for level in range(depth):
            setattr(self, f"down{level}", Block(input_channels if level == 0 else w[level - 1], w[level]))
        self.bottom = Block(w[depth - 1], w[depth])
        for level in reversed(range(depth)):
            setattr(self, f"up{level}", Block(w[level + 1] + w[level], w[level]))
        self.head = nn.Conv2d(base_width, classes, 1)

    def forward(self, x):
        skips = []
        for level in range(self.depth):
            x = getattr(self, f"down{level}")(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.cat([x, skips[level]], dim=1)
            x = getattr(self, f"up{level}")(x)
        return self.head(x)


def segmentation_loss(logits, labels, class_weights, dice_weight=1.0, smooth=1.0):
    """Weighted softmax cross-entropy (mean over the weights of the true
    classes) plus soft Dice over the defect classes (1…K-1), over the batch."""
    ce = F.cross_entropy(logits, labels, weight=class_weights)
    probs = logits.softmax(dim=1)
    classes = logits.shape[1]
    onehot = F.one_hot(labels, classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)[1:]
    total = probs.sum(dims)[1:] + onehot.sum(dims)[1:]
    dice = (2 * inter + smooth) / (total + smooth)
    return ce + dice_weight * (1 - dice.mean())


def optimizer(model, lr, weight_decay):
    """AdamW; decay applies to convolution weights only."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 4]
    rest = [p for n, p in model.named_parameters() if p.dim() != 4]
    return torch.optim.AdamW([
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ], lr=lr, betas=(0.9, 0.999), eps=1e-8)
