"""The modgs scene format: nerfstudio's transforms.json plus per-frame time and depth prior.

Keys read on top of nerfstudio's (see README, "Scene format"):
  frames[i].time              normalized time in [0, 1]
  frames[i].depth_prior_path  per-frame monocular depth prior (.npy float32, HxW), training frames
  frames[i].camera            which physical camera ("train", "test0", ...)
  frames[i].gt_depth_path / dynamic_mask_path   optional ground truth (generated scenes)
  train_filenames / val_filenames / test_filenames   the split
  modgs                       block naming the caches and where the scene came from
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from modgs_ns.scene.errors import SceneFormatError
from modgs_ns.scene.files import atomic_write

TRANSFORMS = "transforms.json"


def write_json_atomic(path: Path, obj, allow_nan: bool = False) -> None:
    """Write JSON atomically (`files.atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, allow_nan=allow_nan)))


def writable_dir_problem(path: Path, flag: str) -> str:
    """'' when `path` is (or can be made) a folder this process can write into; else the one-line reason.
    Checked before a long load, so a bad output folder fails in a second."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe = Path(path) / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return f"cannot write to {flag} {path} ({err.strerror or err})"
    return ""


def camera_header(K: np.ndarray, width: int, height: int) -> dict:
    """transforms.json's shared intrinsics: a pinhole OPENCV camera without distortion."""
    K = np.asarray(K, dtype=float)
    return {
        "camera_model": "OPENCV",
        "w": int(width),
        "h": int(height),
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
    }


def frame_record(file_path: str, c2w, time: float, camera: str = "train", frame_index: int = 0, **extra) -> dict:
    """One transforms.json frame: nerfstudio's file_path and OpenGL camera-to-world, modgs's time and
    physical camera; `extra`: optional keys (depth_prior_path, gt_depth_path, dynamic_mask_path, ...)."""
    return {
        "file_path": str(file_path),
        "transform_matrix": np.asarray(c2w, dtype=float).tolist(),
        "time": float(time),
        "camera": camera,
        "frame_index": int(frame_index),
        **extra,
    }


def write_scene(root: Path, meta: dict) -> None:
    """The one writer of a scene's transforms.json (modgs-preprocess and modgs-synth)."""
    write_json_atomic(Path(root) / TRANSFORMS, meta)


def write_ply_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float xyz and uchar rgb (what open3d and nerfstudio read)."""
    xyz = np.asarray(xyz, dtype=np.float32)
    rgb = np.asarray(rgb, dtype=np.uint8)
    rec = np.empty(
        len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["red"], rec["green"], rec["blue"] = rgb.T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def load_scene_meta(data: Path) -> tuple[Path, dict]:
    """(scene dir, parsed transforms.json) for a scene folder or a path to its json file."""
    data = Path(data)
    if data.suffix == ".json":
        path, root = data, data.parent
    else:
        path, root = data / TRANSFORMS, data
    if not root.is_dir():
        raise SceneFormatError(f"scene folder {root} does not exist")
    if not path.is_file():
        raise SceneFormatError(f"no {path.name} in {root} (generate a scene with modgs-synth or modgs-preprocess)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneFormatError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not meta.get("frames"):
        raise SceneFormatError(f"{path} has no frames")
    return root, meta


def training_frames(meta: dict) -> list[dict]:
    if "train_filenames" in meta:
        names = {Path(p).name for p in meta["train_filenames"]}
        return [f for f in meta["frames"] if Path(f.get("file_path", "")).name in names]
    return list(meta["frames"])


def training_frame_at(train: list[dict], time: float) -> dict:
    """The training frame shown at `time`: the one nearest in time (the rule for placing held-out
    cameras and for the copy floor alike)."""
    return min(train, key=lambda f: abs(float(f["time"]) - float(time)))


def scene_warnings(meta: dict) -> list[str]:
    """What is legal but probably wrong in a scene (one line each)."""
    times = [float(f["time"]) for f in training_frames(meta)]
    dup = len(times) - len(set(times))
    return (
        [f"{dup} training frame(s) share a time with another; they will be fitted as the same instant"] if dup else []
    )


def validate_scene(root: Path, meta: dict, require_prior: bool = True) -> None:
    """Check what the dataparser and model will read, so that a bad scene fails in one clear line."""
    names = set()
    for i, f in enumerate(meta["frames"]):
        if "file_path" not in f:
            raise SceneFormatError(f"frame {i} has no file_path")
        name = Path(f["file_path"]).name
        if name in names:
            raise SceneFormatError(f"two frames share the image name {name}; names must be unique")
        names.add(name)
        if not (root / f["file_path"]).is_file():
            raise SceneFormatError(f"missing image {root / f['file_path']}")
        t = f.get("time")
        if not isinstance(t, (int, float)) or not (0.0 <= float(t) <= 1.0):
            raise SceneFormatError(f"frame {f['file_path']} needs a 'time' in [0, 1] (got {t!r})")
    for key in ("fl_x", "fl_y"):
        v = meta.get(key)
        if not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise SceneFormatError(f"transforms.json needs a positive finite {key} (got {v!r})")
    if not require_prior:
        return
    if len(training_frames(meta)) < 2:
        raise SceneFormatError(
            f"the scene has {len(training_frames(meta))} training frame(s); a video needs at least 2"
        )
    missing = []
    for f in training_frames(meta):
        p = f.get("depth_prior_path")
        if not p:
            missing.append(f"{f['file_path']} has no depth_prior_path")
        elif not (root / p).is_file():
            missing.append(f"missing depth prior file {root / p}")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SceneFormatError(missing[0] + more)


PRIOR_KINDS = ("relative_depth", "metric_depth", "disparity")
"""What a scene's prior files hold: depth known up to scale and shift, metric depth, or affine-invariant
disparity (inverse depth up to scale and shift: Depth Anything V2 "relative", MiDaS, DPT)."""


def prior_kind(meta: dict) -> str:
    kind = meta.get("modgs", {}).get("depth_prior", {}).get("kind", "relative_depth")
    if kind not in PRIOR_KINDS:
        raise SceneFormatError(f"modgs.depth_prior.kind is {kind!r}; expected one of {', '.join(PRIOR_KINDS)}")
    return kind


def load_depth_prior(
    path: Path, height: int, width: int, kind: str = "relative_depth"
) -> tuple[np.ndarray, np.ndarray]:
    """(prior [H,W] float32, valid [H,W] bool), resized to the image size when it was downscaled.
    Depth priors are valid where finite and positive (0 = no depth); disparity wherever finite (its
    unknown shift makes any sign possible)."""
    import cv2

    path = Path(path)
    try:
        depth = np.load(path).astype(np.float32)
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty (0-byte) file
        raise SceneFormatError(f"cannot read depth prior {path} ({err})") from None
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise SceneFormatError(f"depth prior {path} has shape {depth.shape}, expected HxW")
    if depth.shape != (height, width):
        h, w = depth.shape
        if abs(h / w - height / width) > 0.02:
            raise SceneFormatError(f"depth prior {path} is {w}x{h}, its image is {width}x{height}")
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    valid = np.isfinite(depth) & ((depth > 0) | (kind == "disparity"))
    return np.where(valid, depth, 0.0).astype(np.float32), valid
