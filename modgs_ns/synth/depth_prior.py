"""A simulated monocular depth prior, distorted the way real ones are.

Networks such as Depth Anything V2 ("relative"), MiDaS and DPT predict *affine-invariant disparity*:
inverse depth with an unknown scale and shift per frame, a smooth low-frequency warp that drifts
over the video, noise, edges blurred across depth discontinuities, and near-zero disparity where
the scene is very far (sky). That is what MoDGS must cope with, so the generator reproduces each
effect from the ground-truth depth. `kind="depth"` keeps the older simulation (affine in depth),
for the ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np


@dataclass
class PriorDistortion:
    kind: Literal["disparity", "depth"] = "disparity"
    """disparity: affine in inverse depth per frame (what the real networks give); depth: affine in depth."""
    scale_log_std: float = 0.25
    """Per-frame scale = global * exp(N(0, std))."""
    shift_range: tuple[float, float] = (0.2, 1.5)
    """Kind depth: per-frame shift, in prior units."""
    disparity_shift_range: tuple[float, float] = (-0.02, 0.06)
    """Kind disparity: per-frame shift of the true disparity, 1/metres, before the frame's scale (the far
    wall of the default scene has 0.13): what per-frame alignment cannot see for a static camera."""
    warp_amplitude: float = 0.08
    """Relative low-frequency multiplicative warp."""
    noise_std: float = 0.01
    """Relative per-pixel noise."""
    edge_blur_sigma: float = 1.5
    """Pixels; softens depth edges."""


def frame_affine(num_frames: int, seed: int, cfg: PriorDistortion) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (scale, shift) of the prior (see simulate_prior); unknown to the method."""
    rng = np.random.default_rng([seed, 7])
    global_scale = rng.uniform(0.2, 0.6)
    scales = global_scale * np.exp(rng.normal(0.0, cfg.scale_log_std, num_frames))
    shifts = rng.uniform(*(cfg.disparity_shift_range if cfg.kind == "disparity" else cfg.shift_range), num_frames)
    return scales, shifts


def simulate_prior(
    depth: np.ndarray, frame: int, num_frames: int, scale: float, shift: float, seed: int, cfg: PriorDistortion
) -> np.ndarray:
    """Prior for one frame from its metric z-depth [H, W] (inf = sky: zero true disparity)."""
    h, w = depth.shape
    if cfg.kind == "disparity":
        d = np.where(np.isfinite(depth), 1.0 / np.where(np.isfinite(depth), depth, 1.0), 0.0)
    else:
        d = np.where(np.isfinite(depth), depth, np.nanmax(np.where(np.isfinite(depth), depth, np.nan)))
    rng = np.random.default_rng([seed, 11, frame])
    # Smooth warp whose pattern drifts slowly over the sequence (temporal inconsistency).
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = 2 * np.pi * frame / max(num_frames, 1)
    g = np.random.default_rng([seed, 13])
    f1, f2 = g.uniform(1.0, 2.5, 2)
    warp = np.sin(2 * np.pi * f1 * xx + phase + g.uniform(0, 6.3)) * np.cos(2 * np.pi * f2 * yy + 0.5 * phase)
    d = d * (1.0 + cfg.warp_amplitude * warp)
    if cfg.edge_blur_sigma > 0:
        d = cv2.GaussianBlur(d.astype(np.float32), (0, 0), cfg.edge_blur_sigma).astype(np.float64)
    d = d * (1.0 + cfg.noise_std * rng.standard_normal(d.shape))
    if cfg.kind == "disparity":
        return (scale * (d + shift)).astype(np.float32)
    return (scale * d + shift).astype(np.float32)
