"""Evaluation: metrics against closed forms, held-out camera placement against known scales,
co-visibility against an analytic plane, and LPIPS loading from a local checkpoint."""

import math

import numpy as np
import pytest
import torch

from modgs_ns.data.placement import FLIP, place, relative_pose, solve_scale_from_points
from modgs_ns.eval.evaluate import covisibility_mask
from modgs_ns.eval.metrics import LPIPS, image_metrics, mean_metrics, psnr, ssim


def _img(seed=0, h=40, w=48):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_psnr_identical_constant_offset_and_mask():
    a = _img()
    assert psnr(a, a) == math.inf
    b = (a + 0.1).clamp(max=10)  # no clipping: values stay below 10
    assert abs(psnr(b, a) - 20.0) < 1e-4  # 10 log10(1 / 0.1^2)
    # Error only inside a quarter of the image: masked PSNR 20 dB there, infinite outside, and the
    # full-image MSE is a quarter of it (+6.02 dB).
    mask = torch.zeros(40, 48, dtype=torch.bool)
    mask[:20, :24] = True
    c = a.clone()
    c[mask] += 0.1
    assert abs(psnr(c, a, mask) - 20.0) < 1e-4
    assert psnr(c, a, ~mask) == math.inf
    assert abs(psnr(c, a) - (20.0 + 10 * math.log10(4))) < 1e-4


def test_ssim_identical_and_constant_images():
    a = _img(1)
    assert abs(ssim(a, a) - 1.0) < 1e-6
    # Constant images x, y: away from the zero-padded border the variances vanish and
    # SSIM = (2xy + c1) / (x^2 + y^2 + c1).
    x, y, c1 = 0.6, 0.4, 0.01**2
    interior = torch.zeros(40, 48, dtype=torch.bool)
    interior[5:-5, 5:-5] = True
    got = ssim(
        torch.full((40, 48, 3), x, dtype=torch.float64), torch.full((40, 48, 3), y, dtype=torch.float64), interior
    )
    assert abs(got - (2 * x * y + c1) / (x * x + y * y + c1)) < 1e-9


def test_modgs_protocol_masks_both_images_by_alpha():
    a, b = _img(2), _img(3)
    alpha = torch.zeros(40, 48)
    alpha[:, :24] = 1.0
    m = image_metrics(b, a, {}, [], alpha=alpha, modgs_protocol=True)
    half = torch.zeros(40, 48, dtype=torch.bool)
    half[:, :24] = True
    # Masked-out pixels count as zero error in the mean over all pixels.
    expected = -10 * math.log10(float((b - a)[half].square().sum() / a.numel()))
    assert abs(m["psnr"] - expected) < 1e-4


def test_mean_ignores_empty_masks_and_skipped_columns():
    rows = [
        {"psnr": 10.0, "psnr_dynamic": float("nan"), "lpips_alex": None},
        {"psnr": 20.0, "psnr_dynamic": 30.0, "lpips_alex": None},
    ]
    m = mean_metrics(rows)
    assert m["psnr"] == 15.0 and m["psnr_dynamic"] == 30.0 and m["lpips_alex"] is None


def test_lpips_skipped_offline_with_a_clear_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lp = LPIPS("alex")
    assert not lp.available and "alexnet-owt-7be5be79.pth" in lp.reason and "--lpips-weights" in lp.reason
    assert lp(_img(), _img()) is None


def test_lpips_loads_a_local_checkpoint(tmp_path, monkeypatch):
    # A random-initialised AlexNet saved under torchvision's file name stands in for the real weights.
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    lp = LPIPS("alex", weights_dir=tmp_path)
    assert lp.available, lp.reason
    a, b = _img(4, 64, 64), _img(5, 64, 64)
    assert abs(lp(a, a)) < 1e-6
    assert lp(a, b) > 1e-4


def _rel_pose(rng):
    ang = rng.uniform(-0.3, 0.3, 3)
    R = torch.linalg.matrix_exp(
        torch.tensor([[0, -ang[2], ang[1]], [ang[2], 0, -ang[0]], [-ang[1], ang[0], 0]])
    ).numpy()
    rel = np.eye(4)
    rel[:3, :3], rel[:3, 3] = R, rng.uniform(-1, 1, 3)
    return rel


