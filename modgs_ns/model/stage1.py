"""Stage 1 of MoDGS (method reference §3): the deformation alone learns 3D correspondences.

Functions of the deformation and the scene's pairs (`data.correspondences.Correspondences`): the pair
loss, the held-out fit and its one-line summary, and the stop rule, whose state is kept in buffers so
that a resumed run continues it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from modgs_ns.model.deformation import Deformation
from modgs_ns.model.losses import flow3d_loss, knn_smoothness_loss
from modgs_ns.scene.errors import ConfigError


@dataclass
class Stage1Config:
    """Stage 1: the 3D-aware initialization of the deformation."""

    steps: int = 20000
    """N1: steps before the switch (MoDGS: 500k; 0 = no 3D-aware initialization)."""
    points: int = 300000
    """Source points per step (MoDGS: up to 300k)."""
    moving_fraction: float = 0.5
    """Share of each step's points drawn from moving source pixels (0 = uniform, as MoDGS, where moving
    pairs are a tenth of the fit)."""
    heldout_fraction: float = 0.01
    """Source pixels kept out of training to measure the fit (MoDGS: 1%)."""
    eval_every: int = 250
    """Held-out pair error every this many steps and at the switch, for the log and the stop rule (0 = never)."""
    patience: int = 3
    """Stop once the held-out error has not improved by 2% in this many evaluations (0 = never)."""
    smoothness_weight: float = 0.0
    """kNN local smoothness of the 3D flow (MoDGS: 1 on Nvidia scenes, 0 on DyNeRF)."""
    knn: int = 20
    """Neighbours of the smoothness term."""

    def check(self, flag: str = "--pipeline.model.stage1.") -> None:
        for name, ok, valid in (
            ("steps", self.steps >= 0, ">= 0"),
            ("moving-fraction", 0 <= self.moving_fraction <= 1, "in [0, 1]"),
            ("heldout-fraction", 0 <= self.heldout_fraction < 1, "in [0, 1)"),
            ("eval-every", self.eval_every >= 0, ">= 0 (0 = never)"),
            ("patience", self.patience >= 0, ">= 0 (0 = never)"),
        ):
            if not ok:
                raise ConfigError(f"{flag}{name} must be {valid}, got {getattr(self, name.replace('-', '_'))}")


def pair_loss(deform: Deformation, batch: Optional[dict], cfg: Stage1Config) -> Dict[str, Tensor]:
    """Loss of one batch of pairs: source points x [N,3] at t_src to canonical space and out at t_tgt,
    against their targets y [N,3]. `None` (stage 1 stopped): a detached zero, so no parameter moves;
    an empty batch: a zero that reaches every parameter."""
    if batch is None:
        return {"flow3d_loss": torch.zeros((), device=deform.scale.device, requires_grad=True)}
    if not batch:
        return {"flow3d_loss": sum(p.sum() * 0.0 for p in deform.parameters())}
    device = deform.scale.device
    x, y = batch["x"].to(device), batch["y"].to(device)
    pred = deform.from_canonical(deform.to_canonical(x, batch["t_src"]), batch["t_tgt"])
    losses = {"flow3d_loss": flow3d_loss(pred, y, deform.scale)}
    if cfg.smoothness_weight > 0:
        losses["smooth_loss"] = cfg.smoothness_weight * knn_smoothness_loss(x, pred - x, cfg.knn, deform.scale)
    return losses


def warp(deform: Deformation, x: Tensor, t_src: float, t_tgt: float, chunk: int = 65536) -> Tensor:
    """Points x [N,3] at time t_src moved to time t_tgt through the canonical space (in chunks)."""
    x = x.to(deform.scale.device)
    return torch.cat([deform.from_canonical(deform.to_canonical(c, t_src), t_tgt) for c in x.split(chunk)])


def to_canonical(deform: Deformation, x: Tensor, t: float, chunk: int = 65536) -> Tensor:
    """Points x [N,3] seen at time t in canonical space (in chunks)."""
    return torch.cat([deform.to_canonical(c, t) for c in x.split(chunk)])


def from_canonical(deform: Deformation, x: Tensor, t: float, chunk: int = 65536) -> Tensor:
    """Canonical points x [N,3] at time t (in chunks)."""
    return torch.cat([deform.from_canonical(c, t) for c in x.split(chunk)])


def heldout_mse(report: dict) -> Optional[float]:
    """Mean squared 3D error of the model over all held-out pairs of `Correspondences.heldout_errors`."""
    parts = [v for (name, _), v in report.items() if name == "model"]
    if not parts:
        return None
    return sum(v["mse"] * v["n"] for v in parts) / sum(v["n"] for v in parts)


def heldout_summary(report: dict, extent: float) -> str:
    """Median held-out error per region, model against identity, as % of `extent` and in pixels."""
    out = []
    for region in ("moving", "static"):
        m, idn = report.get(("model", region)), report.get(("identity", region))
        if m and idn:
            out.append(
                f"{region} ({m['n']}): {100 * m['median'] / extent:.2f}% of extent, {m['median_px']:.2f} px "
                f"(identity {100 * idn['median'] / extent:.2f}%, {idn['median_px']:.2f} px)"
            )
    return "; ".join(out) or "none"


class StopRule(nn.Module):
    """Early stop of stage 1 once the held-out error has not improved by 2% in `patience` evaluations;
    buffers (best error, evaluations since, step stopped at or -1) ride in the checkpoint."""

    def __init__(self):
        super().__init__()
        self.register_buffer("best", torch.tensor(float("inf")))
        self.register_buffer("stale", torch.tensor(0))
        self.register_buffer("stopped_at", torch.tensor(-1))

    @property
    def stopped(self) -> bool:
        return int(self.stopped_at) >= 0

    def due(self, step: int, cfg: Stage1Config) -> bool:
        """Whether an evaluation is due at this stage-1 step."""
        return not self.stopped and cfg.eval_every > 0 and step > 0 and step % cfg.eval_every == 0

    def update(self, mse: float, step: int, patience: int) -> bool:
        """Record an evaluation; True when stage 1 stops here."""
        if mse < 0.98 * float(self.best):
            self.best.fill_(mse)
            self.stale.zero_()
        else:
            self.stale += 1
        if patience > 0 and int(self.stale) >= patience:
            self.stopped_at.fill_(step)
            return True
        return False
