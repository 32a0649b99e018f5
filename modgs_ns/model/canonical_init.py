"""The canonical initialization at the switch (method reference §4): every frame's valid depth points
warped to canonical space by the stage-1 deformation, voxel-downsampled and capped, as Gaussians.

A function from the scene's point maps and masks (`data.correspondences.Correspondences`) and the
deformation to a tensor dict in splatfacto's `gauss_params` layout (plus the lifespan tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import viser.transforms as vtf
from nerfstudio.models.splatfacto import RGB2SH, num_sh_bases
from torch import Tensor

from modgs_ns.model.deformation import Deformation
from modgs_ns.model.lifespans import STATIC_LOG_WIDTH, LifespanConfig
from modgs_ns.model.stage1 import from_canonical, to_canonical
from modgs_ns.scene.errors import ConfigError

FREE_SPACE_TOLERANCE = 0.05
"""Relative depth margin of the free-space check."""
INIT_OPACITY = 0.1
"""Initial opacity of every canonical Gaussian (3DGS)."""


@dataclass
class CanonicalInitConfig:
    """How the canonical Gaussians are built from the frames' depth points at the switch."""

    points_per_frame: int = 0
    """Depth points taken per frame before warping (0 = all, as MoDGS); with lifespans, among the
    frame's static points."""
    voxel_divisions: int = 500
    """Voxel = largest canonical extent / this (MoDGS: 500)."""
    min_points: int = 100000
    """If voxel downsampling leaves fewer points, keep the full cloud (MoDGS: 100k)."""
    max_points: int = 300000
    """Random subset beyond this many points (MoDGS: 300k)."""
    consistency_frames: int = 8
    """Free-space check: a point warped to this many frames spread over the video must never float in
    front of what they observe (a wrong long-range warp would render as a ghost). 0 = off (MoDGS)."""
    thickness: float = 1.0
    """Initial size along the surface normal of the frame's depth map, as a fraction of the size along
    the surface (1 = spheres, as 3DGS and MoDGS; below 1, flat discs on the observed surface)."""

    def check(self, flag: str = "--pipeline.model.canonical-init.") -> None:
        for name, ok, valid in (
            ("points-per-frame", self.points_per_frame >= 0, ">= 0 (0 = all)"),
            ("voxel-divisions", self.voxel_divisions >= 0, ">= 0 (0 = no downsampling)"),
            ("max-points", self.max_points > 0, "> 0"),
            ("consistency-frames", self.consistency_frames >= 0, ">= 0 (0 = off)"),
            ("thickness", 0 < self.thickness <= 1, "in (0, 1]"),
        ):
            if not ok:
                raise ConfigError(f"{flag}{name} must be {valid}, got {getattr(self, name.replace('-', '_'))}")


