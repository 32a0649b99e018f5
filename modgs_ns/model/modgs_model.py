"""ModgsModel: splatfacto with canonical Gaussians deformed to each camera's time (MoDGS).

One `ns-train` run has two phases (method reference §3 to §5):
- stage 1, steps [0, N1): the deformation alone learns 3D correspondences from the scene's
  caches (the pipeline feeds `stage1_loss_dict`; no rendering, the Gaussians are untouched);
- at N1, canonical initialization: all frames' depth points warped to canonical space,
  voxel-downsampled, replace the Gaussians inside their optimizers;
- stage 2: canonical Gaussians + co-trained deformation (only means move), loss
  L1 + 0.2 (1 - SSIM) + 0.1 ordinal depth, densification by gsplat's DefaultStrategy on the
  canonical parameters with the deformed render's gradients, all on a phase-local step count.

Also overridden because splatfacto needs it on CPU/offline: seeding without `.cuda()`, lazy
LPIPS, our rasterization dispatch, and optimizer re-binding after a checkpoint load (#3554).
"""

from __future__ import annotations

import contextlib
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
import viser.transforms as vtf
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig, num_sh_bases
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from modgs_ns.model.deformation import Deformation
from modgs_ns.model.losses import flow3d_loss, knn_smoothness_loss, ordinal_depth_loss, pearson_depth_loss
from modgs_ns.model.rasterize import rasterization
from modgs_ns.scene.caches import DEPTH_CACHE, scene_bounds
from modgs_ns.scene.errors import ConfigError

STATIC_LOG_WIDTH = 10.0
"""Log lifespan width of a Gaussian that lives at all times (e^10 time units: weight 1 within [0, 1])."""


