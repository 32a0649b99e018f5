"""Dense optical flow between frames (OpenCV DIS by default, no weights needed) and the
forward-backward cycle check that keeps only trustworthy correspondences."""

from __future__ import annotations

import cv2
import numpy as np

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class DISFlow:
    """OpenCV's DIS optical flow. MoDGS uses RAFT; DIS is the weight-free default (documented)."""

    def __init__(self, preset: str = "medium"):
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
        """Flow [H,W,2] (x, y in pixels) taking pixel p of a to p + flow(p) in b."""
        ga = cv2.cvtColor(img_a, cv2.COLOR_RGB2GRAY) if img_a.ndim == 3 else img_a
        gb = cv2.cvtColor(img_b, cv2.COLOR_RGB2GRAY) if img_b.ndim == 3 else img_b
        return self.dis.calc(ga, gb, None)


def sample_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img [H,W,C] at float pixel-index coordinates (x, y); border-clamped."""
    return cv2.remap(img, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cycle_consistent(flow_ab: np.ndarray, flow_ba: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """Mask [H,W] of pixels p with |F_ab(p) + F_ba(p + F_ab(p))| < threshold and p + F_ab(p) in view.

    MoDGS/OmniMotion use a 3 px cycle threshold on exhaustive RAFT flows.
    """
    h, w = flow_ab.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    qx, qy = xs + flow_ab[..., 0], ys + flow_ab[..., 1]
    inside = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
    back = sample_bilinear(flow_ba, qx, qy)
    err = np.linalg.norm(flow_ab + back, axis=-1)
    return inside & (err < threshold)
