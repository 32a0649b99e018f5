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

from pathlib import Path

import numpy as np

TRANSFORMS = "transforms.json"


def write_ply_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY with float xyz and uchar rgb (what open3d and nerfstudio read)."""
    xyz = np.asarray(xyz, dtype=np.float32)
    rgb = np.asarray(rgb, dtype=np.uint8)
    rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
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