def test_scale_from_points_recovers_a_known_scale_with_outliers():
    rng = np.random.default_rng(0)
    K = np.array([[200.0, 0, 80], [0, 200.0, 60], [0, 0, 1]])
    rel = _rel_pose(rng)
    rel[:3, 3] = [0.8, 0.1, 0.2]  # a baseline mostly sideways, as for a held-out camera
    s_true = 0.37
    X = np.stack([rng.uniform(-1, 1, 300), rng.uniform(-0.8, 0.8, 300), rng.uniform(2, 5, 300)], -1)
    # Where the test camera (offset s_true * t in reconstruction units) sees these points.
    c2w_test = rel.copy()
    c2w_test[:3, 3] *= s_true
    Xw = (X @ FLIP) @ np.eye(3).T  # training camera = world, OpenGL axes
    Xt = ((Xw - c2w_test[:3, 3]) @ c2w_test[:3, :3]) @ FLIP
    q = np.stack([K[0, 0] * Xt[:, 0] / Xt[:, 2] + K[0, 2], K[1, 1] * Xt[:, 1] / Xt[:, 2] + K[1, 2]], -1)
    q[:90] += rng.uniform(-40, 40, (90, 2))  # 30% wrong matches
    s, inliers = solve_scale_from_points(X, q, K, rel)
    assert abs(s - s_true) < 1e-3 * s_true
    assert inliers[90:].all() and inliers[:90].mean() < 0.2


def test_place_scales_only_the_offset_from_the_training_camera():
    rng = np.random.default_rng(1)
    train = _rel_pose(rng)
    test = train @ _rel_pose(rng)
    placed = place(train[:3], test[:3], 0.5)
    np.testing.assert_allclose(placed[:3, :3], test[:3, :3], atol=1e-12)
    np.testing.assert_allclose(placed[:3, 3] - train[:3, 3], 0.5 * (test[:3, 3] - train[:3, 3]), atol=1e-12)
    np.testing.assert_allclose(relative_pose(train, test)[:3, :3], (np.linalg.inv(train) @ test)[:3, :3])


def test_covisibility_of_a_fronto_parallel_plane():
    # Test camera shifted by b to the right of the training camera, both facing a plane at depth z:
    # test column u is seen by the training camera iff u + f b / z < W.
    H, W, f, z, b = 30, 64, 50.0, 4.0, 0.8
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    train = np.eye(4)
    test = np.eye(4)
    test[0, 3] = b
    depth = np.full((H, W), z)
    cov = covisibility_mask(depth, K, test, depth, K, train)
    u = np.arange(W) + 0.5
    expected = (u + f * b / z) < W
    assert np.array_equal(cov, np.broadcast_to(expected, (H, W)))
    assert covisibility_mask(depth, K, train, depth, K, train).all()
    # An occluder in front of the plane in the training view hides part of it.
    occluded = depth.copy()
    occluded[:, 10:20] = 2.0
    assert not covisibility_mask(depth, K, train, occluded, K, train)[:, 10:20].any()


@pytest.mark.parametrize("method", ["metric-depth", "matches"])
def test_scale_solved_on_a_generated_scene(tmp_path_factory, method):
    # Metric depth and image matches are independent routes to the same scale: they must agree.
    from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
    from modgs_ns.preprocess.pairs import ensure_caches
    from modgs_ns.synth.generate import SynthConfig, generate_scene

    root = tmp_path_factory.getbasetemp() / "scale_scene"
    if not (root / "transforms.json").exists():
        generate_scene(
            SynthConfig(num_frames=8, width=160, height=120, supersample=1, num_seed_points=200), root, progress=False
        )
    ensure_caches(root, progress=False)  # what ModgsPipeline does before the dataparser reads them
    parser = ModgsDataParserConfig(data=root, test_camera_scale_method="metric-depth").setup()
    parser.get_dataparser_outputs("test")
    reference = parser.test_camera_scale.scale
    parser = ModgsDataParserConfig(data=root, test_camera_scale_method=method).setup()
    parser.get_dataparser_outputs("test")
    est = parser.test_camera_scale
    assert est.method == method and est.support > 20
    assert abs(est.scale / reference - 1) < 0.08, (est, reference)
