"""The steps of modgs-preprocess other than the caches: intrinsics, poses, masks, the scene file and
seed points. Functions of the config and the frames state; the runner (run.py) keys and orders them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from rich.console import Console

from modgs_ns.preprocess.config import PreprocessConfig
from modgs_ns.preprocess.frames import IMAGE_EXTS, FrameSet
from modgs_ns.scene.caches import DepthCache
from modgs_ns.scene.errors import PreprocessError
from modgs_ns.scene.files import atomic_write, read_rgb
from modgs_ns.scene.format import camera_header, frame_record, write_ply_points

CONSOLE = Console(stderr=True, soft_wrap=True)  # messages stay one line


def read_frame(out: Path, name: str) -> np.ndarray:
    """A frame written by the frames step (RGB), when that step was skipped on a re-run."""
    return read_rgb(out / "images" / name)


def count_source(cfg: PreprocessConfig, meta_frames: dict) -> Optional[int]:
    """Frames in the source (to match a depth folder holding one file per source frame)."""
    if cfg.video:
        cap = cv2.VideoCapture(str(cfg.video))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return n if n > 0 else None
    src = Path(cfg.images or cfg.nerfstudio_data)
    if cfg.images:
        return sum(1 for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return len(json.loads((src / "transforms.json").read_text()).get("frames", []))


def intrinsics(cfg: PreprocessConfig, mf: dict, W: int, H: int) -> np.ndarray:
    """K of the written (resized) frames: from the input's transforms.json, or --fx/--fy/--cx/--cy
    (source pixels), or --fov-deg."""
    sw, sh = mf["source_size"]
    if mf.get("intrinsics"):
        k = mf["intrinsics"]
        if not all(np.isfinite(k[n]) for n in ("fl_x", "fl_y", "cx", "cy")) or min(k["fl_x"], k["fl_y"]) <= 0:
            raise PreprocessError(
                f"the input's transforms.json has unusable intrinsics {k} (focal lengths must be positive)"
            )
        fx, fy, cx, cy = k["fl_x"] * W / sw, k["fl_y"] * H / sh, k["cx"] * W / sw, k["cy"] * H / sh
    else:
        f = 0.5 * W / np.tan(np.radians(cfg.fov_deg) / 2)
        fx = cfg.fx * W / sw if cfg.fx else f
        fy = cfg.fy * H / sh if cfg.fy else fx
        cx = cfg.cx * W / sw if cfg.cx is not None else W / 2
        cy = cfg.cy * H / sh if cfg.cy is not None else H / 2
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def estimate_poses(
    cfg: PreprocessConfig, mode: str, out: Path, names: list, fs: Optional[FrameSet], mf: dict, K: np.ndarray
) -> tuple[np.ndarray, str]:
    T = len(names)
    if mode == "static":
        return np.tile(np.eye(4), (T, 1, 1)), "static (identity poses)"
    if mode == "given":
        return np.array(mf["poses"], dtype=np.float64), "given (input transforms.json)"
    from modgs_ns.preprocess import poses as P

    images = fs.images if fs is not None else [read_frame(out, n) for n in names]
    masks = (
        read_dynamic_masks(cfg.dynamic_masks, mf, images[0].shape[1], images[0].shape[0]) if cfg.dynamic_masks else None
    )
    if mode == "colmap":
        CONSOLE.print(f"modgs-preprocess: structure from motion (pycolmap, CPU) on {T} frames")
        try:
            return P.colmap_poses(images, K, masks, workdir=out), "colmap (pycolmap)"
        except P.PoseError as err:
            if not cfg.pose_fallback:
                raise
            CONSOLE.print(f"modgs-preprocess: warning: {err}; falling back to rotation-only poses")
            reason = f"rotation-only fallback ({err})"
    else:
        reason = "rotation-only"
    static = None if masks is None else [~m for m in masks]
    return P.rotation_poses(images, K, static, reference=T // 2), reason


def read_dynamic_masks(folder: Path, mf: dict, W: int, H: int) -> list:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (*IMAGE_EXTS, ".npy"))
    need = max(mf["source_index"]) + 1
    if len(files) < need:
        raise PreprocessError(
            f"--dynamic-masks {folder} has {len(files)} masks; the frames need {need} (one per source frame)"
        )
    out = []
    for k in mf["source_index"]:
        p = files[k]
        m = np.load(p) if p.suffix == ".npy" else cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise PreprocessError(f"cannot read mask {p}")
        out.append(cv2.resize((m > 0).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool))
    return out


def scene_meta(cfg: PreprocessConfig, mf: dict, poses: dict, depth_kind: str, W: int, H: int) -> dict:
    K = intrinsics(cfg, mf, W, H)
    frames = []
    for k, n in enumerate(mf["names"]):
        pose = poses["c2w"][k]
        frames.append(
            frame_record(
                f"images/{n}",
                pose,
                mf["times"][k],
                frame_index=k,
                depth_prior_path=f"depth_prior/{n.replace('.png', '.npy')}",
                source_frame_index=mf["source_index"][k],
                timestamp=mf["timestamps"][k],
            )
        )
    # A monocular video has no held-out camera: val/test are every eval_every-th training view.
    held = [f"images/{n}" for n in mf["names"][:: max(1, cfg.eval_every)]]
    return {
        **camera_header(K, W, H),
        "frames": frames,
        "train_filenames": [f"images/{n}" for n in mf["names"]],
        "val_filenames": held,
        "test_filenames": held,
        "ply_file_path": "points3d.ply",
        "modgs": {
            "format_version": 1,
            "source": "modgs-preprocess",
            "num_frames": len(frames),
            "depth_prior": {"dir": "depth_prior", "format": "npy", "kind": depth_kind},
            "seed_points": "points3d.ply",
            "pairs": asdict(cfg.pairs),
            "preprocess": {
                "input": mf["source"],
                "stride": cfg.stride,
                "max_side": cfg.max_side,
                "camera": poses["method"],
            },
        },
    }


def write_seed_points(out: Path, meta: dict, n: int) -> None:
    """Seed Gaussians from the aligned depth of the first frame (replaced at the canonical init)."""
    cache = DepthCache.load(out)
    depth = cache.depth[0]
    img = read_rgb(out / "images" / cache.names[0])
    pts = cache.points(0).reshape(-1, 3)
    ok = np.flatnonzero(np.isfinite(pts).all(-1) & (depth.reshape(-1) > 0))
    pick = np.random.default_rng(0).choice(ok, size=min(n, len(ok)), replace=False)
    atomic_write(out / "points3d.ply", lambda tmp: write_ply_points(tmp, pts[pick], img.reshape(-1, 3)[pick]))
