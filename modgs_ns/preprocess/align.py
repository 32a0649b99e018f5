"""Making a per-frame relative depth prior temporally consistent (method reference §2.5).

- static mask: pixels whose flow to and from every neighbour frame stays below 0.8 px
  (valid for a static camera, the released MoDGS setting);
- per-frame scale and shift fitted on static pixels against a reference frame. MoDGS fits the
  shift from a normal prior (GeoWizard) and only the scale on static pixels; without a normal
  prior we fit both on static pixels (documented deviation);
- non-edge mask: drop the pixels with the largest 3D gradient (depth discontinuities), 10%.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from modgs_ns.preprocess.flow import sample_bilinear
from modgs_ns.scene.geometry import project, unproject, w2c_cv


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


def fit_order_preserving(src: np.ndarray, dst: np.ndarray) -> tuple[float, float]:
    """`fit_scale_shift`, or when it inverts the depth order (a <= 0), the ratio of medians."""
    a, b = fit_scale_shift(src, dst)
    if a <= 0:
        a, b = float(np.median(dst) / max(np.median(src), 1e-8)), 0.0
    return a, b


def align_priors(
    priors: np.ndarray, valid: np.ndarray, static: np.ndarray, reference: int, min_fraction: float = 0.01
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        a[i], b[i] = fit_order_preserving(priors[i][m], ref[m])
    aligned = priors * a[:, None, None] + b[:, None, None]
    return aligned.astype(np.float32), a, b


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


# ----------------------------------------------------------------------------- moving camera


def camera_flow(depth: np.ndarray, K: np.ndarray, c2w_i: np.ndarray, c2w_j: np.ndarray) -> np.ndarray:
    """Flow [H,W,2] that the camera's own motion from frame i to frame j gives a static scene of
    z-depth `depth` (frame i)."""
    h, w = depth.shape
    uv, _ = project(unproject(depth, K, c2w_i).astype(np.float64), K, c2w_j)
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return (uv - np.stack([xs, ys], -1)).astype(np.float32)


def residual_flow(flows: dict, depth: np.ndarray, K: np.ndarray, c2ws: np.ndarray, i: int, j: int) -> np.ndarray:
    """|observed flow i -> j minus the flow the camera's own motion gives| [H,W], pixels (depth of frame i)."""
    return np.linalg.norm(flows[(i, j)] - camera_flow(depth[i], K, c2ws[i], c2ws[j]), axis=-1)


def static_mask_moving(
    flows: dict, depth: np.ndarray, K: np.ndarray, c2ws: np.ndarray, threshold: float = 0.8
) -> np.ndarray:
    """Per-frame static mask [T,H,W] for a moving camera: the observed flow to each neighbour frame
    minus the flow the camera motion alone gives (from the aligned depth and the poses) stays below
    `threshold` pixels. With a static camera this is exactly the flow-magnitude test."""
    T = len(depth)
    out = np.ones(depth.shape, dtype=bool)
    for i in range(T):
        for j in (i - 1, i + 1):
            if 0 <= j < T and (i, j) in flows:
                out[i] &= residual_flow(flows, depth, K, c2ws, i, j) < threshold
    return out


def moving_mask(
    flows: dict,
    flow_ok: dict,
    depth: np.ndarray,
    K: np.ndarray,
    c2ws: np.ndarray,
    threshold: float = 0.8,
    offsets: tuple[int, ...] = (),
) -> np.ndarray:
    """Per-frame moving pixels [T,H,W]: those `static_mask_moving` rejects (flow to a neighbour frame
    beyond the camera's own by `threshold`), and, for each o in `offsets`, those whose cycle-consistent
    flow to frame i +- o departs from the camera's own by more than threshold * sqrt(o). Motion slower
    than `threshold` px per frame (an object turning in place, a textureless interior) accumulates over
    o frames while flow noise grows more slowly; cycle-checked pairs only, since a long-range flow that
    fails its check says nothing about the pixel."""
    out = ~static_mask_moving(flows, depth, K, c2ws, threshold)
    T = len(depth)
    for i in range(T):
        for o in offsets:
            for j in (i - o, i + o):
                if 0 <= j < T and (i, j) in flows:
                    out[i] |= flow_ok[(i, j)] & (residual_flow(flows, depth, K, c2ws, i, j) >= threshold * np.sqrt(o))
    return out


