"""Lifespans of moving content (a deviation from MoDGS, off by default): a Gaussian made from a frame's
moving pixels keeps its opacity only near that frame's time, so the deformation carries a moving
surface only over the short range where stage 1 is accurate.

Per Gaussian: a centre time and a log width, carried in `gauss_params` as tensors without an
optimizer (gsplat's strategies split, duplicate and prune such attributes with the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from modgs_ns.scene.errors import ConfigError

STATIC_LOG_WIDTH = 10.0
"""Log width of a Gaussian that lives at all times (e^10 time units: weight 1 within [0, 1])."""
EXPONENT = 2.0
"""Shape of a lifespan: a Gaussian in time."""


@dataclass
class LifespanConfig:
    """Lifespans of the Gaussians made from moving pixels (docs/method.md, "Lifespans")."""

    width: float = 0.0
    """Lifespan in frame spacings: opacity x exp(-0.5 ((t - t_i) / (width dt))^2); 0 = MoDGS as published
    (every Gaussian lives at all times). Needs stage 1."""
    cutoff: float = 1e-3
    """Gaussians whose lifespan weight at the rendered time is below this are left out of the render."""
    moving_points_per_frame: int = 0
    """Moving points taken per frame at the canonical initialization (0 = all: a frame's moving surfaces
    are drawn by its own points alone)."""
    deform_static: bool = True
    """Deform the Gaussians that live at all times too (MoDGS); False keeps them where their frame saw
    them and halves a CPU stage-2 step."""
    train_deformation_in_stage2: bool = True
    """Co-train the deformation in stage 2 (MoDGS); False keeps stage 1's, which a frame's rarely
    rendered moving Gaussians rely on."""

    def check(self, flag: str = "--pipeline.model.lifespans.") -> None:
        for name, ok, valid in (
            ("width", self.width >= 0, ">= 0 (0 = off)"),
            ("cutoff", 0 <= self.cutoff < 1, "in [0, 1)"),
            ("moving-points-per-frame", self.moving_points_per_frame >= 0, ">= 0"),
        ):
            if not ok:
                raise ConfigError(f"{flag}{name} must be {valid}, got {getattr(self, name.replace('-', '_'))}")


def lifespan_weights(centres: Tensor, log_widths: Tensor, t: float) -> Tensor:
    """[N] opacity factor at time t of Gaussians with lifespan centres [N] and log widths [N]."""
    return torch.exp(-0.5 * ((t - centres) / torch.exp(log_widths)).abs() ** EXPONENT)


def has_lifespan(log_widths: Tensor) -> Tensor:
    """[N] bool: the Gaussian lives only around its time (the others live at every time)."""
    return log_widths < STATIC_LOG_WIDTH


def nearest_frame_time(frame_times: Tensor, t: float) -> float:
    """The training frame time [T] nearest to t (t itself without frames): between two frames each moving
    object is drawn by one frame's Gaussians, never by two half-faded copies."""
    if len(frame_times) == 0:
        return t
    return float(frame_times[int(torch.argmin((frame_times - t).abs()))])


def interpolated_positions(deform_at, means: Tensor, frame_times: Tensor, t: float) -> Tensor:
    """Means [N,3] at time t: `deform_at(means, t)`, or strictly between two training frames' times the
    linear blend of it at those two times (the deformation is only fitted at frame times)."""
    if len(frame_times) > 1 and frame_times[0] < t < frame_times[-1]:
        k = int(torch.searchsorted(frame_times, torch.tensor(float(t), dtype=frame_times.dtype)))
        t0, t1 = float(frame_times[k - 1]), float(frame_times[k])
        a = (t - t0) / (t1 - t0)
        if 1e-4 < a < 1 - 1e-4:  # at a frame's own time (float32 camera times) one evaluation, as in training
            return (1 - a) * deform_at(means, t0) + a * deform_at(means, t1)
    return deform_at(means, t)
