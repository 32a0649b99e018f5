"""Depth priors behind one interface: `backend(rgb_uint8, k) -> prior [H,W] float32` for the k-th
kept frame, and `backend.kind` (scene/format.py PRIOR_KINDS: "relative_depth", "metric_depth" or
"disparity"). Priors are stored in their own space; the caches align them there (pairs.py).

- TransformersDepth: any `transformers` depth-estimation model from a local directory (Depth
  Anything V2, DPT, ...). No network: weights must already be on disk.
- FolderDepth: precomputed maps (.npy, or 16-bit PNG times a scale), including sensor depth
  (RealSense / LiDAR: 16-bit PNG in millimetres, `--depth-scale 0.001`, metric).
Zeros are "no depth" (depth kinds); non-finite values are an error (a broken file, not a measurement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from modgs_ns.scene.errors import PreprocessError

DEPTH_EXTS = (".npy", ".png", ".tif", ".tiff")


class TransformersDepth:
    """A `transformers` depth-estimation model from a local folder (config.json, weights,
    preprocessor_config.json), e.g. depth-anything/Depth-Anything-V2-Small-hf downloaded elsewhere."""

    def __init__(self, model_dir: Path, device: str = "cpu"):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise PreprocessError(
                f"depth model folder {model_dir} has no config.json: download a transformers depth model (e.g. "
                "`huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf --local-dir DIR`) on a "
                "machine with internet and pass --depth-model DIR"
            )
        try:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError:
            raise PreprocessError(
                "--depth-model needs the transformers package: pip install 'modgs-ns[depth]'"
            ) from None
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
            self.model = (
                AutoModelForDepthEstimation.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
            )
        except (OSError, ValueError) as err:
            raise PreprocessError(
                f"cannot load the depth model in {model_dir}: {' '.join(str(err).split())[:200]}"
            ) from None
        self.torch, self.device = torch, device
        # Depth Anything "relative", MiDaS and DPT predict affine-invariant disparity, kept as it is
        # (aligned in disparity space by the caches); "metric" models predict depth.
        est = getattr(self.model.config, "depth_estimation_type", None)
        self.kind = "metric_depth" if est == "metric" else "disparity"

    def __call__(self, rgb: np.ndarray, k: int) -> np.ndarray:
        torch = self.torch
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.no_grad():
            pred = self.model(**inputs).predicted_depth  # [1, h, w]
        pred = torch.nn.functional.interpolate(
            pred[:, None].float(), size=rgb.shape[:2], mode="bicubic", align_corners=False
        )
        out = pred[0, 0].cpu().numpy().astype(np.float32)
        return out if self.kind == "disparity" else np.maximum(out, 0)


class FolderDepth:
    """One file per frame, sorted by name: either one per source frame (indexed by the frame's
    source index, so --stride works) or one per kept frame (in order)."""

    def __init__(
        self,
        folder: Path,
        source_index: list,
        n_source: Optional[int],
        size: tuple,
        source_size: tuple,
        scale: float = 1.0,
        kind: str = "relative_depth",
    ):
        folder = Path(folder)
        if not folder.is_dir():
            raise PreprocessError(f"depth folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in DEPTH_EXTS)
        if not files:
            raise PreprocessError(f"no depth files ({', '.join(DEPTH_EXTS)}) in {folder}")
        n_kept = len(source_index)
        if n_source is not None and len(files) == n_source and len(files) != n_kept:
            self.files = [files[i] for i in source_index]
        elif len(files) >= n_kept and (n_source is None or len(files) == n_kept):
            self.files = files[:n_kept]
        else:
            expect = f"{n_kept} (one per kept frame)" + (f" or {n_source} (one per source frame)" if n_source else "")
            raise PreprocessError(f"depth folder {folder} has {len(files)} files, expected {expect}")
        self.size, self.source_size, self.scale, self.kind = size, source_size, scale, kind

    def __call__(self, rgb: np.ndarray, k: int) -> np.ndarray:
        f = self.files[k]
        if f.suffix == ".npy":
            try:
                d = np.load(f)
            except (OSError, ValueError, EOFError) as err:  # EOFError: an empty (0-byte) file
                raise PreprocessError(f"cannot read depth file {f} ({err})") from None
        else:
            d = cv2.imread(str(f), cv2.IMREAD_ANYDEPTH)
            if d is None:
                raise PreprocessError(f"cannot read depth file {f}")
        d = np.squeeze(np.asarray(d)).astype(np.float32) * self.scale
        if d.ndim != 2:
            raise PreprocessError(f"depth file {f} has shape {d.shape}, expected HxW")
        if not np.isfinite(d).all():
            raise PreprocessError(f"depth file {f} contains non-finite values (NaN or inf)")
        shape = (d.shape[1], d.shape[0])
        if shape not in (self.size, self.source_size):
            raise PreprocessError(
                f"depth file {f} is {shape[0]}x{shape[1]}, its frame is {self.source_size[0]}x{self.source_size[1]}"
                + (f" (resized to {self.size[0]}x{self.size[1]})" if self.size != self.source_size else "")
            )
        if shape != self.size:
            d = cv2.resize(d, self.size, interpolation=cv2.INTER_NEAREST)  # never blend across depth edges
        return d if self.kind == "disparity" else np.maximum(d, 0.0)


def register_depth(
    depth: np.ndarray, K_depth: np.ndarray, K_color: np.ndarray, color_from_depth: np.ndarray, color_size: tuple
) -> np.ndarray:
    """A depth sensor's z-depth map [H,W] re-expressed in the colour camera (RGB-D cameras such as
    RealSense have two, a few cm apart): each valid depth pixel is lifted with K_depth, moved by the
    4x4 `color_from_depth` (OpenCV axes), projected with K_color, and the nearest surface kept per
    colour pixel. Returns [h,w] (color_size = (w, h)); 0 where no depth landed."""
    h, w = depth.shape
    ys, xs = np.nonzero(depth > 0)
    z = depth[ys, xs].astype(np.float64)
    x = (xs + 0.5 - K_depth[0, 2]) / K_depth[0, 0] * z
    y = (ys + 0.5 - K_depth[1, 2]) / K_depth[1, 1] * z
    p = np.stack([x, y, z], 1) @ color_from_depth[:3, :3].T + color_from_depth[:3, 3]
    W, H = color_size
    out = np.full(H * W, np.inf)
    front = p[:, 2] > 0
    p = p[front]
    u = np.floor(K_color[0, 0] * p[:, 0] / p[:, 2] + K_color[0, 2]).astype(np.int64)
    v = np.floor(K_color[1, 1] * p[:, 1] / p[:, 2] + K_color[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    np.minimum.at(out, v[inside] * W + u[inside], p[inside, 2])  # z-buffer: nearest wins
    out = out.reshape(H, W)
    # A depth camera with a wider view than the colour one leaves empty colour pixels between the
    # splats: each takes the nearest of its splatted 3x3 neighbours (larger holes stay empty).
    near = cv2.erode(
        np.where(np.isfinite(out), out, np.inf).astype(np.float32),
        np.ones((3, 3), np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=np.inf,
    )
    out = np.where(np.isfinite(out), out, near)
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)
