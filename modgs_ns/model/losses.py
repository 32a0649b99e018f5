"""MoDGS losses: the ordinal depth loss (§5.3), a Pearson alternative, and the stage-1 3D flow loss (§3.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from modgs_ns.scene.errors import ConfigError


@dataclass
class DepthLossConfig:
    """Stage 2's depth-prior loss."""

    kind: Literal["ordinal", "pearson", "none"] = "ordinal"
    """MoDGS's ordinal loss, a Pearson correlation loss, or none."""
    weight: float = 0.1
    """Weight of the depth loss (MoDGS: 0.1)."""
    ordinal_pairs: int = 200000
    """Pixel pairs sampled per step for the ordinal loss."""
    ordinal_alpha: float = 100.0
    """Sharpness of the ordinal loss's tanh (MoDGS: 100, for depth in [-1, 1] units)."""

    def check(self, flag: str = "--pipeline.model.depth-loss.") -> None:
        if not self.weight >= 0:
            raise ConfigError(f"{flag}weight must be >= 0, got {self.weight}")
        if self.ordinal_pairs < 1:
            raise ConfigError(f"{flag}ordinal-pairs must be >= 1, got {self.ordinal_pairs}")


def depth_loss(render: Tensor, prior: Tensor, valid: Tensor, cfg: DepthLossConfig, scale: Tensor | float) -> Tensor:
    """The configured depth loss (unweighted) of a rendered depth [H,W,1] in world units; `scale`: world
    to the deformation's normalized units, where the ordinal loss's alpha is tuned."""
    if cfg.kind == "pearson":
        return pearson_depth_loss(render, prior, valid)
    return ordinal_depth_loss(render * scale, prior, valid, cfg.ordinal_pairs, cfg.ordinal_alpha)


def ordinal_depth_loss(
    render: Tensor,
    prior: Tensor,
    valid: Tensor,
    num_pairs: int = 200_000,
    alpha: float = 100.0,
    threshold_fraction: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """mean |tanh(alpha (r1 - r2)) - sign(g1 - g2)| over random pixel pairs whose prior depths
    differ by at least `threshold_fraction` of the prior's range.

    Only the prior's per-frame depth *order* matters: the loss is unchanged by any positive
    affine map of the prior. `render` must be in the deformation's normalized units (alpha is
    tuned for a scene in [-1, 1]).
    """
    v = valid.reshape(-1)
    r = render.reshape(-1)[v]
    g = prior.reshape(-1)[v].to(r.dtype)
    n = r.numel()
    if n < 2:
        return render.sum() * 0.0
    i1 = torch.randint(0, n, (num_pairs,), generator=generator, device="cpu").to(r.device)
    i2 = torch.randint(0, n, (num_pairs,), generator=generator, device="cpu").to(r.device)
    tau = (g.max() - g.min()) * threshold_fraction
    dg = g[i1] - g[i2]
    keep = dg.abs() >= tau
    if not bool(keep.any()):
        return render.sum() * 0.0
    dr = r[i1[keep]] - r[i2[keep]]
    return (torch.tanh(alpha * dr) - torch.sign(dg[keep])).abs().mean()


def pearson_depth_loss(render: Tensor, prior: Tensor, valid: Tensor) -> Tensor:
    """1 - Pearson correlation between rendered and prior depth on valid pixels (affine invariant)."""
    v = valid.reshape(-1)
    r = render.reshape(-1)[v]
    g = prior.reshape(-1)[v].to(r.dtype)
    r = r - r.mean()
    g = g - g.mean()
    return 1.0 - (r * g).sum() / (r.norm() * g.norm()).clamp_min(1e-12)


def flow3d_loss(pred: Tensor, target: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """Stage-1 L2: mean over points and coordinates of (pred - target)^2, in normalized units."""
    return (((pred - target) * scale) ** 2).mean()


def knn_smoothness_loss(points: Tensor, flow: Tensor, k: int = 20, scale: Tensor | float = 1.0) -> Tensor:
    """Local rigidity prior: 3D flow of each point close to that of its k nearest neighbours."""
    if len(points) <= k:
        return flow.sum() * 0.0
    with torch.no_grad():
        nn_idx = torch.cdist(points, points).topk(k + 1, largest=False).indices[:, 1:]
    return (((flow[:, None, :] - flow[nn_idx]) * scale) ** 2).mean()
