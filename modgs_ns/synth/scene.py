"""The generated dynamic scene: a textured room with moving, rotating and deforming objects.

World frame: y up, the training camera looks along -z (nerfstudio/OpenGL convention).
Units are metres. Object ids: 0 wall, 1 floor, >= 2 dynamic objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from modgs_ns.synth.raycast import Box, Ellipsoid, Plane, cast, rotation_matrix

LIGHT_DIR = np.array([0.35, 0.8, 0.5]) / np.linalg.norm([0.35, 0.8, 0.5])
SKY = np.array([0.62, 0.76, 0.92])  # colour of rays that hit nothing
TARGET = np.array([0.0, 0.6, -4.6])  # the point the cameras look at (scene centre)
TRAIN_EYE = np.array([0.0, 1.1, 0.0])
FIRST_DYNAMIC_ID = 2


# ----------------------------------------------------------------------------- textures
def _checker(u, v, size):
    return ((np.floor(u / size) + np.floor(v / size)) % 2).astype(np.float64)


def wall_texture(local):
    u, v = local[:, 0], local[:, 1]
    base = np.stack(
        [
            0.55 + 0.25 * np.sin(1.3 * u + 0.4),
            0.50 + 0.20 * np.sin(1.1 * v + 1.7 * np.sin(0.5 * u)),
            0.60 + 0.25 * np.cos(0.9 * u - 0.7 * v),
        ],
        -1,
    )
    # Brick rows with mortar lines; every other row is offset by half a brick.
    row = np.floor(v / 0.4) % 2
    mortar = (np.mod(v, 0.4) < 0.03) | (np.mod(u + 0.3 * row, 0.6) < 0.03)
    bricks = np.where(mortar, 0.45, 1.0)[:, None]
    return np.clip(base * bricks, 0, 1)


def floor_texture(local):
    u, v = local[:, 0], local[:, 1]
    c = _checker(u, v, 0.5)[:, None]
    a = np.array([0.82, 0.78, 0.66])
    b = np.array([0.35, 0.30, 0.28])
    tint = 0.9 + 0.1 * np.sin(0.7 * u)[:, None]
    return np.clip((c * a + (1 - c) * b) * tint, 0, 1)


def _sphere_uv(local):
    p = local / (np.linalg.norm(local, axis=-1, keepdims=True) + 1e-12)
    lon = np.arctan2(p[:, 0], p[:, 2])
    lat = np.arcsin(np.clip(p[:, 1], -1, 1))
    return lon, lat


def ball_texture(local):
    lon, lat = _sphere_uv(local)
    stripes = (np.sin(4 * lon) > 0).astype(np.float64)[:, None]
    band = (np.abs(lat) < 0.35).astype(np.float64)[:, None]
    red = np.array([0.9, 0.2, 0.15])
    yellow = np.array([0.95, 0.85, 0.2])
    blue = np.array([0.15, 0.3, 0.85])
    return stripes * red + (1 - stripes) * yellow * (1 - band) + (1 - stripes) * band * blue


def blob_texture(local):
    lon, lat = _sphere_uv(local)
    dots = (np.sin(5 * lon) * np.sin(5 * lat) > 0.2).astype(np.float64)[:, None]
    return dots * np.array([0.95, 0.95, 0.95]) + (1 - dots) * np.array([0.2, 0.65, 0.3])


def box_texture(local):
    c = _checker(local[:, 0] + local[:, 1] * 0.0 + 1.0, local[:, 1] + local[:, 2] + 1.0, 0.18)[:, None]
    return c * np.array([0.95, 0.55, 0.1]) + (1 - c) * np.array([0.35, 0.1, 0.45])


# ----------------------------------------------------------------------------- scene
@dataclass
class SceneParams:
    motion_amplitude: float = 1.0
    """Scales the objects' translation, rotation and deformation."""
    seed: int = 0
    """Per-seed variation of phases and positions."""
    wall_height: Optional[float] = None
    """Height (metres) where the back wall ends; above it the camera sees sky (infinite depth, zero
    disparity), as outdoor videos do. None: the wall never ends (the benchmark scenes)."""
    objects: str = "all"
    """all; rigid (rolling ball, turning box); nonrigid (the pulsating blob only); hard (hard_motion())."""


