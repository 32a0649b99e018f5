"""Camera-trajectory errors for the pose tests and scripts/benchmark_poses.py (not part of the package)."""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising sum |s R src + t - dst|^2 (Umeyama 1991), points [N,3]."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        S[2, 2] = -1
    R = u @ S @ vt
    var = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ S) / var) if var > 0 else 1.0
    return s, R, mu_d - s * R @ mu_s


def trajectory_errors(est_c2w: np.ndarray, gt_c2w: np.ndarray) -> dict:
    """ATE: RMSE of the camera centres after a similarity alignment (GT units; for a pure rotation,
    with no spread of centres, after a translation only). Rotation error: mean angle (degrees)
    after the one rotation that best aligns all orientations (the centres of a short arc do not pin
    the rotation about the arc's chord down, the orientations do)."""
    ce, cg = est_c2w[:, :3, 3], gt_c2w[:, :3, 3]
    if np.linalg.norm(ce - ce.mean(0), axis=1).max() > 1e-9:
        s, R, t = umeyama(ce, cg)
        aligned = (s * ce @ R.T) + t
    else:
        s, aligned = 1.0, ce - ce.mean(0) + cg.mean(0)
    ate = float(np.sqrt(((aligned - cg) ** 2).sum(-1).mean()))
    # argmin_R sum |R E_i - G_i|_F: the orthogonal projection of sum G_i E_i^T.
    u, _, vt = np.linalg.svd(sum(g[:3, :3] @ e[:3, :3].T for e, g in zip(est_c2w, gt_c2w)))
    Ra = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    rot = []
    for e, g in zip(est_c2w, gt_c2w):
        dR = (Ra @ e[:3, :3]).T @ g[:3, :3]
        rot.append(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
    return {
        "ate": ate,
        "rotation_deg": float(np.mean(rot)),
        "scale": float(s),
        "path_length": float(np.linalg.norm(np.diff(cg, axis=0), axis=1).sum()),
    }