@torch.no_grad()
def canonical_points(
    corr,
    deform: Deformation,
    cfg: CanonicalInitConfig,
    warped: bool,
    lifespans: Optional[LifespanConfig],
    images: Optional[Dict[int, Tensor]] = None,
    seed: int = 0,
) -> Dict[str, Tensor]:
    """Canonical points [N,3] ("means") with their colours in [0, 1] ("rgb" [N,3]), lifespan centres and
    log widths ("times", "log_widths" [N]) and, with thickness < 1, unit surface normals ("normals" [N,3]).

    `warped`: stage 1 ran (all frames, warped to canonical space; else frame 0 as it is). `lifespans`
    (None = off): a frame's moving points keep its time and skip the free-space check and the merge
    across frames. `images`: frame index -> [H,W,3] uint8 image for the colours (grey without)."""
    frames = range(corr.T) if warped else [0]
    static_in_place = lifespans is not None and not lifespans.deform_static
    with_normals = cfg.thickness < 1.0
    rng = np.random.default_rng(seed)
    moving_cap = lifespans.moving_points_per_frame if lifespans is not None else 0
    still, moving_parts = [], []
    for i in frames:
        p, col, moving = corr.frame_points(i, None if images is None else images.get(i))
        if col is None:
            col = torch.full_like(p, 0.5)
        attrs = {"rgb": col, **({"normals": corr.frame_normals(i)} if with_normals else {})}
        if lifespans is None:
            moving = torch.zeros_like(moving)
        # The frame's moving points (lifespans) and a draw among the rest, each capped on its own.
        parts = [torch.where(moving)[0], torch.where(~moving)[0]]
        for k, cap in enumerate((moving_cap, cfg.points_per_frame)):
            if 0 < cap < len(parts[k]):
                parts[k] = parts[k][torch.from_numpy(rng.choice(len(parts[k]), cap, replace=False))]
        keep = torch.cat(parts)
        p, moving, attrs = p[keep], moving[keep], {k: v[keep] for k, v in attrs.items()}
        t_i = float(corr.times[i])
        if warped:
            # Gaussians that are never deformed (static ones, deform_static off) start where their frame saw them.
            warp = moving if static_in_place else torch.ones(len(p), dtype=torch.bool)
            p = p.clone()
            p[warp] = to_canonical(deform, p[warp].to(deform.scale.device), t_i).to(p.device)
        if lifespans is not None:
            moving_parts.append((p[moving], {k: v[moving] for k, v in attrs.items()}, t_i))
            p, attrs = p[~moving], {k: v[~moving] for k, v in attrs.items()}
        if warped and cfg.consistency_frames > 0:
            ok = free_space_consistent(corr, deform, p, cfg.consistency_frames, deformed=not static_in_place)
            p, attrs = p[ok], {k: v[ok] for k, v in attrs.items()}
        still.append((p, attrs))
    pts = torch.cat([p for p, _ in still])
    attrs = {k: torch.cat([a[k] for _, a in still]) for k in still[0][1]}
    if warped and cfg.consistency_frames > 0:
        print(f"modgs: free-space check kept {len(pts)} of the sampled static depth points", flush=True)
    voxel = (pts.max(0).values - pts.min(0).values).max() / cfg.voxel_divisions if cfg.voxel_divisions else 0.0
    down_p, down_a = voxel_downsample(pts, attrs, voxel)
    if len(down_p) >= cfg.min_points:
        pts, attrs = down_p, down_a
    if len(pts) > cfg.max_points:
        keep = torch.from_numpy(rng.choice(len(pts), cfg.max_points, replace=False))
        pts, attrs = pts[keep], {k: v[keep] for k, v in attrs.items()}
    times = torch.zeros(len(pts))
    widths = torch.full((len(pts),), STATIC_LOG_WIDTH)
    if lifespans is not None and moving_parts:
        dt = float(np.median(np.diff(np.sort(corr.times)))) if corr.T > 1 else 1.0
        mt = torch.cat([torch.full((len(p),), t) for p, _, t in moving_parts])
        pts = torch.cat([pts, *(p for p, _, _ in moving_parts)])
        attrs = {k: torch.cat([v, *(a[k] for _, a, _ in moving_parts)]) for k, v in attrs.items()}
        times = torch.cat([times, mt])
        widths = torch.cat([widths, torch.full((len(mt),), math.log(lifespans.width * dt))])
        print(f"modgs: {len(mt)} Gaussians from moving pixels live {lifespans.width:g} frame(s) around their frame")
    out = {"means": pts, "rgb": attrs["rgb"], "times": times, "log_widths": widths}
    if with_normals:
        out["normals"] = torch.nn.functional.normalize(attrs["normals"], dim=-1)
    return out


