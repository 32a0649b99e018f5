"""The generated scene: ray caster against analytic intersections, determinism, camera layout,
and a depth prior that keeps depth order but is not consistent across frames."""

import json

import numpy as np
import pytest

from modgs_ns.synth import scene as S
from modgs_ns.synth.generate import SynthConfig, generate_scene
from modgs_ns.synth.raycast import Box, Ellipsoid, Plane, cast


def _flat(local):
    return np.full((len(local), 3), 0.5)


def _camera(width=64, height=48):
    c2w = np.eye(4)  # at the origin, looking along -z (OpenGL)
    K = S.intrinsics(width, height, 60.0)
    o, d, zfac = S.camera_rays(c2w, K, width, height)
    return o.reshape(-1, 3), d.reshape(-1, 3), zfac.reshape(-1)


def test_plane_depth_is_constant_for_a_frontal_plane():
    o, d, zfac = _camera()
    plane = Plane(np.array([0, 0, 1.0]), -5.0, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), _flat)
    t, _, _, obj = cast([plane], o, d)
    np.testing.assert_allclose(t * zfac, 5.0, rtol=1e-12)


def test_sphere_and_box_depths_match_closed_forms():
    o, d, zfac = _camera()
    c, r = np.array([0.3, -0.2, -4.0]), 1.0
    plane = Plane(np.array([0, 0, 1.0]), -8.0, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), _flat, object_id=0)
    sphere = Ellipsoid(center=c, radii=np.full(3, r), texture=_flat, object_id=2)
    t, normal, _, obj = cast([plane, sphere], o, d)
    # Closed form for a unit ray from the origin: t = d.c - sqrt((d.c)^2 - |c|^2 + r^2).
    dc = d @ c
    disc = dc**2 - c @ c + r * r
    hit = disc > 0
    t_ref = np.where(hit, dc - np.sqrt(np.maximum(disc, 0)), 8.0 / zfac)
    assert hit.sum() > 100 and (~hit).sum() > 100
    np.testing.assert_array_equal(obj == 2, hit)
    np.testing.assert_allclose(t * zfac, t_ref * zfac, rtol=1e-10)
    # Normals on the sphere point from its centre to the hit point.
    p = d[hit] * t[hit, None]
    np.testing.assert_allclose(normal[hit], (p - c) / r, atol=1e-9)

    box = Box(center=np.array([0.0, 0.0, -3.0]), half=np.array([0.5, 0.4, 0.25]), texture=_flat, object_id=3)
    t, _, _, obj = cast([plane, box], o, d)
    x = d[:, 0] / -d[:, 2] * 2.75  # where the ray crosses the front face z = -2.75
    y = d[:, 1] / -d[:, 2] * 2.75
    front = (np.abs(x) < 0.5 - 1e-6) & (np.abs(y) < 0.4 - 1e-6)
    assert front.sum() > 50
    np.testing.assert_allclose((t * zfac)[front], 2.75, rtol=1e-12)
    np.testing.assert_array_equal(obj[front], 3)


def test_rotated_ellipsoid_hits_lie_on_its_surface():
    o, d, _ = _camera()
    R = S.rotation_matrix([1, 2, 3], 0.7)
    e = Ellipsoid(center=np.array([0, 0, -3.0]), radii=np.array([0.9, 0.5, 0.3]), rotation=R, texture=_flat)
    t, _, _ = e.intersect(o, d)
    hit = np.isfinite(t)
    p = o[hit] + t[hit, None] * d[hit]
    q = (p - e.center) @ R / e.radii  # back to the unit sphere
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-9)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "scene"
    cfg = SynthConfig(num_frames=8, width=96, height=72, seed=3, supersample=1, num_seed_points=300)
    generate_scene(cfg, root, progress=False)
    return root, cfg


def test_same_seed_same_scene_other_seed_differs(small_scene, tmp_path):
    root, cfg = small_scene
    again = generate_scene(cfg, tmp_path / "again", progress=False)
    for f in sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()):
        assert (root / f).read_bytes() == (again / f).read_bytes(), f
    cfg.seed = 4
    other = generate_scene(cfg, tmp_path / "other", progress=False)
    cfg.seed = 3
    assert (root / "images/train_00000.png").read_bytes() != (other / "images/train_00000.png").read_bytes()


