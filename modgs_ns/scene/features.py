"""SIFT matches between two images (OpenCV, Lowe's ratio test): camera poses and held-out placement."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def sift_matches(
    a: np.ndarray, b: np.ndarray, mask_a: Optional[np.ndarray] = None, ratio: float = 0.75, nfeatures: int = 4000
) -> tuple[np.ndarray, np.ndarray]:
    """Matched pixel coordinates [N,2], [N,2] (float64) between two uint8 images (RGB or grey);
    mask_a: True where features of `a` may be used."""
    sift = cv2.SIFT_create(nfeatures=nfeatures)
    ga, gb = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.ndim == 3 else im for im in (a, b))
    ka, da = sift.detectAndCompute(ga, None if mask_a is None else mask_a.astype(np.uint8) * 255)
    kb, db = sift.detectAndCompute(gb, None)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < ratio * n.distance]
    pa = np.array([ka[m.queryIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
    pb = np.array([kb[m.trainIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
    return pa, pb
