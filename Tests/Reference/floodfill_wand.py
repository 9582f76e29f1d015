"""The OpenCV peer of the wand, shared by imaging_peers.py and wand_peers.py:
cv2.floodFill from the click with a fixed range of tolerance x the step from
the clicked patch to a ring around it (the magic wand of image editors)."""
import math

import cv2
import numpy as np


def magic_wand(grey, x, y, tolerance=0.5, ring_radius=20):
    h, w = grey.shape
    patch = float(np.median(grey[max(0, y - 1):y + 2, max(0, x - 1):x + 2]))
    ring = []
    for step in range(72):
        a = step * math.pi / 36
        px, py = x + round(ring_radius * math.cos(a)), y + round(ring_radius * math.sin(a))
        if 0 <= px < w and 0 <= py < h:
            ring.append(float(grey[py, px]))
    reach = abs(float(np.median(ring)) - patch) * tolerance if ring else 0
    mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    cv2.floodFill(grey, mask, (x, y), 0, (reach,), (reach,), flags)
    return mask[1:-1, 1:-1]
