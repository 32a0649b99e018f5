"""Placing held-out cameras in a monocular reconstruction (method reference §7.2).

The reconstruction lives in the aligned depth prior's units; test poses come in the scene's own
units (metres for the generated scenes, COLMAP units for real data). One scale s (reconstruction
units per scene unit) maps a test camera's offset from the training camera into the
reconstruction: with Rel = c2w_train^-1 c2w_test (scene units),

    c2w_test_in_reconstruction = c2w_train @ [Rel.R | s Rel.t].

Two ways to find s without clicking points (the MoDGS authors clicked 2-3 per scene):
- from metric depth of the training frames where the scene has it: median of aligned / metric;
- from SIFT matches between the training frame and the test image at the same time: the training
  pixels are lifted with the aligned depth, and s is the value that makes their projections land on
  the matched test pixels (linear in s, RANSAC over single-match hypotheses, least squares on the
  inliers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from modgs_ns.scene.features import sift_matches
from modgs_ns.scene.geometry import FLIP


@dataclass
class ScaleEstimate:
    scale: float
    method: str
    support: int
    """Pixels (metric depth) or inlier matches (matches) behind the estimate."""


def relative_pose(c2w_train: np.ndarray, c2w_test: np.ndarray) -> np.ndarray:
    """The test camera in the training camera's frame (4x4, nerfstudio/OpenGL convention)."""
    return np.linalg.inv(_h(c2w_train)) @ _h(c2w_test)


def place(c2w_train: np.ndarray, c2w_test: np.ndarray, scale: float) -> np.ndarray:
    """Test camera-to-world in the reconstruction (3x4)."""
    rel = relative_pose(c2w_train, c2w_test)
    rel[:3, 3] *= scale
    return (_h(c2w_train) @ rel)[:3]


def scale_from_metric_depth(aligned: np.ndarray, valid: np.ndarray, metric: np.ndarray) -> ScaleEstimate:
    """Median ratio of aligned (reconstruction) depth to metric depth over valid pixels."""
    m = valid & np.isfinite(metric) & (metric > 0) & np.isfinite(aligned) & (aligned > 0)
    if m.sum() < 100:
        raise ValueError("too few pixels with both aligned and metric depth to solve the test-camera scale")
    return ScaleEstimate(float(np.median(aligned[m] / metric[m])), "metric-depth", int(m.sum()))


def _h(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], :4] = m[:4, :4] if m.shape[0] == 4 else m
    return out


def solve_scale_from_points(
    X_train_cv: np.ndarray,
    q_test: np.ndarray,
    K_test: np.ndarray,
    rel: np.ndarray,
    threshold_px: float = 2.0,
    iters: int = 200,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """s such that K_test (R X + s t) projects onto q_test, robustly; returns (s, inlier mask).

    X_train_cv: points in the training camera's OpenCV frame (reconstruction units); rel: test
    camera in the training camera's frame (OpenGL, scene units).
    """
    R = FLIP @ rel[:3, :3].T @ FLIP  # training-camera (OpenCV) coordinates -> test-camera coordinates
    t = -FLIP @ rel[:3, :3].T @ rel[:3, 3]
    Y = X_train_cv @ R.T
    un = (q_test[:, 0] - K_test[0, 2]) / K_test[0, 0]
    vn = (q_test[:, 1] - K_test[1, 2]) / K_test[1, 1]
    # (Y_x + s t_x) = un (Y_z + s t_z)  ->  s (t_x - un t_z) = un Y_z - Y_x, and the same for y.
    A = np.stack([t[0] - un * t[2], t[1] - vn * t[2]], -1)
    B = np.stack([un * Y[:, 2] - Y[:, 0], vn * Y[:, 2] - Y[:, 1]], -1)

    def reproj_err(s):
        P = Y + s * t
        z = np.maximum(P[:, 2], 1e-9)
        u = K_test[0, 0] * P[:, 0] / z + K_test[0, 2]
        v = K_test[1, 1] * P[:, 1] / z + K_test[1, 2]
        err = np.hypot(u - q_test[:, 0], v - q_test[:, 1])
        return np.where(P[:, 2] > 0, err, np.inf)

    per = (A * B).sum(-1) / np.maximum((A * A).sum(-1), 1e-12)
    rng = np.random.default_rng(seed)
    best, best_in = None, None
    for i in rng.choice(len(per), size=min(iters, len(per)), replace=False):
        if not np.isfinite(per[i]) or per[i] <= 0:
            continue
        inl = reproj_err(per[i]) < threshold_px
        if best_in is None or inl.sum() > best_in.sum():
            best, best_in = per[i], inl
    if best is None or best_in.sum() < 3:
        raise ValueError("no consistent scale from the matches (camera baseline too small or too few matches)")
    a, b = A[best_in].reshape(-1), B[best_in].reshape(-1)
    s = float((a * b).sum() / (a * a).sum())
    return s, reproj_err(s) < threshold_px


def scale_from_matches(
    img_train: np.ndarray,
    depth_train: np.ndarray,
    K_train: np.ndarray,
    img_test: np.ndarray,
    K_test: np.ndarray,
    rel: np.ndarray,
    valid: Optional[np.ndarray] = None,
) -> tuple[float, int]:
    """(s, inliers) from one training / test image pair at the same time; depth in reconstruction units."""
    pa, pb = sift_matches(img_train, img_test)
    if len(pa) == 0:
        return float("nan"), 0
    # OpenCV keypoints put pixel centres at integers; ours are at +0.5.
    pa, pb = pa + 0.5, pb + 0.5
    H, W = depth_train.shape
    iu = np.clip(np.floor(pa[:, 0]).astype(int), 0, W - 1)
    iv = np.clip(np.floor(pa[:, 1]).astype(int), 0, H - 1)
    z = depth_train[iv, iu]
    ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        ok &= valid[iv, iu]
    if ok.sum() < 8:
        return float("nan"), 0
    pa, pb, z = pa[ok], pb[ok], z[ok]
    X = np.stack(
        [(pa[:, 0] - K_train[0, 2]) / K_train[0, 0] * z, (pa[:, 1] - K_train[1, 2]) / K_train[1, 1] * z, z], -1
    )
    try:
        s, inl = solve_scale_from_points(X, pb, K_test, rel)
    except ValueError:
        return float("nan"), 0
    return s, int(inl.sum())


def combine(estimates: list[tuple[float, int]]) -> ScaleEstimate:
    """Inlier-weighted median over image pairs."""
    est = [(s, n) for s, n in estimates if np.isfinite(s) and n > 0]
    if not est:
        raise ValueError("could not solve the test-camera scale from image matches; pass it explicitly")
    s = np.array([e[0] for e in est])
    w = np.array([e[1] for e in est], dtype=float)
    order = np.argsort(s)
    cw = np.cumsum(w[order])
    return ScaleEstimate(float(s[order][np.searchsorted(cw, 0.5 * cw[-1])]), "matches", int(w.sum()))