def triangulate_flow(
    flow: np.ndarray,
    ok: np.ndarray,
    K: np.ndarray,
    c2w_i: np.ndarray,
    c2w_j: np.ndarray,
    step: int = 3,
    max_error: float = 1.0,
    min_angle_deg: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse depth of frame i from flow correspondences to frame j and the two poses.

    Returns (flat pixel indices in frame i, z-depth in frame i, in pose units). Kept: pixels on a
    `step` grid where `ok`, in front of both cameras, reprojection error below `max_error` px in
    both views and a triangulation angle of at least `min_angle_deg` (below it depth is noise).
    Moving points violate the epipolar geometry and mostly fail the reprojection test."""
    h, w = ok.shape
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    sel = ok[ys, xs]
    xs, ys = xs[sel].astype(np.float64), ys[sel].astype(np.float64)
    if len(xs) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    f = flow[ys.astype(int), xs.astype(int)].astype(np.float64)
    pa = np.stack([xs + 0.5, ys + 0.5])  # pixel centres in the K convention
    pb = np.stack([xs + f[:, 0] + 0.5, ys + f[:, 1] + 0.5])
    Pi, Pj = K @ w2c_cv(c2w_i)[:3], K @ w2c_cv(c2w_j)[:3]
    X = cv2.triangulatePoints(Pi, Pj, pa, pb)
    X = (X[:3] / np.where(np.abs(X[3]) > 1e-12, X[3], 1e-12)).T
    keep = np.ones(len(X), dtype=bool)
    for c2w, p in ((c2w_i, pa), (c2w_j, pb)):
        uv, z = project(X, K, c2w)
        keep &= (z > 0) & (np.linalg.norm(uv + 0.5 - p.T, axis=1) < max_error)
    ci, cj = c2w_i[:3, 3], c2w_j[:3, 3]
    ra, rb = X - ci, X - cj
    cos = (ra * rb).sum(1) / np.maximum(np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-12)
    keep &= np.degrees(np.arccos(np.clip(cos, -1, 1))) >= min_angle_deg
    _, z = project(X[keep], K, c2w_i)
    return (ys[keep].astype(np.int64) * w + xs[keep].astype(np.int64)), z


def align_to_anchors(
    priors: np.ndarray, valid: np.ndarray, anchors: list, min_points: int = 50, trim: float = 0.2, metric: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aligned depth [T,H,W] = a_i prior_i + b_i fitted to each frame's sparse anchor depths
    (`anchors[i]` = (flat pixel indices, depths), e.g. from `triangulate_flow`), so every frame is in
    the poses' units and consistent across frames. Frames with fewer than `min_points` anchors take
    the parameters of the nearest frame that has enough. Returns depth, a, b, anchors used per frame.

    `metric`: the depth is already metric (a sensor, a metric model), so only one scale (pose units
    per metre) is unknown: each frame's scale is fitted without a shift and all frames take their
    median (`a` keeps the per-frame fits, whose spread checks poses against depth)."""
    T = len(priors)
    a, b = np.full(T, np.nan), np.full(T, np.nan)
    used = np.zeros(T, dtype=np.int64)
    inverted = 0
    for i, (idx, z) in enumerate(anchors):
        pv = priors[i].reshape(-1)[idx]
        m = valid[i].reshape(-1)[idx] & np.isfinite(pv) & np.isfinite(z)
        if m.sum() < min_points:
            continue
        if metric:
            r = z[m] / np.maximum(pv[m], 1e-12)
            ai, bi = float(np.median(r)), 0.0
        else:
            ai, bi = fit_scale_shift(pv[m], z[m], trim=trim)
        if ai > 0:
            a[i], b[i], used[i] = ai, bi, int(m.sum())
        else:
            inverted += 1
    good = np.flatnonzero(np.isfinite(a))
    if len(good) == 0:
        hint = (
            " (the prior falls as depth grows in most frames: is it disparity? --depth-kind disparity)"
            if inverted > T / 2
            else ""
        )
        raise ValueError(
            "no frame has enough triangulated static points to align its depth to the poses "
            "(too little camera translation for the noise in flow and poses)" + hint
        )
    for i in range(T):
        if not np.isfinite(a[i]):
            k = good[np.argmin(np.abs(good - i))]
            a[i], b[i] = a[k], b[k]
    if metric:
        aligned = priors * float(np.median(a[used > 0]))
        return aligned.astype(np.float32), a, b, used
    aligned = priors * a[:, None, None] + b[:, None, None]
    return aligned.astype(np.float32), a, b, used


def align_chain(
    priors: np.ndarray,
    valid: np.ndarray,
    static: np.ndarray,
    flows: dict,
    K: np.ndarray,
    c2ws: np.ndarray,
    reference: int,
    disparity: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alignment for a camera that only rotates (no baseline to triangulate): the reference frame
    keeps its prior; each other frame, outwards from it, is fitted to its already aligned neighbour
    at flow-corresponding static pixels, with the depth carried through the rotation
    (z_j = (R_ji K^-1 p)_z z_i). `disparity`: priors are disparity, fitted as such (1/z_i = rz / z_j;
    a global disparity shift, unknown here, is left out of the chain)."""
    T, h, w = priors.shape
    a, b = np.ones(T), np.zeros(T)
    aligned = priors.astype(np.float64).copy()
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    ray = np.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], (ys + 0.5 - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    order = list(range(reference + 1, T)) + list(range(reference - 1, -1, -1))
    for i in order:
        j = i - 1 if i > reference else i + 1
        qx, qy = xs + flows[(i, j)][..., 0], ys + flows[(i, j)][..., 1]
        R_ji = (w2c_cv(c2ws[j]) @ np.linalg.inv(w2c_cv(c2ws[i])))[:3, :3]
        rz = (ray @ R_ji.T)[..., 2]
        dj = sample_bilinear(aligned[j].astype(np.float32)[..., None], qx, qy).reshape(h, w)
        vj = sample_bilinear(valid[j].astype(np.float32)[..., None], qx, qy).reshape(h, w)
        seen = (vj > 1 - 1e-5) & (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1) & np.isfinite(dj)
        m = static[i] & valid[i] & seen
        if m.sum() < 10:
            m = valid[i] & seen
        a[i], b[i] = fit_order_preserving(priors[i][m], (dj * rz if disparity else dj / rz)[m])
        aligned[i] = priors[i] * a[i] + b[i]
    return aligned.astype(np.float32), a, b


# ----------------------------------------------------------------------------- disparity priors
def disparity_to_depth(disp: np.ndarray, valid: np.ndarray, far_ratio: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """(depth, valid) of aligned disparity [...,H,W]: depth = 1 / disparity where it is positive and not
    farther than far_ratio x the frame's median depth; elsewhere (sky, far background, a shift that went
    past zero) invalid with depth 0, never clamped into a wall."""
    disp = np.asarray(disp, dtype=np.float64)
    ok = valid & np.isfinite(disp) & (disp > 0)
    flat_d, flat_ok = disp.reshape(-1, *disp.shape[-2:]), ok.reshape(-1, *disp.shape[-2:])
    for d, m in zip(flat_d, flat_ok):
        if m.any():
            m &= d > np.median(d[m]) / far_ratio
    depth = np.where(ok, 1.0 / np.where(ok, disp, 1.0), 0.0)
    return depth.astype(np.float32), ok


@dataclass
class DisparityShift:
    """The global disparity shift s (depth = 1 / (disparity + s)) that an affine-invariant disparity prior
    leaves unknown for a static camera, as estimated from the angles between the dominant planes."""

    shift: float
    confident: bool
    detail: str
    planes: int = 0


def _plane_ransac(u, v, d, tol, iters, rng):
    """Best plane d = alpha u + beta v + gamma (an image-space affine map) by RANSAC: (coef, inlier mask)."""
    A = np.stack([u, v, np.ones_like(u)], -1)
    best, best_n = None, 0
    for _ in range(iters):
        pick = rng.choice(len(d), 3, replace=False)
        try:
            coef = np.linalg.solve(A[pick], d[pick])
        except np.linalg.LinAlgError:
            continue
        n = int((np.abs(A @ coef - d) < tol).sum())
        if n > best_n:
            best, best_n = coef, n
    if best is None:
        return None, np.zeros(len(d), bool)
    inl = np.abs(A @ best - d) < tol
    coef, *_ = np.linalg.lstsq(A[inl], d[inl], rcond=None)
    return coef, np.abs(A @ coef - d) < tol


def disparity_shift_from_planes(
    disp: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
    max_planes: int = 3,
    min_fraction: float = 0.08,
    tol: float = 0.06,
    iters: int = 400,
    seed: int = 0,
) -> DisparityShift:
    """Estimate s from one frame's aligned disparity [H,W], assuming its two largest planes are orthogonal
    (a room's floor and wall, as MoDGS's normal prior in effect assumes).

    A plane n . X = c seen by the camera has disparity d = (n . K^-1 [u, v, 1]) / c, affine in the pixel
    (u, v), and a disparity shift keeps it affine: planes stay planes, only their angles change. With
    the fitted d = alpha u + beta v + gamma, the plane's normal is (alpha fx, beta fy, gamma + alpha cx +
    beta cy + s) up to scale, so orthogonality of two planes is a quadratic in s, solved in closed form;
    a third plane, when there is one, must then be parallel or orthogonal to both (within 10 degrees).
    `tol` is relative to the median disparity."""
    h, w = disp.shape
    ys, xs = np.nonzero(valid & np.isfinite(disp))
    if len(xs) < 100:
        return DisparityShift(0.0, False, "too few valid pixels")
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(xs), min(len(xs), 20000), replace=False)
    u, v, d = xs[keep] + 0.5, ys[keep] + 0.5, disp[ys[keep], xs[keep]].astype(np.float64)
    scale = float(np.median(np.abs(d))) or 1.0
    planes, left = [], np.ones(len(d), bool)
    for _ in range(max_planes):
        if left.sum() < min_fraction * len(d):
            break
        coef, inl = _plane_ransac(u[left], v[left], d[left], tol * scale, iters, rng)
        if coef is None or inl.sum() < min_fraction * len(d):
            break
        al, be, ga = coef
        planes.append((al * K[0, 0], be * K[1, 1], ga + al * K[0, 2] + be * K[1, 2], int(inl.sum())))
        idx = np.flatnonzero(left)
        left[idx[inl]] = False
    if len(planes) < 2:
        return DisparityShift(0.0, False, f"{len(planes)} dominant plane(s): need two", len(planes))

    def deviation(s: float) -> float:
        """Largest departure (degrees) from parallel-or-orthogonal among the planes that keep a direction
        at shift s (a plane at infinity, e.g. the sky, has none once s is right)."""
        ns = [np.array([a, b, e + s]) for a, b, e, _ in planes]
        scale_n = max(np.linalg.norm(n) for n in ns)
        ns = [n / np.linalg.norm(n) for n in ns if np.linalg.norm(n) > 0.05 * scale_n]
        if len(ns) < 2:
            return np.inf
        angles = [np.degrees(np.arccos(np.clip(abs(p @ q), 0, 1))) for i, p in enumerate(ns) for q in ns[i + 1 :]]
        return max(min(ang, 90 - ang) for ang in angles)

    candidates = []
    for i in range(len(planes)):
        for j in range(i + 1, len(planes)):
            (a1, b1, e1, _), (a2, b2, e2, _) = planes[i], planes[j]
            # (a1 a2 + b1 b2) + (e1 + s)(e2 + s) = 0
            for r in np.roots([1.0, e1 + e2, e1 * e2 + a1 * a2 + b1 * b2]):
                # Real, and leaving (almost) every pixel in front of the camera or at infinity (sky).
                if abs(r.imag) < 1e-12 and np.mean(d + r.real > -tol * scale) > 0.98:
                    candidates.append(float(r.real))
    if not candidates:
        return DisparityShift(0.0, False, "no shift makes two dominant planes orthogonal", len(planes))
    s = min(candidates, key=lambda c: (round(deviation(c), 1), abs(c)))
    dev = deviation(s)
    detail = f"{len(planes)} dominant planes, at most {dev:.0f} degrees from parallel or orthogonal"
    return DisparityShift(s, bool(dev < 10), detail, len(planes))
