"""Making a per-frame relative depth prior temporally consistent (method reference §2.5).

- static mask: pixels whose flow to and from every neighbour frame stays below 0.8 px
  (valid for a static camera, the released MoDGS setting);
- per-frame scale and shift fitted on static pixels against a reference frame. MoDGS fits the
  shift from a normal prior (GeoWizard) and only the scale on static pixels; without a normal
  prior we fit both on static pixels (documented deviation);
- non-edge mask: drop the pixels with the largest 3D gradient (depth discontinuities), 10%.
"""

from __future__ import annotations

import numpy as np


def static_mask(neighbour_flows: list[np.ndarray], threshold: float = 0.8) -> np.ndarray:
    """AND over all neighbour flows (both directions) of |flow| < threshold."""
    mask = np.ones(neighbour_flows[0].shape[:2], dtype=bool)
    for f in neighbour_flows:
        mask &= np.linalg.norm(f, axis=-1) < threshold
    return mask


def fit_scale_shift(src: np.ndarray, dst: np.ndarray, trim: float = 0.1) -> tuple[float, float]:
    """(a, b) minimising sum (a src + b - dst)^2, refitted once without the worst `trim` residuals."""
    A = np.stack([src, np.ones_like(src)], -1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, dst.astype(np.float64), rcond=None)
    if trim > 0 and len(src) > 20:
        res = np.abs(A @ coef - dst)
        keep = res <= np.quantile(res, 1 - trim)
        coef, *_ = np.linalg.lstsq(A[keep], dst[keep].astype(np.float64), rcond=None)
    return float(coef[0]), float(coef[1])


def align_priors(priors: np.ndarray, valid: np.ndarray, static: np.ndarray, reference: int,
                 min_fraction: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned depth [T,H,W] = a_i * prior_i + b_i so that static pixels agree with the reference.

    Falls back to all valid pixels when the static mask covers < min_fraction of the image.
    """
    T = len(priors)
    mask = static if static.mean() >= min_fraction else np.ones_like(static)
    a = np.ones(T)
    b = np.zeros(T)
    ref = priors[reference]
    for i in range(T):
        if i == reference:
            continue
        m = mask & valid[i] & valid[reference]
        if m.sum() < 10:
            continue
        ai, bi = fit_scale_shift(priors[i][m], ref[m])
        if ai <= 0:  # degenerate fit: keep the order, match medians
            ai, bi = float(np.median(ref[m]) / max(np.median(priors[i][m]), 1e-8)), 0.0
        a[i], b[i] = ai, bi
    aligned = priors * a[:, None, None] + b[:, None, None]
    return aligned.astype(np.float32), a, b


def unproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points [H,W,3] of a z-depth map; pixel centres at +0.5, nerfstudio (OpenGL) c2w."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    cam_gl = np.stack([x, -y, -depth], -1)  # OpenCV -> OpenGL camera axes
    return (cam_gl @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32)


def nonedge_mask(points: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    """False on the top (1 - quantile) of 3D gradient magnitude; border pixels stay valid."""
    g = np.zeros(points.shape[:2])
    c = points[1:-1, 1:-1]
    gx = (np.linalg.norm(c - points[1:-1, :-2], axis=-1) + np.linalg.norm(c - points[1:-1, 2:], axis=-1)) / 2
    gy = (np.linalg.norm(c - points[:-2, 1:-1], axis=-1) + np.linalg.norm(c - points[2:, 1:-1], axis=-1)) / 2
    g[1:-1, 1:-1] = np.hypot(gx, gy)
    thr = np.quantile(g[1:-1, 1:-1], quantile)
    mask = g <= thr
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask
