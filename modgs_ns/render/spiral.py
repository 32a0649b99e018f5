"""A small spiral around the training camera, focused at the scene's depth, sweeping time.

MoDGS renders novel views this way: the camera circles the (static) training viewpoint while
looking at a point at the scene's median depth, so parallax reveals the 3D structure.
"""

from __future__ import annotations

import numpy as np


def spiral_poses(
    c2w: np.ndarray, focus_depth: float, num_frames: int, radius: float, rotations: float = 1.0
) -> np.ndarray:
    """[N,4,4] camera-to-world (OpenGL) on a circle of `radius` in the camera's image plane."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0, 0, 0, 1]])
    R, p0 = c2w[:3, :3], c2w[:3, 3]
    focus = p0 - R[:, 2] * focus_depth  # the camera looks along -z
    up = R[:, 1]
    out = []
    for i in range(num_frames):
        a = 2 * np.pi * rotations * i / max(num_frames, 1)
        eye = p0 + R @ np.array([radius * np.cos(a), radius * np.sin(a), 0.0])
        z = eye - focus
        z /= np.linalg.norm(z)
        x = np.cross(up, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
        out.append(m)
    return np.stack(out)


def sweep_times(num_frames: int, fixed_time: float | None = None) -> np.ndarray:
    """Times 0 -> 1 over the path, or a constant."""
    if fixed_time is not None:
        return np.full(num_frames, float(fixed_time))
    return np.linspace(0.0, 1.0, num_frames)
