"""A moving camera: poses (structure from motion, rotation-only, given), the camera-motion-aware
static mask, depth aligned to the poses, depth registration of an RGB-D sensor, and one-line errors.

The generated scene's orbiting camera is the test bed: its poses, depth, flow and moving-object
masks are known exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from trajectory import trajectory_errors, umeyama

from modgs_ns.preprocess import poses as P
from modgs_ns.preprocess.align import align_priors, camera_flow, moving_mask, static_mask, static_mask_moving
from modgs_ns.preprocess.depth import register_depth
from modgs_ns.preprocess.pairs import build_caches
from modgs_ns.scene.caches import DEPTH_CACHE, PairParams
from modgs_ns.synth import scene as S
from modgs_ns.synth.depth_prior import PriorDistortion
from modgs_ns.synth.flow_gt import ground_truth_flow
from modgs_ns.synth.generate import SynthConfig, generate_scene

BIN = Path(sys.executable).parent


def _rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return cv2.Rodrigues(axis * np.radians(deg))[0]


@pytest.fixture(scope="module")
def orbit(tmp_path_factory):
    """A generated scene whose training camera orbits 8 degrees about the scene centre."""
    root = tmp_path_factory.mktemp("orbit")
    cfg = SynthConfig(
        num_frames=16,
        width=240,
        height=180,
        supersample=1,
        camera_motion="orbit",
        num_seed_points=200,
        test_yaws=(),
        prior=PriorDistortion(
            kind="depth"
        ),  # the pose tests use the depth-prior route; test_priors.py the disparity one
    )
    scene = generate_scene(cfg, root / "scene", progress=False)
    meta = json.loads((scene / "transforms.json").read_text())
    train = sorted((f for f in meta["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    K = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]])
    return {
        "root": root,
        "scene": scene,
        "meta": meta,
        "train": train,
        "K": K,
        "cfg": cfg,
        "c2w": np.array([f["transform_matrix"] for f in train]),
        "images": [cv2.cvtColor(cv2.imread(str(scene / f["file_path"])), cv2.COLOR_BGR2RGB) for f in train],
        "depth": np.stack([np.load(scene / f["gt_depth_path"]) for f in train]),
        "dynamic": np.stack([cv2.imread(str(scene / f["dynamic_mask_path"]), 0) > 0 for f in train]),
    }


# ----------------------------------------------------------------------------- evaluation helpers
def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    R, s, t = _rot([1, 2, 3], 40), 2.5, np.array([0.3, -1.0, 4.0])
    s_hat, R_hat, t_hat = umeyama(src, s * src @ R.T + t)
    assert s_hat == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-10)


def test_trajectory_errors_of_a_similar_and_a_perturbed_trajectory(orbit):
    gt = orbit["c2w"]
    sim = np.eye(4)
    sim[:3, :3], sim[:3, 3] = 0.3 * _rot([0, 1, 1], 25), [1.0, 2.0, 3.0]
    est = np.array([sim @ g for g in gt])  # the same trajectory in another frame and scale
    est[:, :3, :3] /= 0.3
    e = trajectory_errors(est, gt)
    assert e["ate"] < 1e-9 and e["rotation_deg"] < 1e-4 and e["scale"] == pytest.approx(1 / 0.3)
    noisy = gt.copy()
    noisy[:, :3, 3] += np.random.default_rng(1).normal(scale=0.01, size=(len(gt), 3))
    assert 0.005 < trajectory_errors(noisy, gt)["ate"] < 0.02  # about the 0.017 RMS of the noise


# ----------------------------------------------------------------------------- poses
def test_rotation_poses_recover_a_camera_turning_on_the_spot(orbit):
    """Frames rendered from one centre with known yaw/pitch steps: the chained homography rotations
    match them to a small fraction of a degree."""
    K, W, H = orbit["K"], 240, 180
    prims = S.scene_at(0.0, S.SceneParams(objects="rigid"))
    base = S.orbit_pose(0.0)
    gt, imgs = [], []
    for k in range(5):
        c2w = base.copy()
        c2w[:3, :3] = base[:3, :3] @ _rot([0, 1, 0], 1.5 * k) @ _rot([1, 0, 0], 0.5 * k)
        rgb, _, _ = S.render(prims, c2w, K, W, H, 1)
        gt.append(c2w)
        imgs.append((rgb * 255).round().astype(np.uint8))
    est = P.rotation_poses(imgs, K, reference=2)
    np.testing.assert_allclose(est[:, :3, 3], 0.0)
    e = trajectory_errors(est, np.array(gt))
    assert e["rotation_deg"] < 0.1, e


def test_colmap_poses_of_the_orbiting_camera(orbit):
    est = P.colmap_poses(orbit["images"], orbit["K"], orbit["dynamic"])
    e = trajectory_errors(est, orbit["c2w"])
    assert e["ate"] < 0.02 * e["path_length"], e
    assert e["rotation_deg"] < 0.3, e


# ----------------------------------------------------------------------------- static mask and alignment
def test_camera_flow_is_the_ground_truth_flow_of_static_points(orbit):
    K, c2w, depth = orbit["K"], orbit["c2w"], orbit["depth"]
    params = S.SceneParams(objects=orbit["cfg"].objects)
    t = [f["time"] for f in orbit["train"]]
    flow, vis = ground_truth_flow(params, t[3], t[4], c2w[3], c2w[4], K, 240, 180)
    m = vis & ~orbit["dynamic"][3] & np.isfinite(depth[3])
    pred = camera_flow(np.where(np.isfinite(depth[3]), depth[3], 1.0), K, c2w[3], c2w[4])
    assert np.abs(flow).max() > 1.0  # the camera really moves the image
    np.testing.assert_allclose(pred[m], flow[m], atol=1e-3)


def test_static_mask_for_a_moving_camera_finds_the_background(orbit):
    """Ground-truth flow in, so only the mask logic is tested: the residual test keeps the background
    and rejects the moving objects; flow magnitude (the static-camera rule) rejects the background."""
    K, c2w, depth = orbit["K"], orbit["c2w"], orbit["depth"]
    params = S.SceneParams(objects=orbit["cfg"].objects)
    t = [f["time"] for f in orbit["train"]]
    flows = {}
    for i in (6, 7, 8):
        for j in (i - 1, i + 1):
            flows[(i, j)] = ground_truth_flow(params, t[i], t[j], c2w[i], c2w[j], K, 240, 180)[0]
    d = np.where(np.isfinite(depth), depth, 1e3)
    mask = static_mask_moving(flows, d, K, c2w, threshold=0.8)[7]
    dyn, bg = orbit["dynamic"][7], ~orbit["dynamic"][7] & np.isfinite(depth[7])
    assert mask[bg].mean() > 0.97
    assert mask[dyn].mean() < 0.1
    old = static_mask([flows[(7, 6)], flows[(7, 8)]], 0.8)
    assert old[bg].mean() < 0.5


def test_moving_mask_finds_motion_slower_than_the_threshold_over_several_frames():
    """Static camera, flow with 0.2 px noise everywhere; a patch moving 0.4 px per frame (below the 0.8 px
    per-frame threshold) shows 3.2 px over 8 frames, above 0.8 * sqrt(8) = 2.26 px: flagged with the long
    offsets, not without; the background is flagged by neither. A pair that failed its cycle check is ignored."""
    T, H, W = 20, 24, 32
    rng = np.random.default_rng(0)
    patch = np.zeros((H, W), bool)
    patch[8:16, 10:20] = True
    flows, ok = {}, {}
    for i in range(T):
        for j in range(max(0, i - 8), min(T, i + 9)):
            if j != i:
                f = rng.uniform(-0.1, 0.1, (H, W, 2)).astype(np.float32)  # |noise| <= 0.14 px
                f[patch, 0] += 0.4 * (j - i)
                flows[(i, j)], ok[(i, j)] = f, np.ones((H, W), bool)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    depth = np.full((T, H, W), 3.0)
    short = moving_mask(flows, ok, depth, K, c2w, 0.8)
    long = moving_mask(flows, ok, depth, K, c2w, 0.8, (2, 4, 8))
    assert not short.any()
    assert long[:, patch].all() and not long[:, ~patch].any()
    for key in ok:
        ok[key] = np.zeros((H, W), bool)
    assert not moving_mask(flows, ok, depth, K, c2w, 0.8, (2, 4, 8)).any()


def test_depth_aligned_to_the_poses_is_metric_and_consistent(orbit, tmp_path):
    """With the generator's (metric) poses, the distorted prior comes out close to the ground-truth
    depth in metres in every frame; the static-camera alignment (pixel to pixel against one frame)
    does not."""
    scene = orbit["scene"]
    stats = build_caches(scene, orbit["meta"], PairParams(points_per_frame=2000), progress=False)
    assert stats["camera_motion"] == "moving"
    with np.load(scene / DEPTH_CACHE) as z:
        aligned, static = z["depth"], z["static"]
    gt, dyn = orbit["depth"], orbit["dynamic"]
    m = np.isfinite(gt) & ~dyn
    rel = np.abs(aligned - gt)[m] / gt[m]
    assert np.median(rel) < 0.05, np.median(rel)
    per_frame = [np.median(aligned[i][m[i]] / gt[i][m[i]]) for i in range(len(gt))]
    assert np.ptp(per_frame) < 0.05, per_frame
    assert static.shape == gt.shape and static[m].mean() > 0.8 and static[dyn].mean() < 0.2

    priors = np.stack([np.load(scene / f["depth_prior_path"]) for f in orbit["train"]])
    old, _, _ = align_priors(priors, np.ones_like(m), ~dyn.any(0), reference=8)
    s = np.median(old[m] / gt[m])  # even granting the static method the right global scale
    assert np.median(np.abs(old / s - gt)[m] / gt[m]) > 1.5 * np.median(rel)


# ----------------------------------------------------------------------------- RGB-D registration
def test_register_depth_of_a_plane_seen_from_a_shifted_colour_camera():
    """A fronto-parallel plane at 1.5 m, colour camera 5 cm to the right of the depth camera: depth
    stays 1.5 m and the uncovered band at the right edge is f * 0.05 / 1.5 pixels wide."""
    Kd = np.array([[400.0, 0, 80], [0, 400.0, 60], [0, 0, 1]])
    Kc = np.array([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]])
    depth = np.full((120, 160), 1.5, np.float32)
    color_from_depth = np.eye(4)
    color_from_depth[0, 3] = -0.05  # a point at x in the depth camera is at x - 0.05 in the colour camera
    out = register_depth(depth, Kd, Kc, color_from_depth, (160, 120))
    covered = out > 0
    np.testing.assert_allclose(out[covered], 1.5, rtol=1e-6)
    # Kc has a smaller focal length: the depth image covers the middle 3/4 of the colour image,
    # shifted left by 300 * 0.05 / 1.5 = 10 px.
    cols = np.flatnonzero(covered[60])
    assert cols[0] == pytest.approx(80 - 60 - 10, abs=1) and cols[-1] == pytest.approx(80 + 60 - 10 - 1, abs=1)
    # A colour camera with a longer focal length than the depth one: splats land ~1.5 px apart and
    # the gaps between them are filled, so the covered region has no holes.
    Kc2 = np.array([[600.0, 0, 80], [0, 600.0, 60], [0, 0, 1]])
    out = register_depth(depth, Kd, Kc2, color_from_depth, (160, 120))
    assert (out > 0).all()
    np.testing.assert_allclose(out, 1.5, rtol=1e-6)


# ----------------------------------------------------------------------------- modgs-preprocess
def _cli(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCH_COMPILE_DISABLE="1")
    return subprocess.run(
        [str(BIN / "modgs-preprocess"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def _one_line_error(r) -> str:
    """The run failed with exit 1 and one error line (progress and info lines aside), no traceback."""
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("modgs-preprocess: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return errors[0]


def _frames_and_prior(orbit, tmp_path, n=None):
    imgs, prior = tmp_path / "frames", tmp_path / "prior"
    imgs.mkdir()
    prior.mkdir()
    for f in orbit["train"][:n]:
        name = Path(f["file_path"]).name
        cv2.imwrite(str(imgs / name), cv2.imread(str(orbit["scene"] / f["file_path"])))
        np.save(prior / name.replace(".png", ".npy"), np.load(orbit["scene"] / f["depth_prior_path"]))
    return imgs, prior


def test_preprocess_with_structure_from_motion(orbit, tmp_path):
    imgs, prior = _frames_and_prior(orbit, tmp_path)
    fx = orbit["K"][0, 0]
    r = _cli(
        [
            "--images",
            str(imgs),
            "--depth-dir",
            str(prior),
            "--output-dir",
            str(tmp_path / "out"),
            "--poses",
            "colmap",
            "--fx",
            str(fx),
            "--max-side",
            "0",
            "--no-diagnostics",
            "--pairs.points-per-frame",
            "2000",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert meta["modgs"]["preprocess"]["camera"] == "colmap (pycolmap)"
    assert meta["modgs"]["preprocess"]["caches"]["camera_motion"] == "moving"
    est = np.array([f["transform_matrix"] for f in sorted(meta["frames"], key=lambda f: f["time"])])
    e = trajectory_errors(est, orbit["c2w"])
    assert e["ate"] < 0.02 * e["path_length"], e


def test_preprocess_pose_errors_are_one_line(orbit, tmp_path):
    imgs, prior = _frames_and_prior(orbit, tmp_path, n=2)
    out = tmp_path / "out"
    r = _cli(
        ["--images", str(imgs), "--depth-dir", str(prior), "--output-dir", str(out), "--poses", "colmap"], tmp_path
    )
    assert "at least 3 frames" in _one_line_error(r) and not out.exists()

    # A tripod video: structure from motion cannot initialise (no parallax) ...
    still = tmp_path / "still"
    still.mkdir()
    for k in range(6):
        cv2.imwrite(str(still / f"f{k:02d}.png"), cv2.cvtColor(orbit["images"][0], cv2.COLOR_RGB2BGR))
    prior6 = tmp_path / "prior6"
    prior6.mkdir()
    for k in range(6):
        np.save(prior6 / f"f{k:02d}.npy", np.load(orbit["scene"] / orbit["train"][0]["depth_prior_path"]))
    r = _cli(
        [
            "--images",
            str(still),
            "--depth-dir",
            str(prior6),
            "--output-dir",
            str(out),
            "--poses",
            "colmap",
            "--no-pose-fallback",
        ],
        tmp_path,
    )
    assert "structure from motion registered" in _one_line_error(r) and not out.exists()
    # ... and with the fallback, the rotation-only estimate says so and finds no rotation.
    r = _cli(
        [
            "--images",
            str(still),
            "--depth-dir",
            str(prior6),
            "--output-dir",
            str(out),
            "--poses",
            "colmap",
            "--no-diagnostics",
            "--pairs.points-per-frame",
            "500",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "falling back to rotation-only poses" in r.stderr
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["modgs"]["preprocess"]["camera"].startswith("rotation-only fallback")
    np.testing.assert_allclose(
        [f["transform_matrix"] for f in meta["frames"]], np.tile(np.eye(4), (6, 1, 1)), atol=1e-6
    )


@pytest.mark.slow
def test_real_rgbd_sequence_castel(tmp_path):
    """castel (Debian visp-images-data; handheld RealSense SR300): every frame gets a pose, and the
    sensor depth, registered to the colour camera, agrees with the poses: fitted frame by frame,
    the scale from metres to pose units is one number (within a few percent)."""
    from samples import SampleUnavailable, castel

    try:
        seq = castel()
    except SampleUnavailable as err:
        pytest.skip(str(err))
    imgs, depth = tmp_path / "images", tmp_path / "depth"
    seq.write_folders(imgs, depth)
    K = seq.K_color
    out = tmp_path / "scene"
    r = _cli(
        [
            "--images",
            str(imgs),
            "--output-dir",
            str(out),
            "--poses",
            "colmap",
            "--no-pose-fallback",
            "--fx",
            str(K[0, 0]),
            "--fy",
            str(K[1, 1]),
            "--cx",
            str(K[0, 2]),
            "--cy",
            str(K[1, 2]),
            "--depth-dir",
            str(depth),
            "--depth-kind",
            "metric",
            "--depth-scale",
            str(seq.PNG_DEPTH_SCALE),
            "--no-diagnostics",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 30 and meta["modgs"]["preprocess"]["caches"]["camera_motion"] == "moving"
    with np.load(out / DEPTH_CACHE) as z:
        a, aligned = z["scales"], z["depth"]
    assert a.std() / a.mean() < 0.05, a
    prior = np.load(out / "depth_prior" / "frame_00000.npy")
    ok = prior > 0
    np.testing.assert_allclose(aligned[0][ok] / prior[ok], np.median(a), rtol=1e-4)  # one scale, no shift


def test_dynamic_masks_follow_the_kept_frames(tmp_path):
    """--dynamic-masks: one mask per source frame, picked by the kept frames' source indices and
    resized to the written frames (nearest, so masks stay binary); too few masks is an error."""
    from modgs_ns.preprocess.frames import PreprocessError
    from modgs_ns.preprocess.steps import read_dynamic_masks

    masks = tmp_path / "masks"
    masks.mkdir()
    for k in range(6):
        m = np.zeros((40, 60), np.uint8)
        m[:, 10 * k : 10 * k + 10] = 255  # frame k: a vertical band at column 10 k
        cv2.imwrite(str(masks / f"m{k:02d}.png"), m)
    out = read_dynamic_masks(masks, {"source_index": [1, 3, 5]}, 30, 20)
    assert len(out) == 3 and all(m.shape == (20, 30) and m.dtype == bool for m in out)
    for m, k in zip(out, (1, 3, 5)):
        np.testing.assert_array_equal(np.flatnonzero(m[0]), np.arange(5 * k, 5 * k + 5))
    with pytest.raises(PreprocessError, match="has 6 masks; the frames need 8"):
        read_dynamic_masks(masks, {"source_index": [0, 7]}, 30, 20)


def test_new_poses_keep_the_depth_prior_and_redo_the_caches(orbit, tmp_path):
    """The depth prior does not depend on the poses: changing --poses recomputes poses and caches
    but skips the (with a depth model, slow) depth step."""
    imgs, prior = _frames_and_prior(orbit, tmp_path, n=6)
    out = tmp_path / "out"
    common = [
        "--images",
        str(imgs),
        "--depth-dir",
        str(prior),
        "--output-dir",
        str(out),
        "--no-diagnostics",
        "--pairs.points-per-frame",
        "500",
    ]
    assert _cli(common, tmp_path).returncode == 0
    r = _cli([*common, "--poses", "rotation"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "depth prior up to date, skipped" in r.stderr
    assert "caches up to date" not in r.stderr
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["modgs"]["preprocess"]["camera"] == "rotation-only"
    assert meta["modgs"]["preprocess"]["caches"]["camera_motion"] == "rotation"
