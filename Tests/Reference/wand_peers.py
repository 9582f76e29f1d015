"""OpenCV's floodFill (floodfill_wand.py) under the same scripted operator as
`loupe bench wand`, on the targets it saved: per target, click 1 at the most
interior pixel of the class's largest region, then corrections at the most
interior pixel of the largest error (a label click adds the fill, an unlabel
click removes it). Prints the rows as JSON; `loupe bench wand --opencv-python
PYTHON` runs it and prints them beside its own.

    python3 -m venv ~/.cache/loupe/cv && ~/.cache/loupe/cv/bin/pip install opencv-python-headless numpy
    .build-release/release/loupe bench wand --opencv-python ~/.cache/loupe/cv/bin/python
"""
import argparse
import json
import os
import statistics
import time

import cv2
import numpy as np

from floodfill_wand import magic_wand

parser = argparse.ArgumentParser()
parser.add_argument("--targets", required=True)
parser.add_argument("--clicks", type=int, default=10)
parser.add_argument("--tolerance", type=float, default=0.5)
args = parser.parse_args()
cv2.setNumThreads(1)


def interior(mask):
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    distance[~mask] = -1
    index = int(np.argmax(distance))
    return index % mask.shape[1], index // mask.shape[1]


def largest(mask):
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask & False, 0
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best, int(stats[best, cv2.CC_STAT_AREA])


def iou(selection, truth, ignored):
    keep = ~ignored
    union = np.count_nonzero((selection | truth) & keep)
    return 1.0 if union == 0 else np.count_nonzero(selection & truth & keep) / union


manifest = json.load(open(os.path.join(args.targets, "manifest.json")))
by_data = {}
for target in manifest["targets"]:
    grey = cv2.imread(os.path.join(args.targets, target["image"]), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(os.path.join(args.targets, target["truth"]), cv2.IMREAD_GRAYSCALE) != 0
    ignored = (cv2.imread(os.path.join(args.targets, target["ignored"]), cv2.IMREAD_GRAYSCALE) != 0
               if target.get("ignored") else np.zeros_like(truth))
    first = interior(truth)
    curve, times = [], by_data.setdefault(target["data"], {"curves": [], "times": []})["times"]
    if first is not None:
        selection = np.zeros_like(truth)
        x, y, positive = first[0], first[1], True
        for _ in range(args.clicks):
            start = time.perf_counter()
            chosen = magic_wand(grey, x, y, args.tolerance) != 0
            selection = (selection | chosen) if positive else (selection & ~chosen)
            times.append((time.perf_counter() - start) * 1000)
            curve.append(iou(selection, truth, ignored))
            if curve[-1] >= 0.999:
                break
            miss, miss_area = largest(truth & ~selection)
            false, false_area = largest(selection & ~truth & ~ignored)
            if miss_area == 0 and false_area == 0:
                break
            positive = miss_area >= false_area
            x, y = interior(miss if positive else false)
    by_data[target["data"]]["curves"].append(curve)

rows = []
for data, found in by_data.items():
    filled = [[(c[min(k, len(c) - 1)] if c else 0.0) for k in range(args.clicks)] for c in found["curves"]]
    reached = [next((k + 1 for k, v in enumerate(c) if v >= 0.85), None) for c in filled]
    times = sorted(found["times"])
    rows.append({
        "method": "OpenCV floodFill", "data": data, "targets": len(filled),
        "iouAfter": [float(np.mean([c[k] for c in filled])) for k in range(args.clicks)],
        "nocAt85": float(np.mean([r if r else args.clicks for r in reached])),
        "neverAt85": float(np.mean([r is None for r in reached])),
        "clickP50Milliseconds": statistics.median(times) if times else 0.0,
        "clickP99Milliseconds": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] if times else 0.0,
    })
print(json.dumps(rows))
