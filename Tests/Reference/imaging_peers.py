"""Runs `loupe bench imaging` and OpenCV on the same 1280x1024 frames, in one
run, and prints each step's median and the ratio Loupe / OpenCV
(docs/benchmarks.md). OpenCV runs on one thread, as Loupe's imaging does.

    python3 -m venv ~/.cache/loupe/cv && ~/.cache/loupe/cv/bin/pip install opencv-python-headless numpy
    swift build -c release --scratch-path .build-release --product loupe
    ~/.cache/loupe/cv/bin/python Tests/Reference/imaging_peers.py --loupe .build-release/release/loupe

The peers are what an engineer would write with OpenCV for each step:
- JPEG decode: cv2.imdecode to grey (libjpeg-turbo, like Loupe's).
- Alignment, +/-15 degrees: the classic pyramid search with cv2.matchTemplate
  (normalised correlation) over rotated templates, coarse to fine, with
  parabolic sub-pixel and sub-degree peaks.
- ROI crop: cv2.warpAffine of each 256x256 ROI through the found pose.
- Wand: cv2.floodFill from the click with a fixed range of half the step from
  the clicked patch to its surroundings (the magic wand of image editors), and
  its IoU on the same clicks as Loupe's wand.
- Overlay: class colours blended at 0.5 where the mask is set.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time

import cv2
import numpy as np

from floodfill_wand import magic_wand

parser = argparse.ArgumentParser()
parser.add_argument("--loupe", default=".build-release/release/loupe")
parser.add_argument("--repetitions", type=int, default=15)
args = parser.parse_args()
cv2.setNumThreads(1)


def median_ms(fn, items):
    times = []
    results = []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), results


class PyramidAligner:
    """Template = the square inscribed in the disc of the template rectangle
    (so rotating it brings in nothing from outside), matched at 1/8 scale
    over every angle, then refined at 1/4, 1/2 and full scale."""

    def __init__(self, reference, rect, angle_range=15.0, levels=4):
        x, y, w, h = rect["x"], rect["y"], rect["width"], rect["height"]
        self.center = (x + w / 2, y + h / 2)
        self.side = int(min(w, h) / math.sqrt(2))
        self.reference = reference
        self.angle_range = angle_range
        self.levels = levels

    def template(self, angle, level):
        scale = 0.5 ** level
        side = max(8, int(self.side * scale))
        m = cv2.getRotationMatrix2D(self.center, angle, scale)
        m[0, 2] += side / 2 - self.center[0]
        m[1, 2] += side / 2 - self.center[1]
        return cv2.warpAffine(self.reference, m, (side, side), flags=cv2.INTER_LINEAR)

    def align(self, frame):
        pyramid = [frame]
        for _ in range(1, self.levels):
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        top = self.levels - 1
        step = 2.0
        best = None
        for angle in np.arange(-self.angle_range, self.angle_range + 1e-9, step):
            scores = cv2.matchTemplate(pyramid[top], self.template(angle, top), cv2.TM_CCOEFF_NORMED)
            _, score, _, loc = cv2.minMaxLoc(scores)
            if best is None or score > best[0]:
                best = (score, loc, angle)
        score, loc, angle = best
        for level in range(top - 1, -1, -1):
            step /= 2
            loc = (loc[0] * 2, loc[1] * 2)
            image = pyramid[level]
            results = []
            for a in (angle - step, angle, angle + step):
                t = self.template(a, level)
                margin = 3
                x0, y0 = max(0, loc[0] - margin), max(0, loc[1] - margin)
                x1 = min(image.shape[1], loc[0] + t.shape[1] + margin)
                y1 = min(image.shape[0], loc[1] + t.shape[0] + margin)
                scores = cv2.matchTemplate(image[y0:y1, x0:x1], t, cv2.TM_CCOEFF_NORMED)
                _, s, _, l = cv2.minMaxLoc(scores)
                results.append((s, (x0 + l[0], y0 + l[1]), a, scores, l))
            s, loc, angle, scores, l = max(results, key=lambda r: r[0])
            if level == 0:
                # Parabolic peaks: position from the score map, angle from the three angles.
                def parabola(m, c, p):
                    d = m - 2 * c + p
                    return 0.0 if d == 0 else 0.5 * (m - p) / d
                dx = parabola(scores[l[1], l[0] - 1], s, scores[l[1], l[0] + 1]) if 0 < l[0] < scores.shape[1] - 1 else 0
                dy = parabola(scores[l[1] - 1, l[0]], s, scores[l[1] + 1, l[0]]) if 0 < l[1] < scores.shape[0] - 1 else 0
                angles = [r[0] for r in results]
                da = parabola(angles[0], angles[1], angles[2]) * step if max(angles) == angles[1] else 0
                score = s
                center = (loc[0] + dx + self.side / 2, loc[1] + dy + self.side / 2)
                return angle + da, center, score
        return angle, loc, score

    def pose_matrix(self, angle, center):
        """Reference -> frame: rotate about the template centre by -angle
        (the template was rotated by +angle to match), then move it to centre."""
        m = cv2.getRotationMatrix2D(self.center, -angle, 1.0)
        m[0, 2] += center[0] - self.center[0]
        m[1, 2] += center[1] - self.center[1]
        return m


def iou(selection, truth, label, x, y, side=160):
    h, w = truth.shape
    x0, y0 = max(0, min(w - side, x - side // 2)), max(0, min(h - side, y - side // 2))
    chosen = selection[y0:y0 + side, x0:x0 + side] != 0
    wanted = truth[y0:y0 + side, x0:x0 + side] == label
    union = np.count_nonzero(chosen | wanted)
    return np.count_nonzero(chosen & wanted) / max(1, union)


with tempfile.TemporaryDirectory() as directory:
    run = subprocess.run([args.loupe, "bench", "imaging", "--json", "--repetitions", str(args.repetitions),
                          "--save-frames", directory], capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise SystemExit(f"loupe bench imaging failed ({run.returncode}): {run.stderr[-2000:]}")
    loupe = json.loads(run.stdout)
    count = args.repetitions
    jpegs = [open(os.path.join(directory, f"frame-{i}.jpg"), "rb").read() for i in range(count)]
    masks = [cv2.imread(os.path.join(directory, f"mask-{i}.png"), cv2.IMREAD_UNCHANGED) for i in range(count)]
    reference = cv2.imread(os.path.join(directory, "reference.png"), cv2.IMREAD_GRAYSCALE)

peer = {}
peer["JPEG decode 1280x1024 grey"], frames = median_ms(
    lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), jpegs)
aligner = PyramidAligner(reference, loupe["template"])
peer["align, +/-15 degrees"], found = median_ms(aligner.align, frames)
poses = [aligner.pose_matrix(angle, center) for angle, center, _ in found]


def crop(index):
    out = []
    for roi in loupe["rois"]:
        # Output pixel (u, v) -> reference (roi.x + u, roi.y + v) -> frame.
        m = poses[index].copy()
        m[:, 2] += m[:, 0] * roi["x"] + m[:, 1] * roi["y"]
        out.append(cv2.warpAffine(frames[index], m, (roi["width"], roi["height"]),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return out


peer["crop two 256x256 ROIs"], _ = median_ms(crop, range(count))
clicks = loupe["clicks"]
by_frame = {}
for c in clicks:
    by_frame.setdefault(c["frame"], c)
wand_ms, _ = median_ms(lambda i: magic_wand(frames[i], by_frame[i]["x"], by_frame[i]["y"]) if i in by_frame
                       else magic_wand(frames[i], frames[i].shape[1] // 2, frames[i].shape[0] // 2), range(count))
peer["wand, one click"] = wand_ms
peer_ious = [iou(magic_wand(frames[c["frame"]], c["x"], c["y"]), masks[c["frame"]], c["label"], c["x"], c["y"]) for c in clicks]
lut = np.zeros((256, 1, 3), np.uint8)
lut[1:4, 0] = [[255, 64, 64], [64, 255, 64], [64, 128, 255]]


def overlay(i):
    base = cv2.cvtColor(frames[i], cv2.COLOR_GRAY2RGB)
    painted = cv2.LUT(cv2.cvtColor(masks[i], cv2.COLOR_GRAY2RGB), lut)
    blended = cv2.addWeighted(base, 0.5, painted, 0.5, 0)
    cv2.copyTo(blended, masks[i], base)
    return base


peer["overlay 1280x1024 at 0.5"], _ = median_ms(overlay, range(count))

print(f"loupe bench imaging vs OpenCV {cv2.__version__} (one thread), same {count} frames, medians")
print(f"{'step':32} {'loupe':>10} {'opencv':>10} {'ratio':>7}  target")
for row in loupe["rows"]:
    name = row["step"]
    ratio = row["median_ms"] / peer[name] if peer.get(name) else float("nan")
    target = f"<= {row['target_ms']:.0f} ms" if row.get("target_ms") else ""
    print(f"{name:32} {row['median_ms']:8.2f}ms {peer[name]:8.2f}ms {ratio:7.2f}  {target}")
print(f"alignment: OpenCV's mean match score {statistics.mean(s for _, _, s in found):.3f}")
loupe_iou = statistics.mean(c["iou"] for c in clicks) if clicks else float("nan")
print(f"wand IoU on the same {len(clicks)} clicks: loupe {loupe_iou:.3f}, OpenCV floodFill {statistics.mean(peer_ious):.3f}")
