"""Write the generated dynamic scene in the modgs scene format (see README, "Scene format")."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
from rich.progress import Progress

from modgs_ns.scene.format import camera_header, frame_record, write_ply_points, write_scene
from modgs_ns.synth import scene as S
from modgs_ns.synth.depth_prior import PriorDistortion, frame_affine, simulate_prior


@dataclass
class SynthConfig:
    num_frames: int = 48
    """Frames (times) of the video."""
    width: int = 320
    """Image width, pixels."""
    height: int = 240
    """Image height, pixels."""
    seed: int = 0
    """Seed of the scene layout, motion phases and prior distortion."""
    camera_motion: Literal["static", "orbit"] = "static"
    """static: a tripod video (the released MoDGS setting); orbit: the training camera slowly orbits."""
    orbit_degrees: float = 8.0
    """Total yaw swept by the training camera in orbit mode."""
    motion_amplitude: float = 1.0
    """Scales the objects' translation, rotation and deformation."""
    objects: Literal["all", "rigid", "nonrigid", "hard"] = "all"
    """Dynamic objects: all; rigid (rolling ball, turning box); nonrigid (the pulsating blob only);
    hard (four objects moving about 8-20 px/frame at 40 frames of 256x192, spinning, one deforming,
    occluding each other)."""
    test_yaws: tuple[float, ...] = (15.0, -15.0)
    """Held-out cameras: yaw (degrees) about the scene centre relative to the training camera."""
    fov_x_degrees: float = 60.0
    """Horizontal field of view of every camera."""
    supersample: int = 2
    """Rays per pixel side (anti-aliasing)."""
    num_seed_points: int = 3000
    """Points of points3d.ply."""
    val_every: int = 6
    """Every n-th time of each test camera goes into the (fast) val split used during training."""
    wall_height: Optional[float] = None
    """Metres; the back wall ends there and sky (infinite depth) shows above it. None: no sky."""
    prior: PriorDistortion = field(default_factory=PriorDistortion)
    """How the simulated depth prior is distorted."""


def _train_pose(cfg: SynthConfig, t: float) -> np.ndarray:
    if cfg.camera_motion == "orbit":
        return S.orbit_pose(cfg.orbit_degrees * (t - 0.5))
    return S.orbit_pose(0.0)


def _seed_points(depth, rgb, c2w, K, n, seed):
    """Sparse coloured points from the first training frame (a stand-in for SfM/sensor points)."""
    h, w = depth.shape
    rng = np.random.default_rng([seed, 3])
    idx = rng.choice(h * w, size=min(n, h * w), replace=False)
    v, u = np.divmod(idx, w)
    z = depth.reshape(-1)[idx]
    ok = np.isfinite(z)
    u, v, z, idx = u[ok], v[ok], z[ok], idx[ok]
    x_cv = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], -1)
    x_gl = x_cv * np.array([1.0, -1.0, -1.0])
    pts = x_gl @ c2w[:3, :3].T + c2w[:3, 3]
    cols = (rgb.reshape(-1, 3)[idx] * 255).round().astype(np.uint8)
    return pts.astype(np.float32), cols


def generate_scene(cfg: SynthConfig, output_dir: Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Render every camera at every time and write the scene; atomic (a temp dir renamed at the end)."""
    output_dir = Path(output_dir)
    if cfg.num_frames < 2 or cfg.width < 16 or cfg.height < 16:
        raise ValueError("need at least 2 frames and 16x16 pixels")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty (pass --overwrite to replace it)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        _write(cfg, tmp, progress)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def _write(cfg: SynthConfig, root: Path, progress: bool) -> None:
    for sub in ("images", "depth_gt", "masks", "depth_prior"):
        (root / sub).mkdir()
    T, W, H = cfg.num_frames, cfg.width, cfg.height
    K = S.intrinsics(W, H, cfg.fov_x_degrees)
    params = S.SceneParams(
        motion_amplitude=cfg.motion_amplitude, seed=cfg.seed, objects=cfg.objects, wall_height=cfg.wall_height
    )
    scales, shifts = frame_affine(T, cfg.seed, cfg.prior)
    cameras = [("train", None)] + [(f"test{i}", yaw) for i, yaw in enumerate(cfg.test_yaws)]
    frames, train_names, val_names, test_names = [], [], [], []
    seeds = None
    with Progress(disable=not progress) as bar:
        task = bar.add_task("modgs-synth: ray casting", total=T * len(cameras))
        for k in range(T):
            t = k / (T - 1)
            prims = S.scene_at(t, params)
            for cam, yaw in cameras:
                c2w = _train_pose(cfg, t) if yaw is None else S.orbit_pose(yaw)
                rgb, depth, dyn = S.render(prims, c2w, K, W, H, cfg.supersample)
                name = f"{cam}_{k:05d}"
                img_path = f"images/{name}.png"
                cv2.imwrite(str(root / img_path), cv2.cvtColor((rgb * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
                np.save(root / f"depth_gt/{name}.npy", depth)
                cv2.imwrite(str(root / f"masks/{name}.png"), dyn.astype(np.uint8) * 255)
                frame = frame_record(
                    img_path,
                    c2w,
                    t,
                    camera=cam,
                    frame_index=k,
                    gt_depth_path=f"depth_gt/{name}.npy",
                    dynamic_mask_path=f"masks/{name}.png",
                )
                if yaw is None:
                    prior = simulate_prior(depth, k, T, scales[k], shifts[k], cfg.seed, cfg.prior)
                    frame["depth_prior_path"] = f"depth_prior/{name}.npy"
                    np.save(root / frame["depth_prior_path"], prior)
                    train_names.append(img_path)
                    if k == 0:
                        seeds = _seed_points(depth, rgb, c2w, K, cfg.num_seed_points, cfg.seed)
                else:
                    test_names.append(img_path)
                    if k % cfg.val_every == 0:
                        val_names.append(img_path)
                frames.append(frame)
                bar.advance(task)
    write_ply_points(root / "points3d.ply", *seeds)
    meta = {
        **camera_header(K, W, H),
        "frames": frames,
        "train_filenames": train_names,
        "val_filenames": val_names,
        "test_filenames": test_names,
        "ply_file_path": "points3d.ply",
        "modgs": {
            "format_version": 1,
            "source": "modgs-synth",
            "num_frames": T,
            "depth_prior": {
                "dir": "depth_prior",
                "format": "npy",
                "kind": "disparity" if cfg.prior.kind == "disparity" else "relative_depth",
            },
            "seed_points": "points3d.ply",
            "caches": {},
            "ground_truth": {
                "depth_dir": "depth_gt",
                "dynamic_mask_dir": "masks",
                "units": "metres",
                "prior_scale": scales.tolist(),
                "prior_shift": shifts.tolist(),
            },
            "synth": {k: v for k, v in asdict(cfg).items()},
        },
    }
    write_scene(root, meta)
