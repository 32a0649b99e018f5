"""A trained modgs run in nerfstudio's own tools: time in renders, the viewer's render path, ns-render
(spiral, interpolate, camera-path, dataset), and PLY export at a time."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

BIN = Path(sys.executable).parent
# One real training run (~2-3 min on 2 cores) plus a dozen ns-* subprocesses: run with --runslow.
pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCH_COMPILE_DISABLE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short but real training run (stage 1 long enough for the deformation to learn the motion)."""
    from modgs_ns.synth.generate import SynthConfig, generate_scene

    root = tmp_path_factory.mktemp("tools")
    scene = root / "scene"
    generate_scene(
        SynthConfig(
            num_frames=10,
            width=96,
            height=72,
            supersample=1,
            num_seed_points=500,
            objects="rigid",
            motion_amplitude=0.5,
        ),
        scene,
        progress=False,
    )
    r = subprocess.run(
        [
            str(BIN / "ns-train"),
            "modgs-cpu",
            "--data",
            str(scene),
            "--output-dir",
            str(root / "runs"),
            "--experiment-name",
            "t",
            "--timestamp",
            "run",
            "--vis",
            "tensorboard",
            "--max-num-iterations",
            "420",
            "--pipeline.model.stage1.steps",
            "300",
            "--pipeline.model.warmup-length",
            "20",
            "--pipeline.model.refine-every",
            "50",
            "--pipeline.model.stop-split-at",
            "400",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    config = root / "runs" / "t" / "modgs-cpu" / "run" / "config.yml"
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    pipeline.model.eval()
    return SimpleNamespace(
        root=root,
        scene=scene,
        config=config,
        pipeline=pipeline,
        model=pipeline.model,
        meta=json.loads((scene / "transforms.json").read_text()),
    )


def _train_frame(run, k):
    frames = sorted((f for f in run.meta["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    return frames[k]


def _render(run, camera, t):
    cam = camera.to(run.model.device)
    cam.times = torch.full((1, 1), float(t))
    with torch.no_grad():
        return run.model.get_outputs_for_camera(cam)


def test_rendering_at_two_times_moves_only_the_dynamic_objects(run):
    cams = run.pipeline.datamanager.train_dataset.cameras
    a, b = _render(run, cams[0:1], 0.0), _render(run, cams[0:1], 1.0)
    diff = (a["rgb"] - b["rgb"]).abs().mean(-1).cpu().numpy()
    masks = [cv2.imread(str(run.scene / _train_frame(run, k)["dynamic_mask_path"]), 0) > 127 for k in (0, -1)]
    moving = masks[0] | masks[1]
    # Background: away from the objects (dilated masks), the render must not change with time.
    near = cv2.dilate(moving.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    print(f"mean |change| inside the objects {diff[moving].mean():.4f}, background {diff[~near].mean():.4f}")
    # A short CPU run leaves the deformation slightly noisy on the background too (measured 0.058
    # inside vs 0.015 outside), so the check is relative.
    assert diff[moving].mean() > 0.04
    assert diff[~near].mean() < 0.4 * diff[moving].mean()


def test_viewer_render_path_honours_the_time_slider(run):
    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.render_state_machine import RenderStateMachine
    from nerfstudio.viewer.utils import CameraState

    model = run.model
    control = SimpleNamespace(time=0.8, crop_viewport=False, background_color=(0, 0, 0), layer_depth=False, max_res=96)
    viewer = SimpleNamespace(
        control_panel=control,
        render_tab_state=SimpleNamespace(preview_render=False),
        include_time=run.pipeline.datamanager.includes_time,
        get_model=lambda: model,
        train_lock=None,
        step=0,
        pipeline=run.pipeline,
    )
    assert viewer.include_time  # what makes ns-viewer show the Time slider
    machine = RenderStateMachine(viewer, viser_scale_ratio=1.0, client=None)
    machine.state = "high"
    cams = run.pipeline.datamanager.train_dataset.cameras
    c2w = cams.camera_to_worlds[0]
    fov = 2 * math.atan(float(cams.height[0]) / (2 * float(cams.fy[0])))
    state = CameraState(
        fov=fov, aspect=float(cams.width[0] / cams.height[0]), c2w=c2w, camera_type=CameraType.PERSPECTIVE, time=0.0
    )
    seen = []
    original = model.get_outputs_for_camera
    model.get_outputs_for_camera = lambda camera, obb_box=None: (
        seen.append(float(camera.times[0, 0])),
        original(camera, obb_box),
    )[1]
    try:
        out_08 = machine._render_img(state)
        control.time = 0.1
        out_01 = machine._render_img(state)
    finally:
        model.get_outputs_for_camera = original
    assert seen == pytest.approx([0.8, 0.1])
    assert (out_08["rgb"] - out_01["rgb"]).abs().max() > 0.05  # the slider changes the image


def test_ns_render_spiral_sweeps_time(run, monkeypatch):
    import nerfstudio.scripts.render as ns_render

    captured = {}
    monkeypatch.setattr(
        ns_render, "_render_trajectory_video", lambda pipeline, camera_path, **kw: captured.update(path=camera_path)
    )
    monkeypatch.setattr(ns_render.install_checks, "check_ffmpeg_installed", lambda: None)
    ns_render.SpiralRender(
        load_config=run.config, output_path=run.root / "spiral.mp4", seconds=1.0, frame_rate=12
    ).main()
    path = captured["path"]
    times = path.times[:, 0].cpu().numpy()
    assert len(path) == 12 and times[0] == 0.0 and times[-1] == pytest.approx(1.0)
    assert np.all(np.diff(times) > 0)
    start = run.pipeline.datamanager.train_dataset.cameras.camera_to_worlds[0, :3, 3]
    assert float((path.camera_to_worlds[:, :3, 3] - start).norm(dim=-1).max()) < 0.5  # a small spiral around it


@pytest.mark.parametrize("how", ["spiral", "interpolate", "camera-path"])
def test_ns_render_commands_write_videos(run, how):
    out = run.root / f"{how}.mp4"
    args = [
        str(BIN / "ns-render"),
        how,
        "--load-config",
        str(run.config),
        "--output-path",
        str(out),
        "--rendered-output-names",
        "rgb",
        "depth",
        "accumulation",
    ]
    if how == "spiral":
        args += ["--seconds", "1", "--frame-rate", "6"]
    elif how == "interpolate":
        args += ["--frame-rate", "4", "--interpolation-steps", "2", "--pose-source", "train"]
    else:
        path = run.root / "path.json"
        r = subprocess.run(
            [
                str(BIN / "modgs-render"),
                "spiral",
                "--load-config",
                str(run.config),
                "--output-path",
                str(run.root / "modgs_spiral.mp4"),
                "--num-frames",
                "6",
                "--camera-path-json",
                str(path),
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        times = [c["render_time"] for c in json.loads(path.read_text())["camera_path"]]
        assert times[0] == 0.0 and times[-1] == 1.0 and np.all(np.diff(times) > 0)
        args += ["--camera-path-filename", str(path)]
    r = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    cap = cv2.VideoCapture(str(out))
    ok, frame = cap.read()
    assert ok and frame.shape[1] == 3 * 96  # rgb | depth | accumulation side by side


def test_export_at_a_time_matches_the_model(run, tmp_path):
    from plyfile import PlyData

    from modgs_ns.export.splat_ply import SH_C0

    r = subprocess.run(
        [
            str(BIN / "modgs-export"),
            "--load-config",
            str(run.config),
            "--output-dir",
            str(tmp_path),
            "--time",
            "0.75",
            "--min-opacity",
            "0",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    v = PlyData.read(str(tmp_path / "gaussians_t0.7500.ply"))["vertex"]
    model = run.model
    with torch.no_grad():
        # Lifespans, computed here from the stored parameters: alive at 0.75 when the weight reaches the cutoff;
        # between two frames' times the weights are the nearer frame's.
        frame_times = np.asarray(model.frame_times, dtype=np.float64)
        assert len(frame_times) > 1
        t_life = float(frame_times[np.argmin(np.abs(frame_times - 0.75))])
        assert t_life != 0.75  # the export time lies between two frames, where the two rules differ
        weight = torch.exp(
            -0.5
            * ((t_life - model.gauss_params["times"][:, 0]) / torch.exp(model.gauss_params["time_scales"][:, 0])) ** 2
        )
        ids = torch.where(weight >= model.config.lifespans.cutoff)[0]
        # Deformed: Gaussians with lifespans, and the static ones too unless deform_static is off (modgs-cpu).
        moves = model.has_lifespan(ids) | model.config.lifespans.deform_static
        canonical = model.means[ids]
        means = torch.where(moves[:, None], model.deformed_means(canonical, 0.75), canonical).numpy()
        colors = torch.sigmoid(model.features_dc[ids]).numpy()
        opacity = (torch.sigmoid(model.opacities[ids, 0]) * weight[ids]).numpy()
    xyz = np.stack([v["x"], v["y"], v["z"]], -1)
    assert len(xyz) == len(means)
    np.testing.assert_allclose(xyz, means, atol=1e-5)
    assert np.abs(xyz - canonical.numpy())[moves.numpy()].max() > 1e-3  # not the canonical positions
    np.testing.assert_allclose(np.stack([v[f"f_dc_{i}"] for i in range(3)], -1) * SH_C0 + 0.5, colors, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), opacity, atol=1e-6)
    np.testing.assert_allclose(
        np.stack([v[f"scale_{i}"] for i in range(3)], -1), model.scales[ids].detach().numpy(), atol=1e-6
    )
    q = torch.nn.functional.normalize(model.quats[ids].detach(), dim=-1).numpy()
    np.testing.assert_allclose(np.stack([v[f"rot_{i}"] for i in range(4)], -1), q, atol=1e-6)


def test_export_sequence_with_manifest(run, tmp_path):
    r = subprocess.run(
        [
            str(BIN / "modgs-export"),
            "--load-config",
            str(run.config),
            "--output-dir",
            str(tmp_path),
            "--num-times",
            "5",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [f["time"] for f in manifest["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all((tmp_path / f["file"]).is_file() for f in manifest["frames"])
    bad = subprocess.run(
        [str(BIN / "modgs-export"), "--load-config", str(run.config), "--time", "2"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_modgs_eval_writes_metrics_and_grids(run, tmp_path):
    r = subprocess.run(
        [str(BIN / "modgs-eval"), "--load-config", str(run.config), "--output-dir", str(tmp_path), "--grid-every", "5"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    n_test = len(run.meta["test_filenames"])
    assert len(m["images"]) == n_test and set(m["per_camera"]) == {"test0", "test1"}
    assert m["test_camera_scale"]["method"] == "metric-depth" and m["test_camera_scale"]["scale"] > 0
    for k in ("psnr", "ssim", "psnr_dynamic", "psnr_covisible"):
        assert m["mean"][k] is not None and math.isfinite(m["mean"][k]), k
    grids = sorted(p.name for p in (tmp_path / "grids").glob("*.png"))
    train_grids = [g for g in grids if g.startswith("train-view_")]
    assert len(grids) - len(train_grids) == math.ceil(n_test / 5)
    n_train = len(m["training_views"]["images"])
    assert n_train == len(run.meta["train_filenames"]) and len(train_grids) == math.ceil(n_train / 5)
    assert "LPIPS" in r.stderr or m["mean"].get("lpips_alex") is not None  # skipped offline, and said so
    # MoDGS's own protocol (alpha-masked) scores the same renders differently.
    r2 = subprocess.run(
        [
            str(BIN / "modgs-eval"),
            "--load-config",
            str(run.config),
            "--output-dir",
            str(tmp_path / "m"),
            "--protocol",
            "modgs",
            "--grid-every",
            "0",
            "--test-camera-scale",
            str(m["test_camera_scale"]["scale"]),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r2.returncode == 0, r2.stderr[-2000:]
    m2 = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m2["protocol"] == "modgs-alpha-masked" and m2["test_camera_scale"]["method"] == "given"
    assert m2["mean"]["psnr"] != m["mean"]["psnr"]


def test_ns_export_gaussian_splat_writes_the_canonical_gaussians(run, tmp_path):
    from plyfile import PlyData

    r = subprocess.run(
        [str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    v = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    # nerfstudio keeps the order and drops opacity < 1/255: the exported centres are the canonical ones.
    logit_opacity = run.model.opacities.detach().numpy()[:, 0]
    keep = logit_opacity >= np.log((1 / 255) / (1 - 1 / 255))
    canonical = run.model.means.detach().numpy()[keep]
    xyz = np.stack([v["x"], v["y"], v["z"]], -1)
    assert len(xyz) == len(canonical) > 0
    np.testing.assert_allclose(xyz, canonical, atol=1e-6)


def test_viewer_in_a_browser_shows_the_object_moving(run, tmp_path):
    """ns-viewer in headless Chromium (scripts/viewer_screenshots.py): the Time slider moves the object.

    Screenshots at t = 0, 1, 0: the two at t = 0 agree (the view is repeatable), the one at t = 1 differs."""
    import shutil

    pytest.importorskip("playwright.sync_api")
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium (apt-get install chromium)")
    script = Path(__file__).resolve().parents[1] / "scripts" / "viewer_screenshots.py"
    r = subprocess.run(
        [
            sys.executable,
            str(script),
            "--load-config",
            str(run.config),
            "--output-dir",
            str(tmp_path),
            "--times",
            "0",
            "1",
            "0",
            "--settle",
            "8",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    a, b, a2 = (
        cv2.imread(str(tmp_path / n)).astype(np.float32)
        for n in ("viewer_t0.00.png", "viewer_t1.00.png", "viewer_t0.00_2.png")
    )

    def changed(x, y):
        return float((np.abs(x - y).max(-1) > 30).mean())

    assert changed(a, a2) < 0.002
    assert changed(a, b) > 0.005
