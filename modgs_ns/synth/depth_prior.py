"""A simulated monocular depth prior, distorted the way real ones are.

A network such as Depth Anything gives *relative* depth: its order is mostly right but each
frame has its own unknown scale and shift, a smooth low-frequency warp, noise, and edges
blurred across depth discontinuities. That is exactly what MoDGS must cope with, so the
generator reproduces each of these effects from the ground-truth depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PriorDistortion:
    scale_log_std: float = 0.25  # per-frame scale = global * exp(N(0, std))
    shift_range: tuple[float, float] = (0.2, 1.5)  # per-frame shift, in prior units
    warp_amplitude: float = 0.08  # relative low-frequency multiplicative warp
    noise_std: float = 0.01  # relative per-pixel noise
    edge_blur_sigma: float = 1.5  # px; softens depth edges


def frame_affine(num_frames: int, seed: int, cfg: PriorDistortion) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (scale, shift) applied to metric depth; unknown to the method."""
    rng = np.random.default_rng([seed, 7])
    global_scale = rng.uniform(0.2, 0.6)
    scales = global_scale * np.exp(rng.normal(0.0, cfg.scale_log_std, num_frames))
    shifts = rng.uniform(*cfg.shift_range, num_frames)
    return scales, shifts


def simulate_prior(
    depth: np.ndarray, frame: int, num_frames: int, scale: float, shift: float, seed: int, cfg: PriorDistortion
) -> np.ndarray:
    """Relative depth prior for one frame from its metric z-depth [H, W] (inf = background)."""
    h, w = depth.shape
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
    return (scale * d + shift).astype(np.float32)
