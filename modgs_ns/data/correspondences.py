"""Stage-1 training pairs and canonical-initialization points, read from the scene's caches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from modgs_ns.scene.caches import UV_INVALID, DepthCache, PairsCache
from modgs_ns.scene.geometry import project, unproject


class Correspondences:
    """Point maps of the aligned depth and the cached 2D correspondences between frames.

    A fixed `heldout_fraction` of each frame's source pixels is kept out of training (MoDGS holds
    out 1%) to measure the stage-1 fit on pairs it never saw (`heldout_errors`).
    """

    def __init__(self, depth: DepthCache, pairs: PairsCache, heldout_fraction: float = 0.01, seed: int = 0):
        T, H, W = depth.shape
        self.depth, self.times = depth.depth, depth.times.astype(np.float32)
        self.K, self.c2w = depth.K, depth.c2w
        self.names, self.valid = depth.names, depth.valid
        self.moving = moving = depth.moving  # [T, H, W] bool: pixels that move in their frame
        self.src = torch.from_numpy(pairs.src.astype(np.int64))
        self.tgt = torch.from_numpy(pairs.tgt)
        self.offsets = pairs.offsets.tolist()
        self.counts = pairs.counts
        self.uv_scale = pairs.uv_scale
        self.T, self.H, self.W = T, H, W
        self.points = torch.from_numpy(np.stack([depth.points(i) for i in range(T)]))
        # [T, M]: the source pixel moves in its frame (stage 1 gives these their share of the pairs).
        self.src_moving = torch.from_numpy(np.stack([moving[i].reshape(-1)[self.src[i].numpy()] for i in range(T)]))
        rng = np.random.default_rng([seed, 99])
        self.heldout = torch.from_numpy(rng.random(self.src.shape) < heldout_fraction)
        self.weights = self._target_weights()

    def _target_weights(self) -> np.ndarray:
        """[T, len(offsets)]: P(target) proportional to valid-pair counts; 0.1 for |i - j| <= 1 (MoDGS §3.2)."""
        w = np.zeros((self.T, len(self.offsets)))
        for i in range(self.T):
            for k, o in enumerate(self.offsets):
                j = i + o
                if 0 <= j < self.T:
                    w[i, k] = self.counts[i, j]
            if w[i].sum() <= 0:
                continue
            w[i] /= w[i].sum()
            for k, o in enumerate(self.offsets):
                if abs(o) <= 1 and 0 <= i + o < self.T:
                    w[i, k] = 0.1
            w[i] /= w[i].sum()
        return w

    def bbox(self) -> tuple[Tensor, Tensor]:
        pts = self.points[torch.from_numpy(self.valid)]
        return pts.min(0).values, pts.max(0).values

    def sample(self, step: int, max_points: int, seed: int = 0, moving_fraction: float = 0.0) -> dict:
        """One source frame (a shuffled epoch over frames, fixed by `step`) and one target frame.

        With `max_points` > 0, up to `moving_fraction` of the points come from moving source pixels
        (all of them when there are fewer), the rest from the others; 0 = uniform, as MoDGS."""
        epoch, pos = divmod(step, self.T)
        i = int(np.random.default_rng([seed, epoch]).permutation(self.T)[pos])
        rng = np.random.default_rng([seed, step, 1])
        if self.weights[i].sum() <= 0:
            return {}
        k = int(rng.choice(len(self.offsets), p=self.weights[i]))
        j = i + self.offsets[k]
        uv = self.tgt[i, k]
        usable = (uv[:, 0] != UV_INVALID) & ~self.heldout[i]
        ok = torch.nonzero(usable).squeeze(-1)
        if len(ok) == 0:
            return {}
        if max_points > 0 and len(ok) > max_points:
            ok = _balanced_subset(ok, self.src_moving[i, ok], max_points, moving_fraction, rng)
        x = self.points[i].reshape(-1, 3)[self.src[i, ok]]
        y = self.bilinear_points(j, uv[ok].float() / self.uv_scale)
        return {
            "x": x,
            "y": y,
            "t_src": float(self.times[i]),
            "t_tgt": float(self.times[j]),
            "src_frame": i,
            "tgt_frame": j,
        }

    def heldout_pairs(self):
        """Every held-out (source, target) pair: yields (i, j, x [N,3], y [N,3], moving [N] bool)."""
        for i in range(self.T):
            for k, o in enumerate(self.offsets):
                j = i + o
                if not 0 <= j < self.T:
                    continue
                uv = self.tgt[i, k]
                ok = torch.nonzero((uv[:, 0] != UV_INVALID) & self.heldout[i]).squeeze(-1)
                if len(ok):
                    yield (
                        i,
                        j,
                        self.points[i].reshape(-1, 3)[self.src[i, ok]],
                        self.bilinear_points(j, uv[ok].float() / self.uv_scale),
                        self.src_moving[i, ok],
                    )

    def project(self, points: Tensor, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [N,2] (centres at integers, as the flow's) and z-depth [N] of world points
        [N,3] in frame j's camera."""
        return project(points.detach().double().cpu().numpy(), self.K, self.c2w[j])

    @torch.no_grad()
    def heldout_errors(self, warp) -> dict:
        """Fit of `warp(x, t_src, t_tgt) -> y` on the held-out pairs, split into moving and static
        sources: mean squared 3D error (world units), median 3D error, median pixel error after
        projection into the target camera; the same for the identity (no motion) as the reference."""
        acc: dict = {}
        for i, j, x, y, moving in self.heldout_pairs():
            pred = warp(x, float(self.times[i]), float(self.times[j]))
            uv_y = self.project(y, j)[0]
            for name, p in (("model", pred), ("identity", x)):
                e3 = (p.cpu() - y).norm(dim=-1).double()
                epx = torch.from_numpy(np.linalg.norm(self.project(p, j)[0] - uv_y, axis=-1))
                for region, m in (("moving", moving), ("static", ~moving)):
                    acc.setdefault((name, region), []).append((e3[m], epx[m]))
        out = {}
        for (name, region), parts in acc.items():
            e3, epx = torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
            if len(e3):
                out[(name, region)] = {
                    "n": len(e3),
                    "mse": float((e3**2).mean()),
                    "median": float(e3.median()),
                    "median_px": float(epx.median()),
                }
        return out

    def bilinear_points(self, j: int, uv: Tensor) -> Tensor:
        """Point map of frame j at float pixel-index coordinates (all 4 neighbours are valid)."""
        P = self.points[j]
        x0 = uv[:, 0].floor().clamp(0, self.W - 1)
        y0 = uv[:, 1].floor().clamp(0, self.H - 1)
        fx, fy = (uv[:, 0] - x0)[:, None], (uv[:, 1] - y0)[:, None]
        x0, y0 = x0.long(), y0.long()
        x1, y1 = (x0 + 1).clamp(max=self.W - 1), (y0 + 1).clamp(max=self.H - 1)
        return (
            P[y0, x0] * (1 - fx) * (1 - fy)
            + P[y0, x1] * fx * (1 - fy)
            + P[y1, x0] * (1 - fx) * fy
            + P[y1, x1] * fx * fy
        )

    @classmethod
    def load(cls, root: Path, heldout_fraction: float = 0.01, seed: int = 0) -> "Correspondences":
        """From the scene's caches (`scene.caches`)."""
        return cls(DepthCache.load(root), PairsCache.load(root), heldout_fraction, seed)

    def frame_points(self, i: int, image: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """Valid (non-edge) points of frame i, their colours in [0, 1] when its [H,W,3] uint8 image is
        given (else None), and whether each moves."""
        m = torch.from_numpy(self.valid[i])
        pts, moving = self.points[i][m], torch.from_numpy(self.moving[i])[m]
        if image is None:
            return pts, None, moving
        rgb = image[..., :3][m]
        return pts, rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float(), moving

    def frame_normals(self, i: int, smoothing: int = 2) -> Tensor:
        """[N,3] unit surface normals of frame i's depth map at its valid points (frame_points' order).
        The depth is first averaged over (2 smoothing + 1)^2 valid pixels: per-pixel normals of a
        monocular prior are mostly noise (hard benchmark scene: median 45 degrees off the true normal
        unsmoothed, 14-18 degrees with smoothing 2)."""
        valid = self.valid[i].astype(np.float32)
        k = (2 * smoothing + 1, 2 * smoothing + 1)
        depth = cv2.blur(self.depth[i] * valid, k) / np.maximum(cv2.blur(valid, k), 1e-6)
        depth = np.where(self.valid[i], depth, self.depth[i])
        n = point_map_normals(unproject(depth, self.K, self.c2w[i]), np.asarray(self.c2w[i])[:3, 3])
        return torch.from_numpy(n[self.valid[i]])


def point_map_normals(points: np.ndarray, camera_centre: np.ndarray) -> np.ndarray:
    """Unit surface normals [H,W,3] of a point map [H,W,3] (central differences, one-sided at the
    border), turned towards the camera centre [3]."""
    du, dv = np.gradient(points.astype(np.float64), axis=1), np.gradient(points.astype(np.float64), axis=0)
    n = np.cross(du, dv)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    facing = np.sum(n * (camera_centre - points), axis=-1, keepdims=True) >= 0
    return np.where(facing, n, -n).astype(np.float32)


def _balanced_subset(idx: Tensor, moving: Tensor, n: int, moving_fraction: float, rng: np.random.Generator) -> Tensor:
    """n of `idx`, of which min(#moving, n * moving_fraction) moving ones, the rest uniform among the others."""

    def pick(pool: Tensor, m: int) -> Tensor:
        return pool if m >= len(pool) else pool[torch.from_numpy(rng.choice(len(pool), size=m, replace=False))]

    if moving_fraction <= 0:
        return pick(idx, n)
    mov, still = idx[moving], idx[~moving]
    take = pick(mov, int(round(n * moving_fraction)))
    return torch.cat([take, pick(still, n - len(take))])
