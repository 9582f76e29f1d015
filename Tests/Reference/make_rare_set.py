#!/usr/bin/env python3
"""Makes NEU-Seg harder the way plants have it: most parts defect-free.

From each NEU-Seg image (200x200 steel surface, classes 1 to 3) it cuts
SIZE x SIZE crops of two kinds, written as PNG (no JPEG re-encoding):

- a *defective* crop: centred on a random labelled pixel, clamped to the image;
- a *clean* crop: a random window with no labelled pixel, where one exists
  (about 55 % of NEU-Seg images have a clean 96x96 window).

It writes two sets in the layout `loupe train` and `loupe eval` read
(images/SPLIT/NAME.png, annotations/SPLIT/NAME.png):

- OUT/balanced: one defective crop of every image (the same crops as the rare
  set's defective ones, and all the others);
- OUT/rare: every clean crop, plus the defective crops of a random
  --defective-share of the images (default 0.1), per split.

The choice is seeded, so a run is reproduced by its command. Nothing is
written inside the repository; NEU-Seg is read in place.

    ~/.cache/loupe/venv/bin/python Tests/Reference/make_rare_set.py \
        --neu ../shared/datasets/neu-seg --out ~/.cache/loupe/neu-rare
"""
import argparse
import os
import random
import sys

import numpy as np
from PIL import Image


def windows_without_labels(mask, size):
    """Top-left corners of every size x size window with no labelled pixel."""
    labelled = (mask > 0).astype(np.int32)
    total = np.pad(labelled.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = total[size:, size:] - total[:-size, size:] - total[size:, :-size] + total[:-size, :-size]
    ys, xs = np.nonzero(sums == 0)
    return list(zip(ys.tolist(), xs.tolist()))


def defective_window(mask, size, rng):
    ys, xs = np.nonzero(mask > 0)
    if len(ys) == 0:
        return None
    pick = rng.randrange(len(ys))
    h, w = mask.shape
    y = min(max(0, ys[pick] - size // 2), h - size)
    x = min(max(0, xs[pick] - size // 2), w - size)
    return y, x


def save(out, split, name, image, mask, y, x, size):
    for kind, array in (("images", image), ("annotations", mask)):
        directory = os.path.join(out, kind, split)
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(array[y:y + size, x:x + size]).save(os.path.join(directory, name + ".png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neu", required=True, help="NEU-Seg directory (images/, annotations/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--defective-share", type=float, default=0.1, help="share of images whose defective crop joins the rare set")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.neu, "images")):
        sys.exit(f"make_rare_set: no NEU-Seg at {args.neu} (expected images/ and annotations/)")
    if not 0 < args.defective_share <= 1:
        sys.exit("make_rare_set: --defective-share must be in (0, 1]")
    rng = random.Random(args.seed)
    for split in sorted(os.listdir(os.path.join(args.neu, "images"))):
        names = sorted(n for n in os.listdir(os.path.join(args.neu, "images", split)) if n.endswith((".jpg", ".png")))
        counts = {"balanced": 0, "rare defective": 0, "rare clean": 0}
        pixels = {"rare": [0, 0], "balanced": [0, 0]}
        for name in names:
            stem = os.path.splitext(name)[0]
            image = np.array(Image.open(os.path.join(args.neu, "images", split, name)).convert("L"))
            mask = np.array(Image.open(os.path.join(args.neu, "annotations", split, stem + ".png")))
            defective = defective_window(mask, args.size, rng)
            clean = windows_without_labels(mask, args.size)
            keep_defective = rng.random() < args.defective_share
            if defective is not None:
                y, x = defective
                save(os.path.join(args.out, "balanced"), split, stem, image, mask, y, x, args.size)
                counts["balanced"] += 1
                crop = mask[y:y + args.size, x:x + args.size]
                pixels["balanced"][0] += int((crop > 0).sum())
                pixels["balanced"][1] += crop.size
                if keep_defective:
                    save(os.path.join(args.out, "rare"), split, stem + "-d", image, mask, y, x, args.size)
                    counts["rare defective"] += 1
                    pixels["rare"][0] += int((crop > 0).sum())
                    pixels["rare"][1] += crop.size
            if clean:
                y, x = clean[rng.randrange(len(clean))]
                save(os.path.join(args.out, "rare"), split, stem + "-c", image, mask, y, x, args.size)
                counts["rare clean"] += 1
                pixels["rare"][1] += args.size * args.size
        share = {k: (v[0] / v[1] if v[1] else 0) for k, v in pixels.items()}
        print(f"{split}: balanced {counts['balanced']} crops ({share['balanced']:.1%} of pixels defective); "
              f"rare {counts['rare defective']} defective + {counts['rare clean']} clean crops "
              f"({share['rare']:.2%} of pixels defective)")


if __name__ == "__main__":
    main()