def gaussians_from_points(
    points: Dict[str, Tensor], thickness: float, sh_degree: int, knn: Callable[[Tensor, int], Tuple]
) -> Dict[str, Tensor]:
    """splatfacto's Gaussian parameters for `canonical_points`' output: sizes from the 3 nearest
    neighbours living at the same time (all static points form one group, `knn(points, k)` ->
    (distances [N,k], indices)), flat along the normals when given, opacity 0.1, SH from the colours."""
    pts, rgb, times, widths = points["means"], points["rgb"], points["times"], points["log_widths"]
    n = len(pts)
    sq = torch.empty(n, 1)
    group = torch.where(widths >= STATIC_LOG_WIDTH, torch.full_like(times, -1.0), times)
    for g in torch.unique(group):
        idx = torch.where(group == g)[0]
        dist, _ = knn(pts[idx], min(3, max(len(idx) - 1, 1)))
        sq[idx] = torch.from_numpy(dist.astype(np.float32) ** 2).mean(-1, keepdim=True)
    sq = sq.clamp_min(1e-7)
    dc = RGB2SH(rgb) if sh_degree > 0 else torch.logit(rgb.clamp(1e-4, 1 - 1e-4))
    log_scales = torch.log(torch.sqrt(sq)).repeat(1, 3)
    quats = torch.tensor([1.0, 0, 0, 0]).repeat(n, 1)
    if "normals" in points:  # flat along the surface: the local z axis is the normal, thinner
        quats = quat_with_z_axis(points["normals"])
        log_scales[:, 2] += math.log(thickness)
    return {
        "means": pts,
        "scales": log_scales,
        "quats": quats,
        "features_dc": dc,
        "features_rest": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3),
        "opacities": torch.logit(torch.full((n, 1), INIT_OPACITY)),
        "times": times[:, None],
        "time_scales": widths[:, None],
    }


@torch.no_grad()
def free_space_consistent(corr, deform: Deformation, canonical: Tensor, frames: int, deformed: bool = True) -> Tensor:
    """[N] bool: the canonical points [N,3] that, warped to `frames` frames spread over the video (left in
    place when not `deformed`), never float in front of the observed (aligned) depth where in view."""
    bad = torch.zeros(len(canonical), dtype=torch.int32)
    for j in np.unique(np.linspace(0, corr.T - 1, frames).round().astype(int)):
        y = from_canonical(deform, canonical, float(corr.times[j])) if deformed else canonical
        uv, z = corr.project(y, j)
        u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        inside = (u >= 0) & (u < corr.W) & (v >= 0) & (v < corr.H) & (z > 0)
        uc, vc = np.clip(u, 0, corr.W - 1), np.clip(v, 0, corr.H - 1)
        observed = corr.depth[j][vc, uc]
        check = inside & corr.valid[j][vc, uc]
        bad += torch.from_numpy((check & (z < observed * (1 - FREE_SPACE_TOLERANCE))).astype(np.int32))
    return (bad <= 0).to(canonical.device)


def quat_with_z_axis(normals: Tensor) -> Tensor:
    """[N,4] unit wxyz quaternions (w >= 0) of rotations whose third column (the Gaussian's local z
    axis) is the unit vector `normals` [N,3]; the other two axes are any orthonormal pair around it."""
    helper = torch.where((normals[:, :1].abs() < 0.9), torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    t1 = torch.nn.functional.normalize(torch.cross(helper, normals, dim=-1), dim=-1)
    t2 = torch.cross(normals, t1, dim=-1)
    R = torch.stack([t1, t2, normals], -1)  # columns
    q = torch.from_numpy(vtf.SO3.from_matrix(R.double().numpy()).wxyz).to(normals.dtype)
    return torch.where(q[:, :1] < 0, -q, q)


def voxel_downsample(
    points: Tensor, attrs: Dict[str, Tensor], voxel: Tensor | float
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Points [N,3] and per-point attributes ([N,C] each) averaged per occupied voxel (as Open3D's
    voxel_down_sample)."""
    voxel = float(voxel)
    if voxel <= 0:
        return points, attrs
    keys = torch.floor((points - points.min(0).values) / voxel).long()
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    n = len(counts)

    def mean(x: Tensor) -> Tensor:
        return torch.zeros(n, x.shape[1], dtype=x.dtype).index_add_(0, inverse, x) / counts[:, None]

    return mean(points), {k: mean(v) for k, v in attrs.items()}