@dataclass
class ModgsModelConfig(SplatfactoModelConfig):
    """MoDGS model: splatfacto's Gaussians in a canonical space plus a time deformation."""

    _target: Type = field(default_factory=lambda: ModgsModel)
    sh_degree: int = 0
    """MoDGS uses view-independent colour (SH degree 0)."""
    num_downscales: int = 0
    """Train at full resolution from the first step (splatfacto starts downscaled)."""
    use_absgrad: bool = False
    """absgrad needs gsplat's CUDA backward; the CPU rasterizer gives plain gradients."""
    cpu_rasterizer: Literal["auto", "cpp", "torch"] = "auto"
    """CPU tensors only: the compiled kernel ("cpp"; "auto" falls back to "torch" with a warning when
    it cannot be built) or the pure PyTorch path. CUDA tensors always go to gsplat."""
    l1_lambda: float = 1.0
    """Weight of the L1 photometric term."""
    dssim_lambda: float = 0.2
    """Photometric loss l1_lambda * L1 + dssim_lambda * (1 - SSIM), as MoDGS (not splatfacto's convex mix)."""
    default_time: float = 0.0
    """Time used when a camera carries none (e.g. `ns-render interpolate` in nerfstudio 1.1.5)."""

    # --- deformation (GaborNet time encoder + RealNVP coupling), sizes of MoDGS's configs
    deform_layers: int = 4
    """RealNVP coupling layers (MoDGS: 4)."""
    deform_feature_dims: int = 128
    """Time feature size of the GaborNet encoder."""
    deform_proj_dims: int = 256
    """Projection size inside each coupling layer."""
    deform_hidden: Tuple[int, ...] = (256, 256, 256)
    """Hidden layer sizes of each coupling layer's MLP."""
    deform_gabor_hidden: int = 256
    """Hidden size of the GaborNet time encoder."""
    deform_seed: int = 1234
    """Seed of the deformation's initialization, coupling permutations and stage-1 sampling."""

    static_scene: bool = False
    """Ignore time: plain static Gaussians (splatfacto's model on our data path; a baseline). Needs
    stage1_steps 0."""

    # --- stage 1: 3D-aware initialization of the deformation
    stage1_steps: int = 20000
    """N1: steps of stage 1 before the switch (MoDGS: 500k; 0 = no 3D-aware initialization)."""
    stage1_points: int = 300000
    """Source points per stage-1 step (MoDGS: up to 300k)."""
    stage1_moving_fraction: float = 0.5
    """Share of each stage-1 step's points drawn from source pixels that move in their frame (all of
    them when fewer). Deviation: MoDGS samples uniformly, so moving pairs are about a tenth of what it
    fits on a typical video; 0 restores that."""
    stage1_heldout_fraction: float = 0.01
    """Source pixels kept out of stage 1 to measure its fit (MoDGS: 1%)."""
    stage1_eval_every: int = 250
    """Held-out pair error every this many stage-1 steps and at the switch (logged), for the stop
    rule (0 = never)."""
    stage1_patience: int = 3
    """Stage 1 stops early once the held-out error has not improved by 2% in this many evaluations
    (0 = never; the remaining stage-1 steps are then skipped). The step cap is stage1_steps."""
    stage1_smoothness_weight: float = 0.0
    """kNN local smoothness of the 3D flow (MoDGS: 1 on Nvidia scenes, 0 on DyNeRF)."""
    stage1_knn: int = 20
    """Neighbours of the smoothness term."""

    # --- canonical initialization at the switch
    init_points_per_frame: int = 0
    """Depth points taken per frame before warping (0 = all valid points, as MoDGS); with lifespans,
    among the frame's static points (see init_moving_points_per_frame)."""
    init_voxel_divisions: int = 500
    """Voxel = largest canonical extent / this (MoDGS: 500)."""
    init_min_points: int = 100000
    """If voxel downsampling leaves fewer points, keep the full cloud (MoDGS: 100k)."""
    init_max_points: int = 300000
    """Random subset beyond this many points (MoDGS: 300k)."""
    init_consistency_frames: int = 8
    """Free-space check of the canonical cloud: each frame's point, warped to this many frames spread
    over the video, must not float in front of what any of them observes (by more than
    init_consistency_tolerance of the depth). Points that a wrong long-range warp puts in front of
    other surfaces would render as ghosts of the moving objects. 0 = off (MoDGS). Deviation."""
    init_consistency_tolerance: float = 0.05
    """Relative depth margin of the free-space check."""

    # --- lifespans of moving content (deviation)
    moving_lifespan: float = 0.0
    """Gaussians made from a frame's moving pixels keep their opacity only near that frame's time:
    opacity * exp(-0.5 ((t - t_i) / (moving_lifespan * dt))^2), dt the median frame spacing; those from
    static pixels live at all times. The deformation then carries a moving surface only over the short
    range where stage 1 is accurate instead of across the whole video. 0 = MoDGS (every Gaussian lives
    at all times). Deviation: MoDGS's shared deformation, fitted on the hard benchmark scene, misplaces
    fast spinning objects by 5-45 px across the video, and stage 2 then fades them. Needs stage 1."""
    init_moving_points_per_frame: int = 0
    """With lifespans: moving points taken per frame, apart from init_points_per_frame's draw among the
    others (0 = all of the frame's valid moving points: a frame's moving surfaces are drawn by its own
    points alone, so they are kept dense)."""
    interpolate_between_frames: bool = True
    """At a time between two training frames, move each Gaussian along the straight line between where
    the deformation puts it at those two frames' times (False: the deformation at that time, MoDGS).
    Deviation: the deformation is only ever fitted at frame times and its time encoding is
    high-frequency; on the hard benchmark scene, half-way between two frames it puts moving points a
    median 0.8-2% of the scene extent (q90 3-4%) off that line, more than a whole frame's motion, and
    objects burst apart in renders at in-between times (spiral, viewer time slider, exports)."""
    lifespans_between_frames: Literal["nearest", "blend"] = "nearest"
    """With lifespans, at a time between two training frames: the lifespan weights of the nearer frame's
    time (nearest: each moving object drawn by one frame's Gaussians, moved along the interpolated path;
    it switches frame half-way) or of the time itself (blend: both frames' Gaussians, each half faded:
    where stage 1 did not capture an object's motion, e.g. a small fast ball, two copies side by side).
    Renders at a frame's own time (training, evaluation) are the same with both."""
    init_thickness: float = 1.0
    """Initial size of every canonical Gaussian along the surface normal of its frame's depth map, as a
    fraction of its size along the surface (1 = a sphere, as 3DGS and MoDGS). Below 1 the Gaussians
    start as flat discs on the observed surface (normals of the 5x5-smoothed depth map). Deviation:
    one-pixel-apart spheres blur a frame's texture and its ~50 stage-2 visits do not reshape them; on
    the hard benchmark scene 0.1 took the training views' moving objects from 26.0 to 29.4 dB and the
    held-out co-visible region from 20.23 to 20.58 dB (with ground-truth depth as the prior from 20.27
    to 21.73: spheres on a floor seen at a grazing angle are entered before the floor, which then
    renders 3-4% too close and shifts in other views; 2% with discs)."""
    init_moving_opacity: float = 0.1
    """Initial opacity of the Gaussians with lifespans (the others start at 0.1, as 3DGS). Measured on the
    hard benchmark scene, 0.5 instead of 0.1: training views' moving objects +0.3 dB, held-out moving
    objects -0.1 dB (within a run's spread)."""
    init_moving_scale: float = 1.0
    """Initial size of the Gaussians with lifespans as a fraction of their 3-nearest-neighbour distance
    (1 = 3DGS). A frame's moving points are one per pixel: at 1 each Gaussian spans ~1.2 px and ~13 of
    them overlap on a pixel, a blur that stage 2 (each frame seen ~50 times) does not undo (init_thickness
    flattens them instead; 0.5 was measured only before session 8's opacity fix, when it changed nothing)."""
    train_deformation_in_stage2: bool = True
    """Co-train the deformation with the Gaussians in stage 2 (MoDGS). False, with lifespans: stage 2
    keeps the deformation stage 1 fitted and trains the Gaussians only. Deviation: with lifespans each
    frame's moving Gaussians are seen in ~2.5% of the steps while the shared deformation changes at
    every step and moves them away from where their frame saw them (hard benchmark scene, training
    views: moving objects 20.6 dB co-trained, 25.3 dB kept). Without lifespans the deformation is
    always trained (it is what moves the objects)."""
    lifespan_exponent: float = 2.0
    """Shape of a lifespan: weight exp(-0.5 |(t - t_i) / width|^p) with this p. 2 = a Gaussian in time
    (a frame's neighbours' copies show at 0.14 at its time); larger = flat top, steep sides: at a frame's
    time only its own copy, half-way between two frames both at 0.61 (cross-fade)."""
    lifespan_cutoff: float = 1e-3
    """Gaussians whose lifespan weight at the rendered time is below this are left out of the render."""
    deform_static: bool = True
    """With lifespans: the Gaussians that live at all times (made from static pixels) are deformed too,
    as in MoDGS. False: they stay at their canonical place and only the Gaussians with lifespans go
    through the deformation. Deviation: on 2 CPU cores the deformation of every static Gaussian was ~70%
    of a stage-2 step; without it a step costs about half, and the steps saved go to the moving content."""

    # --- stage 2 depth supervision
    depth_loss: Literal["ordinal", "pearson", "none"] = "ordinal"
    """Depth prior loss of stage 2: MoDGS's ordinal loss, a Pearson correlation loss, or none."""
    depth_loss_weight: float = 0.1
    """Weight of the depth loss (MoDGS: 0.1)."""
    ordinal_pairs: int = 200000
    """Pixel pairs sampled per step for the ordinal loss."""
    ordinal_alpha: float = 100.0
    """Sharpness of the ordinal loss's tanh (MoDGS: 100, for depth in [-1, 1] units)."""

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

    def check_honoured(self) -> None:
        """ConfigError naming the splatfacto options set here that modgs would silently ignore."""
        base = SplatfactoModelConfig()
        bad = [k for k in self.UNHONOURED if getattr(self, k) != getattr(base, k)]
        if bad:
            hints = "; ".join(f"{k}: {self.UNHONOURED[k]}" for k in bad if self.UNHONOURED[k])
            raise ConfigError(
                f"modgs does not use splatfacto's {', '.join('--pipeline.model.' + k.replace('_', '-') for k in bad)}"
                + (f" ({hints})" if hints else "")
            )


