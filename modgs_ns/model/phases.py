"""The two phases of one `ns-train modgs` run, stated once (method reference §3 to §5).

Stage 1, steps [0, N1): the deformation alone learns 3D correspondences; at N1 the canonical Gaussians
are built; stage 2, steps [N1, total): Gaussians and (optionally) the deformation train on images.
The trainer builds one `Phases` from its config; schedulers, pipeline and model read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Phases:
    """Step arithmetic of a two-phase run."""

    stage1_steps: int
    """N1: the first stage-2 step (0 = no stage 1)."""
    total_steps: Optional[int] = None
    """The run's last step + 1 (None where only the switch matters: rendering, evaluation)."""
    deformation_frozen_in_stage2: bool = False
    """Stage 2 leaves the deformation as stage 1 fitted it (its optimizer's learning rate is 0)."""

    def in_stage1(self, step: int) -> bool:
        return step < self.stage1_steps

    def stage2_step(self, step: int) -> int:
        """Phase-local step of stage 2 (0 at the switch; 0 during stage 1)."""
        return max(step - self.stage1_steps, 0)
