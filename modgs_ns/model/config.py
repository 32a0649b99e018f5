"""ModgsModelConfig: splatfacto's options plus MoDGS's, grouped by idea (each group checks itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Type

from nerfstudio.models.splatfacto import SplatfactoModelConfig

from modgs_ns.model.canonical_init import CanonicalInitConfig
from modgs_ns.model.deformation import DeformationConfig
from modgs_ns.model.lifespans import LifespanConfig
from modgs_ns.model.losses import DepthLossConfig
from modgs_ns.model.phases import Phases
from modgs_ns.model.stage1 import Stage1Config
from modgs_ns.scene.errors import ConfigError


def _model_class():
    from modgs_ns.model.modgs_model import ModgsModel  # the model module imports this one

    return ModgsModel


@dataclass
class ModgsModelConfig(SplatfactoModelConfig):
    """MoDGS model: splatfacto's Gaussians in a canonical space plus a time deformation."""

    _target: Type = field(default_factory=_model_class)
    sh_degree: int = 0
    """MoDGS uses view-independent colour (SH degree 0)."""
    num_downscales: int = 0
    """Train at full resolution from the first step (splatfacto starts downscaled)."""
    use_absgrad: bool = False
    """absgrad needs gsplat's CUDA backward; the CPU rasterizer gives plain gradients."""
    cpu_rasterizer: Literal["auto", "cpp", "torch"] = "auto"
    """CPU tensors: the compiled kernel (auto: the PyTorch path, with a warning, when it cannot be built)."""
    l1_lambda: float = 1.0
    """Weight of the L1 photometric term."""
    dssim_lambda: float = 0.2
    """Weight of (1 - SSIM) beside L1, as MoDGS (not splatfacto's convex mix)."""
    default_time: float = 0.0
    """Time used when a camera carries none (e.g. `ns-render interpolate`)."""
    static_scene: bool = False
    """Ignore time: splatfacto's static Gaussians on our data path (a baseline; needs stage1.steps 0)."""
    interpolate_between_frames: bool = True
    """Between two frames' times, move means on the line between the deformation's positions at those
    times (False: the deformation at that time, as MoDGS, whose objects burst apart there)."""
    deformation: DeformationConfig = field(default_factory=DeformationConfig)
    """The time deformation (GaborNet time encoder + RealNVP coupling)."""
    stage1: Stage1Config = field(default_factory=Stage1Config)
    """Stage 1: the deformation alone fits the scene's 3D pairs."""
    canonical_init: CanonicalInitConfig = field(default_factory=CanonicalInitConfig)
    """The canonical Gaussians built at the switch."""
    lifespans: LifespanConfig = field(default_factory=LifespanConfig)
    """Lifespans of moving content (width 0 = MoDGS as published)."""
    depth_loss: DepthLossConfig = field(default_factory=DepthLossConfig)
    """Stage 2's depth-prior loss."""

    # splatfacto options this model does not use: set to anything but splatfacto's default, they stop the run.
    UNHONOURED = {
        "ssim_lambda": "use --pipeline.model.dssim-lambda and --pipeline.model.l1-lambda",
        "use_scale_regularization": "",
        "max_gauss_ratio": "",
        "use_bilateral_grid": "",
        "grid_shape": "",
        "output_depth_during_training": "",
        "resolution_schedule": "",
        "prompt": "",
    }

    def check(self) -> None:
        """ConfigError on an option out of range, options that cannot work together, or a splatfacto
        option that modgs would silently ignore."""
        for group in (self.stage1, self.canonical_init, self.lifespans, self.depth_loss):
            group.check()
        if self.static_scene and self.stage1.steps > 0:
            raise ConfigError("--pipeline.model.static-scene True needs --pipeline.model.stage1.steps 0")
        base = SplatfactoModelConfig()
        bad = [k for k in self.UNHONOURED if getattr(self, k) != getattr(base, k)]
        if bad:
            hints = "; ".join(f"{k}: {self.UNHONOURED[k]}" for k in bad if self.UNHONOURED[k])
            raise ConfigError(
                f"modgs does not use splatfacto's {', '.join('--pipeline.model.' + k.replace('_', '-') for k in bad)}"
                + (f" ({hints})" if hints else "")
            )

    def uses_lifespans(self) -> bool:
        return self.lifespans.width > 0 and self.stage1.steps > 0 and not self.static_scene

    def phases(self, total_steps: Optional[int] = None) -> Phases:
        """This model's phases (the trainer adds the run's total)."""
        frozen = self.uses_lifespans() and not self.lifespans.train_deformation_in_stage2
        return Phases(self.stage1.steps, total_steps, deformation_frozen_in_stage2=frozen)