def get_viewmat(c2w: Tensor) -> Tensor:
    """nerfstudio (OpenGL) camera-to-world [C,3,4] -> OpenCV world-to-camera [C,4,4].

    splatfacto's version is `torch.compile`d, which costs many seconds per shape on a CPU.
    """
    R = c2w[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=c2w.device, dtype=c2w.dtype)
    T = c2w[:, :3, 3:4]
    R_inv = R.transpose(1, 2)
    view = torch.zeros(c2w.shape[0], 4, 4, device=c2w.device, dtype=c2w.dtype)
    view[:, 3, 3] = 1.0
    view[:, :3, :3] = R_inv
    view[:, :3, 3:4] = -R_inv @ T
    return view


class LazyLPIPS:
    """LPIPS built on first use, and only when its backbone weights can be loaded offline."""

    def __init__(self):
        self._metric = None
        self.available: Optional[bool] = None

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        if self.available is None:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
                self.available = True
            except Exception as err:  # no network and no cached AlexNet weights
                CONSOLE.print(f"[yellow]LPIPS unavailable ({type(err).__name__}); it is left out of the metrics")
                self.available = False
        if not self.available:
            return torch.tensor(float("nan"))
        self._metric = self._metric.to(a.device)
        return self._metric(a.clamp(0, 1), b.clamp(0, 1))


@contextlib.contextmanager
def _lpips_deferred():
    import torchmetrics.image.lpip as lpip_mod

    original = lpip_mod.LearnedPerceptualImagePatchSimilarity
    lpip_mod.LearnedPerceptualImagePatchSimilarity = lambda *a, **k: LazyLPIPS()
    try:
        yield
    finally:
        lpip_mod.LearnedPerceptualImagePatchSimilarity = original


