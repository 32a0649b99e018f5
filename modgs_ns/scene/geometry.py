"""Camera geometry of the scene format, stated once.

Poses are nerfstudio camera-to-world matrices (OpenGL camera axes: x right, y up, looking down -z).
Intrinsics K are OpenCV's, in image coordinates whose origin is the top-left corner of the top-left
pixel: the centre of pixel (column i, row j) is at (i + 0.5, j + 0.5). Flow and array lookups index
pixels by their centres at integers, so `project` returns those (K coordinates minus 0.5).
"""

from __future__ import annotations

import numpy as np

CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips y and z: OpenCV camera axes <-> OpenGL camera axes
FLIP = CV_TO_GL[:3, :3]


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [H,W] of every pixel centre in K's coordinates."""
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def unproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points [H,W,3] (float32) of a z-depth map [H,W] seen by camera (K, c2w)."""
    u, v = pixel_centres(*depth.shape)
    cam_cv = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    c2w = np.asarray(c2w)
    return (cam_cv @ FLIP @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32)


def w2c_cv(c2w: np.ndarray) -> np.ndarray:
    """World -> OpenCV camera (4x4) of a nerfstudio (OpenGL) camera-to-world (3x4 or 4x4)."""
    m = np.eye(4)
    m[:3] = np.asarray(c2w, dtype=np.float64)[:3]
    return np.linalg.inv(m @ CV_TO_GL)


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel coordinates [...,2] with pixel centres at integers, z-depth [...]) of world points [...,3]."""
    w2c = w2c_cv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[..., 2]
    zs = np.where(np.abs(z) > 1e-9, z, 1e-9)
    uv = np.stack([K[0, 0] * pc[..., 0] / zs + K[0, 2] - 0.5, K[1, 1] * pc[..., 1] / zs + K[1, 2] - 0.5], -1)
    return uv, z