def scene_at(t: float, params: SceneParams) -> list:
    """The primitives at normalized time t in [0, 1]."""
    rng = np.random.default_rng(params.seed)
    # Per-seed variation of phases and positions, so different seeds give different scenes.
    ph = rng.uniform(0, 2 * np.pi, size=4)
    jitter = rng.uniform(-0.15, 0.15, size=3)
    a = params.motion_amplitude
    wall = Plane(
        np.array([0.0, 0.0, 1.0]),
        -7.5,
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        wall_texture,
        0,
        np.inf if params.wall_height is None else params.wall_height,
    )
    floor = Plane(np.array([0.0, 1.0, 0.0]), 0.0, np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), floor_texture, 1)

    # A ball rolling left to right in front of the box (occludes it mid-sequence), spinning.
    ball_x = -1.3 + 2.6 * (0.5 + a * (t - 0.5))
    ball = Ellipsoid(
        center=np.array([ball_x, 0.45 + 0.12 * a * np.sin(np.pi * t) + jitter[0] * 0.2, -3.9]),
        radii=np.full(3, 0.42),
        rotation=rotation_matrix([0, 0, 1], -a * 3.0 * t + ph[0]) @ rotation_matrix([0, 1, 0], ph[1]),
        texture=ball_texture,
        object_id=2,
    )
    # A box turning about the vertical axis behind the ball.
    box = Box(
        center=np.array([0.35 + jitter[1], 0.5, -5.2]),
        half=np.array([0.45, 0.5, 0.45]),
        rotation=rotation_matrix([0, 1, 0], ph[2] + a * 1.6 * t),
        texture=box_texture,
        object_id=3,
    )
    # A pulsating, wobbling blob (non-rigid) on the left.
    s = 1.0 + 0.3 * a * np.sin(2 * np.pi * t + ph[3])
    blob = Ellipsoid(
        center=np.array([-1.45 + jitter[2], 1.05 + 0.15 * a * np.sin(2 * np.pi * t), -5.0]),
        radii=np.array([0.38 * s, 0.5 / np.sqrt(s), 0.38 * s]),
        rotation=rotation_matrix([0, 0, 1], 0.5 * a * np.sin(2 * np.pi * t)),
        texture=blob_texture,
        object_id=4,
    )
    if params.objects == "hard":
        return [wall, floor, *hard_motion(t, a, ph)]
    dynamic = {"all": [ball, box, blob], "rigid": [ball, box], "nonrigid": [blob]}[params.objects]
    return [wall, floor, *dynamic]


def hard_motion(t: float, a: float, ph: np.ndarray) -> list:
    """Fast motion, as casual videos have it (people, pets, balls): at 40 frames of 256x192 the objects
    move about 8-20 px per frame, spin, one deforms, and they pass in front of each other."""
    turn = 2 * np.pi * t
    # A ball rolling on the floor around an ellipse (depth changes too), spinning as it rolls.
    bx, bz = 1.2 * np.cos(turn + ph[0]), -4.4 + 0.7 * np.sin(turn + ph[0])
    ball = Ellipsoid(
        center=np.array([bx, 0.4, bz]),
        radii=np.full(3, 0.4),
        rotation=rotation_matrix([0, 0, 1], -a * 2.5 * turn) @ rotation_matrix([1, 0, 0], a * turn),
        texture=ball_texture,
        object_id=2,
    )
    # A box sliding left and right 1.5 times behind the ball's path, turning fast about its vertical axis.
    box = Box(
        center=np.array([1.1 * a * np.sin(1.5 * turn + ph[1]), 0.55, -5.3]),
        half=np.array([0.4, 0.55, 0.4]),
        rotation=rotation_matrix([0, 1, 0], ph[2] + a * 3.0 * turn) @ rotation_matrix([1, 0, 0], 0.25),
        texture=box_texture,
        object_id=3,
    )
    # A pulsating, wobbling blob bouncing in front of everything while drifting sideways (non-rigid).
    s = 1.0 + 0.3 * a * np.sin(2 * turn + ph[3])
    blob = Ellipsoid(
        center=np.array([-0.4 + 0.9 * a * np.sin(turn), 1.1 + 0.6 * a * abs(np.sin(1.5 * turn)), -3.4]),
        radii=np.array([0.32 * s, 0.42 / np.sqrt(s), 0.32 * s]),
        rotation=rotation_matrix([0, 0, 1], 0.6 * a * np.sin(turn)),
        texture=blob_texture,
        object_id=4,
    )
    # A small ball flying a fast loop high at the back (the fastest object, ~20 px/frame).
    fly = Ellipsoid(
        center=np.array([1.6 * a * np.cos(2 * turn), 1.9 + 0.4 * a * np.sin(2 * turn), -6.0]),
        radii=np.full(3, 0.28),
        rotation=rotation_matrix([0, 1, 0], a * 2 * turn),
        texture=ball_texture,
        object_id=5,
    )
    return [ball, box, blob, fly]


