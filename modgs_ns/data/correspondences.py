"""Stage-1 training pairs and canonical-initialization points, read from the scene's caches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from modgs_ns.preprocess.align import unproject
from modgs_ns.preprocess.pairs import DEPTH_CACHE, PAIRS_CACHE, UV_INVALID, load_valid_masks


class Correspondences:
    """Point maps of the aligned depth and the cached 2D correspondences between frames."""

    def __init__(self, root: Path):
        root = Path(root)
        with np.load(root / DEPTH_CACHE) as z:
            T, H, W = (int(v) for v in z["shape"])
            self.depth = z["depth"]
            self.times = z["times"].astype(np.float32)
            self.K, self.c2w = z["K"], z["c2w"]
        self.names, self.valid = load_valid_masks(root)
        with np.load(root / PAIRS_CACHE) as z:
            self.src = torch.from_numpy(z["src"].astype(np.int64))
            self.tgt = torch.from_numpy(z["tgt"])
            self.offsets = z["offsets"].tolist()
            self.counts = z["counts"]
            self.uv_scale = float(z["uv_scale"])
        self.root, self.T, self.H, self.W = root, T, H, W
        self.points = torch.from_numpy(np.stack([unproject(self.depth[i], self.K, self.c2w[i]) for i in range(T)]))
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

    def sample(self, step: int, max_points: int, seed: int = 0) -> dict:
        """One source frame (a shuffled epoch over frames, fixed by `step`) and one target frame."""
        epoch, pos = divmod(step, self.T)
        i = int(np.random.default_rng([seed, epoch]).permutation(self.T)[pos])
        rng = np.random.default_rng([seed, step, 1])
        if self.weights[i].sum() <= 0:
            return {}
        k = int(rng.choice(len(self.offsets), p=self.weights[i]))
        j = i + self.offsets[k]
        uv = self.tgt[i, k]
        ok = torch.nonzero(uv[:, 0] != UV_INVALID).squeeze(-1)
        if len(ok) == 0:
            return {}
        if max_points > 0 and len(ok) > max_points:
            ok = ok[torch.from_numpy(rng.choice(len(ok), size=max_points, replace=False))]
        x = self.points[i].reshape(-1, 3)[self.src[i, ok]]
        y = self.bilinear_points(j, uv[ok].float() / self.uv_scale)
        return {"x": x, "y": y, "t_src": float(self.times[i]), "t_tgt": float(self.times[j]), "src_frame": i, "tgt_frame": j}

    def bilinear_points(self, j: int, uv: Tensor) -> Tensor:
        """Point map of frame j at float pixel-index coordinates (all 4 neighbours are valid)."""
        P = self.points[j]
        x0 = uv[:, 0].floor().clamp(0, self.W - 1)
        y0 = uv[:, 1].floor().clamp(0, self.H - 1)
        fx, fy = (uv[:, 0] - x0)[:, None], (uv[:, 1] - y0)[:, None]
        x0, y0 = x0.long(), y0.long()
        x1, y1 = (x0 + 1).clamp(max=self.W - 1), (y0 + 1).clamp(max=self.H - 1)
        return (P[y0, x0] * (1 - fx) * (1 - fy) + P[y0, x1] * fx * (1 - fy) + P[y1, x0] * (1 - fx) * fy + P[y1, x1] * fx * fy)

    def frame_points(self, i: int, image_path: Path | None = None) -> tuple[Tensor, Tensor | None]:
        """Valid (non-edge) points of frame i and their colours in [0, 1] when the image is given."""
        m = torch.from_numpy(self.valid[i])
        pts = self.points[i][m]
        if image_path is None:
            return pts, None
        img = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return pts, torch.from_numpy(img[m.numpy()].astype(np.float32) / 255.0)