class ModgsModel(SplatfactoModel):
    config: ModgsModelConfig

    def populate_modules(self):
        seed_rgb = None
        if self.seed_points is not None and not self.config.random_init and self.seed_points[1].shape[0] > 0:
            # splatfacto moves seed colours to CUDA; hand it the points only and set colours here.
            seed_rgb = self.seed_points[1]
            self.seed_points = (self.seed_points[0], self.seed_points[1][:0])
        with _lpips_deferred():
            super().populate_modules()
        if seed_rgb is not None:
            rgb = seed_rgb.float() / 255.0
            if self.config.sh_degree > 0:
                dc = RGB2SH(rgb)
            else:
                dc = torch.logit(rgb, eps=1e-4)
            self.gauss_params["features_dc"] = torch.nn.Parameter(dc)
        n = len(self.gauss_params["means"])
        # Lifespan of each Gaussian: centre time and log width (fixed; STATIC_LOG_WIDTH = all times).
        self.gauss_params["times"] = torch.nn.Parameter(torch.zeros(n, 1))
        self.gauss_params["time_scales"] = torch.nn.Parameter(torch.full((n, 1), STATIC_LOG_WIDTH))
        c = self.config
        self.deform = Deformation(
            n_layers=c.deform_layers,
            feature_dims=c.deform_feature_dims,
            proj_dims=c.deform_proj_dims,
            hidden=tuple(c.deform_hidden),
            gabor_hidden=c.deform_gabor_hidden,
            seed=c.deform_seed,
        )
        self._correspondences = None
        # Stage-1 stop rule state (buffers, so a resumed run continues it): best held-out MSE,
        # evaluations since it improved, and the step at which stage 1 stopped (-1: running).
        self.register_buffer("stage1_best", torch.tensor(float("inf")))
        self.register_buffer("stage1_stale", torch.tensor(0))
        self.register_buffer("stage1_stopped_at", torch.tensor(-1))
        self.stage1_report: Dict[Tuple[str, str], dict] = {}
        # The scene comes through the constructor's metadata (the dataparser's outputs).
        meta = self.kwargs.get("metadata") or {}
        self.scene_root: Optional[Path] = Path(meta["modgs_root"]) if meta.get("modgs_root") else None
        self.frame_images: Dict[str, Path] = {Path(p).name: Path(p) for p in meta.get("modgs_frame_images", [])}
        # The training frames' times, sorted (interpolate_between_frames; empty: no interpolation).
        self.frame_times = torch.unique(torch.tensor(meta.get("modgs_frame_times", []), dtype=torch.float64))
        if self.scene_root is not None and (self.scene_root / DEPTH_CACHE).is_file():
            # Once, from the scene's bounds (a loaded checkpoint then restores the same buffers).
            self.deform.set_normalization(torch.from_numpy(scene_bounds(self.scene_root)).float())

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        groups = super().get_param_groups()
        # MoDGS gives the time encoder and the coupling network different stage-1 learning rates.
        groups["deform_time"] = list(self.deform.time_encoder.parameters())
        groups["deform"] = list(self.deform.layers.parameters())
        groups["times"] = [self.gauss_params["times"]]
        groups["time_scales"] = [self.gauss_params["time_scales"]]
        return groups

    def load_state_dict(self, state, **kwargs):  # type: ignore
        n = len(state.get("gauss_params.means", state.get("means", [])))
        state.setdefault("gauss_params.times", torch.zeros(n, 1))  # runs from before lifespans: all static
        state.setdefault("gauss_params.time_scales", torch.full((n, 1), STATIC_LOG_WIDTH))
        return super().load_state_dict(state, **kwargs)

    # ------------------------------------------------------------------ stage 1
    @property
    def correspondences(self):
        """The scene's cached point maps and pairs (loaded on first use; training only)."""
        if self._correspondences is None:
            from modgs_ns.data.correspondences import Correspondences

            if self.scene_root is None:
                raise RuntimeError("ModgsModel has no scene (metadata['modgs_root'] from modgs-data)")
            self._correspondences = Correspondences(
                self.scene_root, self.config.stage1_heldout_fraction, self.config.deform_seed
            )
        return self._correspondences

    def world_extent(self) -> float:
        """World units per normalized unit (half the largest extent of the scene's depth points)."""
        return float(1.0 / self.deform.scale)

    def in_stage1(self, step: int) -> bool:
        return step < self.config.stage1_steps

    def stage1_loss_dict(self, step: int) -> Dict[str, Tensor]:
        """3D-pair loss of one sampled (source frame, target frame) pair: map source points to
        canonical space at the source time and back out at the target time. Once the held-out error
        has plateaued (stop rule), the remaining stage-1 steps only pass a detached zero, so no
        parameter moves (Adam skips parameters without a gradient)."""
        c = self.config
        if int(self.stage1_stopped_at) < 0 and c.stage1_eval_every > 0 and step > 0 and step % c.stage1_eval_every == 0:
            self.stage1_evaluate(step)
        if int(self.stage1_stopped_at) >= 0:
            return {"flow3d_loss": torch.zeros((), device=self.device, requires_grad=True)}
        batch = self.correspondences.sample(
            step, c.stage1_points, seed=c.deform_seed, moving_fraction=c.stage1_moving_fraction
        )
        if not batch:
            return {"flow3d_loss": sum(p.sum() * 0.0 for p in self.deform.parameters())}
        x, y = batch["x"].to(self.device), batch["y"].to(self.device)
        pred = self.deform.from_canonical(self.deform.to_canonical(x, batch["t_src"]), batch["t_tgt"])
        losses = {"flow3d_loss": flow3d_loss(pred, y, self.deform.scale)}
        if self.config.stage1_smoothness_weight > 0:
            losses["smooth_loss"] = self.config.stage1_smoothness_weight * knn_smoothness_loss(
                x, pred - x, self.config.stage1_knn, self.deform.scale
            )
        return losses

    def warp(self, x: Tensor, t_src: float, t_tgt: float) -> Tensor:
        """Points at time t_src moved to time t_tgt through the canonical space."""
        x = x.to(self.device)
        return torch.cat(
            [self.deform.from_canonical(self.deform.to_canonical(chunk, t_src), t_tgt) for chunk in x.split(65536)]
        )

    @torch.no_grad()
    def stage1_evaluate(self, step: int, final: bool = False) -> None:
        """Held-out pair error, logged; applies the stop rule (no 2% improvement in `stage1_patience`
        evaluations). `final`: the evaluation at the switch, logged as the stage-1 result."""
        self.stage1_report = self.correspondences.heldout_errors(self.warp)
        parts = [v for (name, _), v in self.stage1_report.items() if name == "model"]
        if not parts:
            return
        mse = sum(v["mse"] * v["n"] for v in parts) / sum(v["n"] for v in parts)
        label = "stage 1 result (held-out pairs)" if final else f"stage 1 step {step}: held-out pairs"
        print(f"modgs: {label}: {self.stage1_summary()}", flush=True)  # one unwrapped line
        if mse < 0.98 * float(self.stage1_best):
            self.stage1_best.fill_(mse)
            self.stage1_stale.zero_()
        else:
            self.stage1_stale += 1
        if self.config.stage1_patience > 0 and int(self.stage1_stale) >= self.config.stage1_patience:
            self.stage1_stopped_at.fill_(step)
            print(
                f"modgs: stage 1 stopped at step {step}: held-out error has not improved by 2% in "
                f"{self.config.stage1_patience} evaluations",
                flush=True,
            )

    def stage1_summary(self) -> str:
        """Median held-out error per region, model against identity, as % of the scene extent and in pixels."""
        extent = 2.0 * self.world_extent()  # largest extent of the scene's depth points
        out = []
        for region in ("moving", "static"):
            m, idn = self.stage1_report.get(("model", region)), self.stage1_report.get(("identity", region))
            if m and idn:
                out.append(
                    f"{region} ({m['n']}): {100 * m['median'] / extent:.2f}% of extent, {m['median_px']:.2f} px "
                    f"(identity {100 * idn['median'] / extent:.2f}%, {idn['median_px']:.2f} px)"
                )
        return "; ".join(out) or "none"

    # ------------------------------------------------------------------ canonical initialization
    def uses_lifespans(self) -> bool:
        return self.config.moving_lifespan > 0 and self.config.stage1_steps > 0 and not self.config.static_scene

    @torch.no_grad()
    def canonical_points(self) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
        """All frames' valid depth points warped to canonical space (only the first frame,
        unwarped, without stage 1), voxel-downsampled and capped; with their colours, lifespan
        centres, log widths and (init_thickness < 1, else None) unit surface normals as their frame's
        depth map has them. With lifespans, a frame's moving points keep their frame's time and skip
        the free-space check and the merge across frames; the others live at all times."""
        c = self.config
        corr = self.correspondences
        frames = range(corr.T) if c.stage1_steps > 0 else [0]
        lifespans = self.uses_lifespans()
        static_in_place = lifespans and not c.deform_static
        with_normals = c.init_thickness < 1.0
        rng = np.random.default_rng(c.deform_seed)
        pts, cols, moving_pts, moving_cols, moving_times = [], [], [], [], []
        for i in frames:
            p, col, moving = corr.frame_points(i, self.frame_images.get(corr.names[i]))
            if col is None:
                col = torch.full_like(p, 0.5)
            if with_normals:  # carried (and voxel-averaged) as three more colour channels
                col = torch.cat([col, corr.frame_normals(i)], -1)
            if not lifespans:
                moving = torch.zeros_like(moving)
            # The frame's moving points (lifespans) and a draw among the rest, each capped on its own.
            parts = [torch.where(moving)[0], torch.where(~moving)[0]]
            for k, cap in enumerate((c.init_moving_points_per_frame, c.init_points_per_frame)):
                if 0 < cap < len(parts[k]):
                    parts[k] = parts[k][torch.from_numpy(rng.choice(len(parts[k]), cap, replace=False))]
            keep = torch.cat(parts)
            p, col, moving = p[keep].to(self.device), col[keep], moving[keep]
            if c.stage1_steps > 0:
                # Gaussians that are never deformed (static ones, deform_static off) start where their frame saw them.
                warp = moving.to(p.device) if static_in_place else torch.ones(len(p), dtype=torch.bool, device=p.device)
                p = p.clone()
                t_i = float(corr.times[i])
                p[warp] = torch.cat([self.deform.to_canonical(chunk, t_i) for chunk in p[warp].split(65536)])
            if lifespans:
                moving_pts.append(p[moving.to(p.device)].cpu())
                moving_cols.append(col[moving])
                moving_times.append(torch.full((int(moving.sum()),), float(corr.times[i])))
                p, col = p[~moving.to(p.device)], col[~moving]
            if c.stage1_steps > 0 and c.init_consistency_frames > 0:
                keep = self.free_space_consistent(p, deformed=not static_in_place)
                p, col = p[keep], col[keep.cpu()]
            pts.append(p.cpu())
            cols.append(col)
        pts, cols = torch.cat(pts), torch.cat(cols)
        if c.stage1_steps > 0 and c.init_consistency_frames > 0:
            CONSOLE.log(f"modgs: free-space check kept {len(pts)} of the sampled static depth points")
        down_p, down_c = voxel_downsample(
            pts, cols, (pts.max(0).values - pts.min(0).values).max() / c.init_voxel_divisions
        )
        if len(down_p) >= c.init_min_points:
            pts, cols = down_p, down_c
        if len(pts) > c.init_max_points:
            keep = torch.from_numpy(rng.choice(len(pts), c.init_max_points, replace=False))
            pts, cols = pts[keep], cols[keep]
        times = torch.zeros(len(pts))
        widths = torch.full((len(pts),), STATIC_LOG_WIDTH)
        if lifespans and moving_pts:
            dt = float(np.median(np.diff(np.sort(corr.times)))) if corr.T > 1 else 1.0
            mt = torch.cat(moving_times)
            pts, cols = torch.cat([pts, *moving_pts]), torch.cat([cols, *moving_cols])
            times = torch.cat([times, mt])
            widths = torch.cat([widths, torch.full((len(mt),), math.log(c.moving_lifespan * dt))])
            CONSOLE.log(
                f"modgs: {len(mt)} Gaussians from moving pixels live {c.moving_lifespan:g} frame(s) around their frame"
            )
        normals = torch.nn.functional.normalize(cols[:, 3:], dim=-1) if with_normals else None
        return pts, cols[:, :3], times, widths, normals

    @torch.no_grad()
    def free_space_consistent(self, canonical: Tensor, deformed: bool = True) -> Tensor:
        """[N] bool: the canonical points that, warped to each check frame (left in place when not
        `deformed`), never float in front of the observed (aligned) depth where they are in view."""
        corr, c = self.correspondences, self.config
        bad = torch.zeros(len(canonical), dtype=torch.int32)
        for j in np.unique(np.linspace(0, corr.T - 1, c.init_consistency_frames).round().astype(int)):
            y = canonical
            if deformed:
                t_j = float(corr.times[j])
                y = torch.cat([self.deform.from_canonical(chunk, t_j) for chunk in canonical.split(65536)])
            uv, z = corr.project(y, j)
            u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
            inside = (u >= 0) & (u < corr.W) & (v >= 0) & (v < corr.H) & (z > 0)
            uc, vc = np.clip(u, 0, corr.W - 1), np.clip(v, 0, corr.H - 1)
            observed = corr.depth[j][vc, uc]
            check = inside & corr.valid[j][vc, uc]
            bad += torch.from_numpy((check & (z < observed * (1 - c.init_consistency_tolerance))).astype(np.int32))
        return (bad <= 0).to(canonical.device)

    @torch.no_grad()
    def initialize_canonical(self, optimizers: Optimizers, step: int) -> None:
        """Replace the Gaussians with the canonical point cloud, inside their optimizers."""
        if self.config.stage1_steps > 0 and self.config.stage1_eval_every > 0 and not self.config.static_scene:
            self.stage1_evaluate(step, final=True)  # the fit the canonical cloud is built with, in every run's log
        pts, rgb, times, widths, normals = self.canonical_points()
        n = len(pts)
        # Size from the 3 nearest neighbours living at the same time (all static points form one group).
        sq = torch.empty(n, 1)
        group = torch.where(widths >= STATIC_LOG_WIDTH, torch.full_like(times, -1.0), times)
        for g in torch.unique(group):
            idx = torch.where(group == g)[0]
            dist, _ = self.k_nearest_sklearn(pts[idx], min(3, max(len(idx) - 1, 1)))
            sq[idx] = torch.from_numpy(dist.astype(np.float32) ** 2).mean(-1, keepdim=True)
        sq = sq.clamp_min(1e-7)
        mortal = widths[:, None] < STATIC_LOG_WIDTH
        sq = torch.where(mortal, sq * self.config.init_moving_scale**2, sq)
        dim_sh = num_sh_bases(self.config.sh_degree)
        dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb.clamp(1e-4, 1 - 1e-4))
        log_scales = torch.log(torch.sqrt(sq)).repeat(1, 3)
        quats = torch.tensor([1.0, 0, 0, 0]).repeat(n, 1)
        if normals is not None:  # flat along the surface: the local z axis is the normal, thinner
            quats = quat_with_z_axis(normals)
            log_scales[:, 2] += math.log(self.config.init_thickness)
        new = {
            "means": pts,
            "scales": log_scales,
            "quats": quats,
            "features_dc": dc,
            "features_rest": torch.zeros(n, dim_sh - 1, 3),
            "opacities": torch.logit(torch.where(mortal, self.config.init_moving_opacity, 0.1)),
            "times": times[:, None],
            "time_scales": widths[:, None],
        }
        for name, value in new.items():
            if name in optimizers.optimizers:
                optimizers.optimizers[name].state.clear()  # fresh Adam moments for the new points
            self.gauss_params[name] = torch.nn.Parameter(value.to(self.device))
        self._rebind_optimizers(optimizers)
        # MoDGS re-creates the deformation's optimizer for stage 2.
        for name in ("deform", "deform_time"):
            if name in optimizers.optimizers:
                optimizers.optimizers[name].state.clear()
        # LRs and size thresholds are in normalized scene units (MoDGS scales the scene to
        # [-1, 1]); our world keeps its own units, so scale the means LR by the world extent.
        world = self.world_extent()
        sched = optimizers.schedulers.get("means")
        if sched is not None:
            sched.base_lrs = [lr * world for lr in sched.base_lrs]
            for group in optimizers.optimizers["means"].param_groups:
                group["lr"] *= world
        self.strategy_state = self.strategy.initialize_state(scene_scale=world)
        CONSOLE.log(f"[bold]modgs: canonical initialization at step {step}: {n} Gaussians")

    # ------------------------------------------------------------------ training hooks
    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        cbs = super().get_training_callbacks(training_callback_attributes)
        cbs.append(
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.initialize_canonical,
                iters=(self.config.stage1_steps,),
                args=[training_callback_attributes.optimizers],
            )
        )
        return cbs

    def step_cb(self, optimizers: Optimizers, step):
        """splatfacto's schedules (SH, densification) see the stage-2 step."""
        self._rebind_optimizers(optimizers)
        self.strategy_state["scene_scale"] = self.world_extent()  # also right after a resume
        keep = self.keeps_deformation(step)
        for p in self.deform.parameters():  # no gradient: Adam leaves it as it is
            p.requires_grad_(not keep)
        super().step_cb(optimizers, max(step - self.config.stage1_steps, 0))

    def keeps_deformation(self, step: int) -> bool:
        """Whether the deformation is left as stage 1 fitted it at this step (train_deformation_in_stage2)."""
        return not self.config.train_deformation_in_stage2 and self.uses_lifespans() and not self.in_stage1(step)

    def step_post_backward(self, step):
        if self.in_stage1(step):
            return  # nothing was rendered; the Gaussians are not being trained yet
        if self.step == 0:
            # gsplat resets every opacity to 2 * cull_alpha_thresh whenever step % reset_every == 0,
            # step 0 included: at the first stage-2 step that would erase the canonical cloud's initial
            # opacities (3DGS's first reset is at reset_every, never at its first step).
            return
        info, packed = self.info, False
        if getattr(self, "rendered_ids", None) is not None:
            # A subset was rendered: hand the strategy its statistics in packed form, indexed into all Gaussians.
            seen = info["radii"][0] > 0
            info = {
                **info,
                "gaussian_ids": self.rendered_ids[seen],
                "radii": info["radii"][0][seen],
                "means2d": types.SimpleNamespace(grad=info["means2d"].grad[0][seen]),
            }
            packed = True
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=self.step,
            info=info,
            packed=packed,
        )

    def _rebind_optimizers(self, optimizers: Optimizers) -> None:
        """After loading a checkpoint the Gaussian tensors are new objects; point Adam at them."""
        for name, param in self.gauss_params.items():
            if name not in optimizers.optimizers:
                continue
            opt = optimizers.optimizers[name]
            old = opt.param_groups[0]["params"][0]
            if old is param:
                continue
            state = opt.state.pop(old, None)
            opt.param_groups[0]["params"] = [param]
            if state is not None and all(
                not torch.is_tensor(v) or v.dim() == 0 or v.shape == param.shape for v in state.values()
            ):
                opt.state[param] = state
            optimizers.parameters[name] = [param]

    # ------------------------------------------------------------------ rendering
    def camera_time(self, camera: Cameras) -> float:
        if camera.times is None:
            return float(self.config.default_time)
        return float(camera.times.reshape(-1)[0])

    def deformed_means(self, means: Tensor, t: float) -> Tensor:
        """Canonical means [N,3] at time t [N,3]: the deformation at t, or (interpolate_between_frames,
        t strictly between two training frames' times) the linear blend of it at those two times."""
        if self.config.static_scene:
            return means
        times = self.frame_times
        if self.config.interpolate_between_frames and len(times) > 1 and times[0] < t < times[-1]:
            k = int(torch.searchsorted(times, torch.tensor(float(t), dtype=times.dtype)))
            t0, t1 = float(times[k - 1]), float(times[k])
            a = (t - t0) / (t1 - t0)
            if 1e-4 < a < 1 - 1e-4:  # at a frame's own time (float32 camera times) one evaluation, as in training
                return (1 - a) * self.deform.from_canonical(means, t0) + a * self.deform.from_canonical(means, t1)
        return self.deform.from_canonical(means, t)

    def lifespan_time(self, t: float) -> float:
        """The time whose lifespan weights apply at t: t, or (lifespans_between_frames nearest) the
        nearest training frame's time."""
        times = self.frame_times
        if self.config.lifespans_between_frames != "nearest" or len(times) == 0:
            return t
        return float(times[int(torch.argmin((times - t).abs()))])

    def lifespan_weights(self, t: float) -> Tensor:
        """[N] opacity factor of each Gaussian at time t: exp(-0.5 |(t - centre) / width|^p)."""
        centre = self.gauss_params["times"].squeeze(-1)
        width = torch.exp(self.gauss_params["time_scales"].squeeze(-1))
        return torch.exp(-0.5 * ((t - centre) / width).abs() ** self.config.lifespan_exponent)

    def has_lifespan(self, ids: Optional[Tensor] = None) -> Tensor:
        """[N] bool (or [M] for `ids`): the Gaussian lives only around its time (made from a frame's
        moving pixels); the others have STATIC_LOG_WIDTH and live at every time."""
        log_widths = self.gauss_params["time_scales"][:, 0]
        return (log_widths if ids is None else log_widths[ids]) < STATIC_LOG_WIDTH

    def gaussians_at(self, t: float, ids: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(indices [M] of the Gaussians alive at t among `ids` (default all), their means at t [M, 3],
        their opacities at t [M]). A Gaussian is alive when its lifespan weight is at least
        `lifespan_cutoff` (always, without lifespans)."""
        lifespans = self.uses_lifespans()
        if ids is None and not lifespans:  # everything, in order: no gather on the training hot path
            ids = torch.arange(len(self.means), device=self.means.device)
            return ids, self.deformed_means(self.means, t), torch.sigmoid(self.opacities).squeeze(-1)
        if ids is None:
            ids = torch.arange(len(self.means), device=self.means.device)
        opacity = torch.sigmoid(self.opacities[ids]).squeeze(-1)
        if lifespans:
            w = self.lifespan_weights(self.lifespan_time(t))[ids]
            alive = w >= self.config.lifespan_cutoff
            ids, opacity = ids[alive], opacity[alive] * w[alive]
            if not self.config.deform_static:
                means = self.means[ids]
                mortal = self.has_lifespan(ids)
                means_t = means.clone()
                means_t[mortal] = self.deformed_means(means[mortal], t)
                return ids, means_t, opacity
        return ids, self.deformed_means(self.means[ids], t), opacity

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        if not isinstance(camera, Cameras):
            return {}
        assert camera.shape[0] == 1, "Only one camera at a time"
        if self.training:
            c2w = self.camera_optimizer.apply_to_camera(camera)
        else:
            c2w = camera.camera_to_worlds
        t = self.camera_time(camera)

        ids = None
        if self.crop_box is not None and not self.training:
            ids = torch.where(self.crop_box.within(self.means).squeeze(-1))[0]
        ids, means_t, opacities_t = self.gaussians_at(t, ids)
        if len(ids) == 0:
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        # Which Gaussians were rendered, for the densification statistics (None: all of them, in order).
        self.rendered_ids = None if len(ids) == len(self.means) else ids

        def sel(x):
            return x if self.rendered_ids is None else x[ids]

        colors = torch.cat((sel(self.features_dc)[:, None, :], sel(self.features_rest)), dim=1)

        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        viewmat = get_viewmat(c2w)
        K = camera.get_intrinsics_matrices().to(self.device)
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale)

        if not self.training:
            render_mode = "RGB+ED"  # normalized depth for viewing
        elif self.config.depth_loss != "none":
            render_mode = "RGB+D"  # accumulated depth, as MoDGS's rasterizer gives it
        else:
            render_mode = "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)
            sh_degree = None

        render, alpha, self.info = rasterization(
            means=means_t,
            quats=sel(self.quats),
            scales=torch.exp(sel(self.scales)),
            opacities=opacities_t,
            colors=colors,
            viewmats=viewmat,
            Ks=K,
            width=W,
            height=H,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
            cpu_backend=self.config.cpu_rasterizer,
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        out = {"rgb": rgb.squeeze(0), "depth": None, "accumulation": alpha.squeeze(0), "background": background}
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            out["depth"] = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        elif render_mode == "RGB+D":
            out["depth_accumulated"] = render[..., 3:4].squeeze(0)
        if background.shape[0] == 3 and not self.training:
            out["background"] = background.expand(H, W, 3)
        return out

    # ------------------------------------------------------------------ losses and metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        if "mask" in batch:
            mask = self._downscale_if_required(batch["mask"]).to(self.device)
            gt, pred = gt * mask, pred * mask
        l1 = torch.abs(gt - pred).mean()
        dssim = 1 - self.ssim(gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
        loss_dict = {"main_loss": self.config.l1_lambda * l1 + self.config.dssim_lambda * dssim}
        if self.config.depth_loss != "none" and "depth_accumulated" in outputs and "depth_prior" in batch:
            loss_dict["depth_loss"] = self.config.depth_loss_weight * self.depth_loss(
                outputs["depth_accumulated"], batch["depth_prior"].to(self.device), batch["depth_valid"].to(self.device)
            )
        if self.training:
            self.camera_optimizer.get_loss_dict(loss_dict)
        return loss_dict

    def depth_loss(self, render: Tensor, prior: Tensor, valid: Tensor) -> Tensor:
        if self.config.depth_loss == "pearson":
            return pearson_depth_loss(render, prior, valid)
        # Rendered depth in the deformation's normalized units: alpha = 100 is tuned for [-1, 1].
        return ordinal_depth_loss(
            render * self.deform.scale, prior, valid, self.config.ordinal_pairs, self.config.ordinal_alpha
        )

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if "lpips" in metrics and math.isnan(metrics["lpips"]):
            del metrics["lpips"]
        if outputs.get("depth") is not None:
            images["depth"] = colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"])
        return metrics, images


def quat_with_z_axis(normals: Tensor) -> Tensor:
    """[N,4] unit wxyz quaternions (w >= 0) of rotations whose third column (the Gaussian's local z
    axis) is the unit vector `normals` [N,3]; the other two axes are any orthonormal pair around it."""
    helper = torch.where((normals[:, :1].abs() < 0.9), torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    t1 = torch.nn.functional.normalize(torch.cross(helper, normals, dim=-1), dim=-1)
    t2 = torch.cross(normals, t1, dim=-1)
    R = torch.stack([t1, t2, normals], -1)  # columns
    q = torch.from_numpy(vtf.SO3.from_matrix(R.double().numpy()).wxyz).to(normals.dtype)
    return torch.where(q[:, :1] < 0, -q, q)


def voxel_downsample(points: Tensor, colors: Tensor, voxel: Tensor | float) -> Tuple[Tensor, Tensor]:
    """Average points and colours per occupied voxel (as Open3D's voxel_down_sample)."""
    voxel = float(voxel)
    if voxel <= 0:
        return points, colors
    keys = torch.floor((points - points.min(0).values) / voxel).long()
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    n = len(counts)
    p = torch.zeros(n, 3, dtype=points.dtype).index_add_(0, inverse, points) / counts[:, None]
    c = torch.zeros(n, colors.shape[1], dtype=colors.dtype).index_add_(0, inverse, colors) / counts[:, None]
    return p, c