# ----------------------------------------------------------------------------- cameras
def look_at(eye: np.ndarray, target: np.ndarray, up=np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """4x4 camera-to-world in the OpenGL convention (x right, y up, camera looks along -z)."""
    z = eye - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def orbit_pose(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """The training camera rotated about the target by yaw (about world y) and pitch."""
    offset = TRAIN_EYE - TARGET
    r = rotation_matrix([0, 1, 0], np.deg2rad(yaw_deg)) @ rotation_matrix([1, 0, 0], np.deg2rad(pitch_deg))
    return look_at(TARGET + r @ offset, TARGET)


def intrinsics(width: int, height: int, fov_x_deg: float = 60.0) -> np.ndarray:
    fx = 0.5 * width / np.tan(0.5 * np.deg2rad(fov_x_deg))
    return np.array([[fx, 0, width / 2.0], [0, fx, height / 2.0], [0, 0, 1.0]])


def camera_rays(c2w: np.ndarray, K: np.ndarray, width: int, height: int, supersample: int = 1):
    """World-space rays through pixel (sub-)centres; also the z-depth factor per ray.

    Returns origins [H*s, W*s, 3], unit directions, and `zfac` with z-depth = t * zfac.
    """
    s = supersample
    u = (np.arange(width * s) + 0.5) / s
    v = (np.arange(height * s) + 0.5) / s
    uu, vv = np.meshgrid(u, v)
    x = (uu - K[0, 2]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    d_gl = np.stack([x, -y, -np.ones_like(x)], -1)  # OpenCV (x, y, 1) -> OpenGL (x, -y, -1)
    norm = np.linalg.norm(d_gl, axis=-1, keepdims=True)
    d_world = (d_gl / norm) @ c2w[:3, :3].T
    origins = np.broadcast_to(c2w[:3, 3], d_world.shape)
    return origins, d_world, 1.0 / norm[..., 0]


def render(primitives: list, c2w: np.ndarray, K: np.ndarray, width: int, height: int, supersample: int = 2):
    """Ray-cast RGB (box-filtered over s x s samples), z-depth, and dynamic mask at pixel centres."""
    s = supersample
    o, d, _ = camera_rays(c2w, K, width, height, s)
    t, normal, albedo, _ = cast(primitives, o.reshape(-1, 3), d.reshape(-1, 3))
    shade = 0.55 + 0.45 * np.clip(normal @ LIGHT_DIR, 0, 1)
    rgb = np.where(np.isfinite(t)[:, None], albedo * shade[:, None], SKY)
    rgb = rgb.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    # Depth and object ids at the exact pixel centres (no averaging across edges).
    o1, d1, zfac = camera_rays(c2w, K, width, height, 1)
    t1, _, _, obj = cast(primitives, o1.reshape(-1, 3), d1.reshape(-1, 3))
    depth = (t1 * zfac.reshape(-1)).reshape(height, width)
    dyn = (obj >= FIRST_DYNAMIC_ID).reshape(height, width)
    return rgb.astype(np.float32), depth.astype(np.float32), dyn
