"""Flow / alignment / 3D-pair caches built from frames and the prior only, judged with the
generated scene's ground truth."""

import json

import cv2
import numpy as np
import pytest
import torch

from modgs_ns.data.correspondences import Correspondences
from modgs_ns.preprocess.pairs import build_caches
from modgs_ns.scene.caches import DEPTH_CACHE, PAIRS_CACHE, PairParams, caches_valid
from modgs_ns.synth.depth_prior import PriorDistortion  # this file tests the depth-prior route
from modgs_ns.synth.generate import SynthConfig, generate_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("corr") / "scene"
    generate_scene(
        SynthConfig(num_frames=12, width=128, height=96, num_seed_points=100, prior=PriorDistortion(kind="depth")),
        root,
        progress=False,
    )
    meta = json.loads((root / "transforms.json").read_text())
    info = build_caches(root, meta, PairParams(window=4, points_per_frame=3000), progress=False)
    return root, meta, info


def _gt(root, meta, name, key):
    f = next(f for f in meta["frames"] if f["file_path"].endswith(name))
    if key == "mask":
        return cv2.imread(str(root / f["dynamic_mask_path"]), cv2.IMREAD_GRAYSCALE) > 0
    return np.load(root / f["gt_depth_path"])


def test_cache_files_are_keyed_by_parameters(scene, tmp_path):
    root, meta, info = scene
    assert (root / DEPTH_CACHE).is_file() and (root / PAIRS_CACHE).is_file()
    assert info["pairs_bytes"] == (root / PAIRS_CACHE).stat().st_size
    assert caches_valid(root, meta, PairParams(window=4, points_per_frame=3000))
    assert not caches_valid(root, meta, PairParams(window=5, points_per_frame=3000))
    # A truncated (interrupted) cache is never trusted.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    data = (copy / PAIRS_CACHE).read_bytes()
    (copy / PAIRS_CACHE).write_bytes(data[: len(data) // 2])
    assert not caches_valid(copy, meta, PairParams(window=4, points_per_frame=3000))


def test_alignment_makes_static_depth_consistent(scene):
    root, meta, _ = scene
    corr = Correspondences.load(root)
    ref = corr.T // 2
    static_gt = ~np.any([_gt(root, meta, n, "mask") for n in corr.names], axis=0)
    raw = [np.load(root / f"depth_prior/{n.replace('.png', '.npy')}") for n in corr.names]
    aligned_err, raw_err = [], []
    for i in range(corr.T):
        m = static_gt & corr.valid[i] & corr.valid[ref]
        aligned_err.append(np.median(np.abs(corr.depth[i][m] / corr.depth[ref][m] - 1)))
        raw_err.append(np.median(np.abs(raw[i][m] / raw[ref][m] - 1)))
    # The simulated prior keeps an 8% low-frequency warp that drifts per frame, which no affine
    # fit removes; alignment must still bring frames within a few percent of the reference.
    assert max(aligned_err) < 0.05, aligned_err
    assert np.median(raw_err) > 0.1  # the prior really was inconsistent before alignment
    assert np.median(aligned_err) < np.median(raw_err) / 3, (aligned_err, raw_err)


def test_pairs_on_static_surfaces_do_not_move(scene):
    root, meta, _ = scene
    corr = Correspondences.load(root)
    lo, hi = corr.bbox()
    extent = float((hi - lo).max())
    W = corr.W
    uv_err, xyz_err = [], []
    for i in range(corr.T):
        for k, o in enumerate(corr.offsets):
            j = i + o
            if not 0 <= j < corr.T:
                continue
            uv = corr.tgt[i, k].numpy()
            ok = uv[:, 0] != -32768
            pix = corr.src[i].numpy()[ok]
            static = ~(_gt(root, meta, corr.names[i], "mask") | _gt(root, meta, corr.names[j], "mask")).reshape(-1)[pix]
            src_uv = np.stack([pix % W, pix // W], -1).astype(np.float32)
            uv_err.append(np.linalg.norm(uv[ok][static] / corr.uv_scale - src_uv[static], axis=-1))
            x = corr.points[i].reshape(-1, 3)[pix[static]]
            y = corr.bilinear_points(j, torch.from_numpy(uv[ok][static] / corr.uv_scale))
            xyz_err.append((y - x).norm(dim=-1).numpy())
    uv_err, xyz_err = np.concatenate(uv_err), np.concatenate(xyz_err)
    assert len(uv_err) > 20000
    # Static camera, static surface: the flow is ~0 (DIS on textured surfaces) ...
    assert np.median(uv_err) < 0.25 and np.quantile(uv_err, 0.9) < 1.0
    # ... and the 3D pairs move only by what is left of the prior's frame-to-frame inconsistency.
    assert np.median(xyz_err) < 0.03 * extent


def test_sampling_follows_the_window_and_weights(scene):
    root, _, _ = scene
    corr = Correspondences.load(root)
    for step in range(30):
        b = corr.sample(step, max_points=500)
        assert 0 < abs(b["tgt_frame"] - b["src_frame"]) <= 4
        assert len(b["x"]) == len(b["y"]) <= 500
        assert b["t_src"] == pytest.approx(b["src_frame"] / 11)
    assert np.allclose(corr.weights.sum(1), 1.0)
    # Every frame is a source once per epoch.
    assert sorted(corr.sample(s, 10)["src_frame"] for s in range(corr.T)) == list(range(corr.T))
    assert torch.isfinite(corr.points).all()


def test_point_map_normals_of_a_tilted_plane_face_the_camera():
    from modgs_ns.data.correspondences import point_map_normals
    from modgs_ns.scene.geometry import unproject

    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    c2w = np.eye(4)[:3]  # camera at the origin looking down -z (OpenGL)
    normal = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])  # faces the camera (+z side)
    # Depth of the plane n . X = -3 along each pixel ray (ray in world: ((u-cx)/fx, -(v-cy)/fy, -1) * z).
    u, v = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    ray = np.stack([(u - 32) / 60.0, -(v - 24) / 60.0, -np.ones_like(u)], -1)
    depth = -3.0 / (ray @ normal)
    points = unproject(depth, K, c2w)
    assert np.allclose(points @ normal, -3.0, atol=1e-4)  # the depth map is that plane
    n = point_map_normals(points, np.zeros(3))
    assert np.allclose(n, normal, atol=1e-4)


def test_frame_normals_of_the_generated_scene_are_close_to_the_truth(scene):
    # Smoothed normals of the (noisy, aligned) prior against normals of the ground-truth depth.
    from modgs_ns.data.correspondences import point_map_normals
    from modgs_ns.scene.geometry import unproject

    root, meta, _ = scene
    corr = Correspondences.load(root)
    frames = {f["file_path"].split("/")[-1]: f for f in meta["frames"]}
    name = corr.names[0].split("/")[-1]
    gt = np.load(root / frames[name]["gt_depth_path"])
    static = corr.valid[0] & ~corr.moving[0]
    scale = np.median(corr.depth[0][static] / gt[static])
    truth = point_map_normals(unproject(scale * gt, corr.K, corr.c2w[0]), np.asarray(corr.c2w[0])[:3, 3])
    angle = {}
    for smoothing in (0, 2):
        n = corr.frame_normals(0, smoothing=smoothing).numpy()
        angle[smoothing] = np.degrees(np.arccos(np.clip((n * truth[corr.valid[0]]).sum(-1), -1, 1)))
    assert np.allclose(np.linalg.norm(corr.frame_normals(0).numpy(), axis=-1), 1.0, atol=1e-5)
    assert np.median(angle[2]) < 25.0 and np.median(angle[2]) < np.median(angle[0]), {
        k: float(np.median(v)) for k, v in angle.items()
    }
