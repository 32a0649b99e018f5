"""Analytic ray casting of planes, ellipsoids and boxes (numpy).

Written for the generated scene only: it is the independent ground truth the Gaussian
rasterizer is judged against, so it must never share code with it.

Conventions: rays are (origins [R,3], unit directions [R,3]); a hit is the smallest t > eps.
Every primitive returns (t [R], normal [R,3], local [R,3]) with t = inf on a miss; `local`
is the hit point in the primitive's own frame (used for texturing, so textures move with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

EPS = 1e-6

Texture = Callable[[np.ndarray], np.ndarray]  # local points [R,3] -> albedo [R,3] in [0,1]


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula: rotation by `angle` radians about `axis`."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass
class Plane:
    """Plane {x : normal . x = offset}; `u_axis`/`v_axis` span its texture frame; it ends where the v
    coordinate exceeds `v_max` (infinite by default)."""

    normal: np.ndarray
    offset: float
    u_axis: np.ndarray
    v_axis: np.ndarray
    texture: Texture
    object_id: int = 0
    v_max: float = np.inf

    def intersect(self, o: np.ndarray, d: np.ndarray):
        n = np.asarray(self.normal, dtype=np.float64)
        denom = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o @ n) / denom
        t = np.where((np.abs(denom) > EPS) & (t > EPS), t, np.inf)
        p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
        local = np.stack([p @ self.u_axis, p @ self.v_axis, np.zeros(len(p))], axis=-1)
        t = np.where(local[:, 1] <= self.v_max, t, np.inf)
        normal = np.broadcast_to(n, p.shape).copy()
        # Face the viewer.
        normal[denom > 0] *= -1
        return t, normal, local


@dataclass
class Ellipsoid:
    """Ellipsoid with centre, rotation R (local->world) and semi-axes `radii` (a sphere if equal)."""

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    texture: Texture | None = None
    object_id: int = 0

    def intersect(self, o: np.ndarray, d: np.ndarray):
        r = np.asarray(self.radii, dtype=np.float64)
        # Into the unit-sphere frame: x_u = diag(1/r) R^T (x - c). t is preserved by the affine map.
        ou = ((o - self.center) @ self.rotation) / r
        du = (d @ self.rotation) / r
        a = np.sum(du * du, -1)
        b = 2 * np.sum(ou * du, -1)
        c = np.sum(ou * ou, -1) - 1.0
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0 = (-b - sq) / (2 * a)
        t1 = (-b + sq) / (2 * a)
        t = np.where(t0 > EPS, t0, np.where(t1 > EPS, t1, np.inf))
        t = np.where(disc >= 0, t, np.inf)
        tt = np.where(np.isfinite(t), t, 0.0)
        pu = ou + tt[:, None] * du  # on the unit sphere
        local = pu * r  # local (unrotated) ellipsoid coordinates
        n_local = local / (r * r)  # gradient of sum (x_i / r_i)^2
        normal = n_local @ self.rotation.T
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
        return t, normal, local


@dataclass
class Box:
    """Oriented box: centre, rotation R (local->world), half extents."""

    center: np.ndarray
    half: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    texture: Texture | None = None
    object_id: int = 0

    def intersect(self, o: np.ndarray, d: np.ndarray):
        h = np.asarray(self.half, dtype=np.float64)
        ol = (o - self.center) @ self.rotation
        dl = d @ self.rotation
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        ta = (-h - ol) * inv
        tb = (h - ol) * inv
        tmin = np.minimum(ta, tb)
        tmax = np.maximum(ta, tb)
        t_near = tmin.max(-1)
        t_far = tmax.min(-1)
        axis = tmin.argmax(-1)
        hit = (t_near <= t_far) & (t_far > EPS)
        t = np.where(hit, np.where(t_near > EPS, t_near, t_far), np.inf)
        tt = np.where(np.isfinite(t), t, 0.0)
        local = ol + tt[:, None] * dl
        n_local = np.zeros_like(local)
        idx = np.arange(len(local))
        n_local[idx, axis] = np.sign(local[idx, axis])
        normal = n_local @ self.rotation.T
        return t, normal, local


def cast(primitives: list, origins: np.ndarray, dirs: np.ndarray):
    """Nearest hit over all primitives: (t, normal, albedo, object_id); t=inf where nothing is hit."""
    n = len(origins)
    best_t = np.full(n, np.inf)
    best_n = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    obj = np.full(n, -1, dtype=np.int32)
    for prim in primitives:
        t, normal, local = prim.intersect(origins, dirs)
        closer = t < best_t
        if not closer.any():
            continue
        best_t = np.where(closer, t, best_t)
        best_n[closer] = normal[closer]
        albedo[closer] = prim.texture(local[closer])
        obj[closer] = prim.object_id
    return best_t, best_n, albedo, obj
