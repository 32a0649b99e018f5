"""Ground-truth optical flow of the generated scene, from the analytic scene itself.

Each pixel's ray at time t0 hits a primitive at a point with local coordinates; the same material
point at t1 is that primitive's local-to-world map at t1 applied to them (rigid for boxes and
planes; for ellipsoids the point keeps its position on the unit sphere, so a pulsating blob's
surface stretches with its radii). Projected into the camera at t1, it gives the flow. A pixel is
valid when the point is still visible at t1 (its depth matches the t1 depth within 1%).
"""

from __future__ import annotations

import numpy as np

from modgs_ns.synth import scene as S
from modgs_ns.synth.raycast import Ellipsoid


def _hits(primitives, o, d):
    n = len(o)
    best_t = np.full(n, np.inf)
    which = np.full(n, -1)
    local = np.zeros((n, 3))
    for k, prim in enumerate(primitives):
        t, _, loc = prim.intersect(o, d)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        which[closer] = k
        local[closer] = loc[closer]
    return best_t, which, local


def _to_world(prim, local: np.ndarray, prim_t0) -> np.ndarray:
    if isinstance(prim, Ellipsoid):
        local = local / np.asarray(prim_t0.radii) * np.asarray(prim.radii)
        return local @ prim.rotation.T + prim.center
    if hasattr(prim, "rotation"):  # Box
        return local @ prim.rotation.T + prim.center
    return None  # Plane: static


def ground_truth_flow(params: S.SceneParams, t0: float, t1: float, c2w0, c2w1, K, width: int, height: int):
    """(flow [H,W,2] in pixels from the frame at t0 to the frame at t1, valid [H,W])."""
    prims0, prims1 = S.scene_at(t0, params), S.scene_at(t1, params)
    o, d, zfac = S.camera_rays(c2w0, K, width, height, 1)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    t, which, local = _hits(prims0, o, d)
    hit = np.isfinite(t)
    world = o + np.where(hit, t, 0.0)[:, None] * d
    for k, (p0, p1) in enumerate(zip(prims0, prims1)):
        m = which == k
        moved = _to_world(p1, local[m], p0)
        if moved is not None:
            world[m] = moved
    # Project into the camera at t1 (OpenGL c2w -> OpenCV pixel coordinates, centres at +0.5).
    R, c = np.asarray(c2w1)[:3, :3], np.asarray(c2w1)[:3, 3]
    cam = (world - c) @ R
    z = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * cam[:, 0] / z + K[0, 2]
        v = -K[1, 1] * cam[:, 1] / z + K[1, 2]
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    flow = np.stack([u.reshape(height, width) - xs, v.reshape(height, width) - ys], -1)
    # Visible at t1: the t1 depth at the landing pixel agrees with the point's depth.
    o1, d1, zf1 = S.camera_rays(c2w1, K, width, height, 1)
    t_1, _, _ = _hits(prims1, o1.reshape(-1, 3), d1.reshape(-1, 3))
    depth1 = (t_1 * zf1.reshape(-1)).reshape(height, width)
    iu = np.clip(np.floor(np.nan_to_num(u)).astype(int), 0, width - 1)
    iv = np.clip(np.floor(np.nan_to_num(v)).astype(int), 0, height - 1)
    inside = hit & (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    visible = inside & (np.abs(depth1[iv, iu] - z) < 0.01 * z)
    return flow.astype(np.float32), visible.reshape(height, width)