def test_layout_cameras_and_masks(small_scene):
    root, cfg = small_scene
    meta = json.loads((root / "transforms.json").read_text())
    assert len(meta["train_filenames"]) == cfg.num_frames
    assert len(meta["test_filenames"]) == cfg.num_frames * len(cfg.test_yaws)
    train = [f for f in meta["frames"] if f["camera"] == "train"]
    fwd0 = -np.array(train[0]["transform_matrix"])[:3, 2]
    for cam in ("test0", "test1"):
        f = next(f for f in meta["frames"] if f["camera"] == cam)
        fwd = -np.array(f["transform_matrix"])[:3, 2]
        angle = np.degrees(np.arccos(np.clip(fwd @ fwd0, -1, 1)))
        assert 10 <= angle <= 25, (cam, angle)
    assert sorted(f["time"] for f in train) == pytest.approx(np.linspace(0, 1, cfg.num_frames))
    masks = [np.load(root / f["gt_depth_path"]) for f in train]
    assert all(np.isfinite(m).all() for m in masks)
    import cv2

    m0 = cv2.imread(str(root / train[0]["dynamic_mask_path"]), cv2.IMREAD_GRAYSCALE) > 0
    m1 = cv2.imread(str(root / train[-1]["dynamic_mask_path"]), cv2.IMREAD_GRAYSCALE) > 0
    assert 0.02 < m0.mean() < 0.5 and (m0 != m1).mean() > 0.01  # objects present and moving


def test_static_camera_stays_fixed_orbit_moves(small_scene, tmp_path):
    root, _ = small_scene
    meta = json.loads((root / "transforms.json").read_text())
    poses = [np.array(f["transform_matrix"]) for f in meta["frames"] if f["camera"] == "train"]
    assert all(np.allclose(p, poses[0]) for p in poses)
    cfg = SynthConfig(num_frames=3, width=32, height=24, camera_motion="orbit", supersample=1, num_seed_points=50)
    orbit = generate_scene(cfg, tmp_path / "orbit", progress=False)
    meta = json.loads((orbit / "transforms.json").read_text())
    centres = [np.array(f["transform_matrix"])[:3, 3] for f in meta["frames"] if f["camera"] == "train"]
    assert np.linalg.norm(centres[0] - centres[-1]) > 0.1


def test_prior_keeps_order_but_is_not_one_affine_map(small_scene):
    root, cfg = small_scene
    meta = json.loads((root / "transforms.json").read_text())
    train = sorted((f for f in meta["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    gts = [np.load(root / f["gt_depth_path"]).ravel() for f in train]
    if meta["modgs"]["depth_prior"]["kind"] == "disparity":  # the prior's own space: inverse depth
        gts = [1.0 / g for g in gts]
    priors = [np.load(root / f["depth_prior_path"]).ravel() for f in train]
    rng = np.random.default_rng(0)
    agree, total = 0, 0
    for g, p in zip(gts, priors):
        i, j = rng.integers(0, len(g), (2, 4000))
        sep = np.maximum(g[i], g[j]) / np.minimum(g[i], g[j]) > 1.25  # well separated in GT
        agree += np.sum(np.sign(g[i] - g[j])[sep] == np.sign(p[i] - p[j])[sep])
        total += sep.sum()
    assert total > 1000 and agree / total >= 0.9

    def affine_rel_err(p, g):
        A = np.stack([p, np.ones_like(p)], -1)
        coef, *_ = np.linalg.lstsq(A, g, rcond=None)
        return np.median(np.abs(A @ coef - g) / g)

    per_frame = np.median([affine_rel_err(p, g) for p, g in zip(priors, gts)])
    one_map = affine_rel_err(np.concatenate(priors), np.concatenate(gts))
    assert per_frame < 0.1  # each frame is roughly an affine image of depth...
    assert one_map > 2 * per_frame and one_map > 0.1  # ...but with its own scale and shift


def test_refuses_to_overwrite(small_scene):
    root, cfg = small_scene
    with pytest.raises(FileExistsError):
        generate_scene(cfg, root, progress=False)
