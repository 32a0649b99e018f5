"""modgs-preprocess: video / image folder / ns-process-data inputs, depth backends (folder, a tiny
random-initialised transformers model), RAFT loading, DIS flow against the generated scene's
ground-truth flow, re-runs, one-line errors with nothing left behind, and a real clip (vtest.avi)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
from modgs_ns.preprocess.frames import PreprocessError
from modgs_ns.preprocess.run import PreprocessConfig, run
from modgs_ns.scene.caches import DEPTH_CACHE, PAIRS_CACHE
from modgs_ns.synth import scene as S
from modgs_ns.synth.depth_prior import PriorDistortion  # --depth-dir tests use a depth prior
from modgs_ns.synth.flow_gt import ground_truth_flow
from modgs_ns.synth.generate import SynthConfig, generate_scene

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small generated scene, its training frames as an MJPG video, and its prior as a depth folder."""
    root = tmp_path_factory.mktemp("pp")
    scene = root / "scene"
    generate_scene(
        SynthConfig(
            num_frames=12, width=128, height=96, supersample=1, num_seed_points=200, prior=PriorDistortion(kind="depth")
        ),
        scene,
        progress=False,
    )
    meta = json.loads((scene / "transforms.json").read_text())
    train = sorted((f for f in meta["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    video = root / "train.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for f in train:
        vw.write(cv2.imread(str(scene / f["file_path"])))
    vw.release()
    depth = root / "prior"
    depth.mkdir()
    for f in train:
        shutil.copy(scene / f["depth_prior_path"], depth / Path(f["depth_prior_path"]).name)
    return {"scene": scene, "video": video, "depth": depth, "train": train, "meta": meta}


def _first_depth_files(synth, tmp_path, n):
    depth = tmp_path / "depth"
    depth.mkdir()
    for f in sorted(synth["depth"].iterdir())[:n]:
        shutil.copy(f, depth / f.name)
    return depth


def test_video_to_scene_trainable_and_rerun_skips(synth, tmp_path):
    out = tmp_path / "out"
    res = run(PreprocessConfig(output_dir=out, video=synth["video"], depth_dir=synth["depth"], max_side=0))
    assert res["frames"] == 12 and tuple(res["size"]) == (128, 96)
    meta = json.loads((out / "transforms.json").read_text())
    times = [f["time"] for f in meta["frames"]]
    assert times[0] == 0.0 and times[-1] == 1.0 and np.all(np.diff(times) > 0)
    assert [f["source_frame_index"] for f in meta["frames"]] == list(range(12))
    # The prior went through untouched (the k-th file for the k-th frame).
    np.testing.assert_array_equal(
        np.load(out / "depth_prior/frame_00005.npy"), np.load(synth["depth"] / "train_00005.npy")
    )
    for rel in (DEPTH_CACHE, PAIRS_CACHE, "points3d.ply", "diagnostics.png"):
        assert (out / rel).is_file(), rel
    # nerfstudio reads it: every frame trains, times come through.
    outputs = ModgsDataParserConfig(data=out).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 12 and float(outputs.cameras.times.max()) == 1.0
    # A re-run with the same parameters redoes nothing.
    stamp = (out / PAIRS_CACHE).stat().st_mtime_ns
    res2 = run(PreprocessConfig(output_dir=out, video=synth["video"], depth_dir=synth["depth"], max_side=0))
    assert (out / PAIRS_CACHE).stat().st_mtime_ns == stamp and res2["timings"]["caches"] < 1.0
    # --force recomputes.
    run(PreprocessConfig(output_dir=out, video=synth["video"], depth_dir=synth["depth"], max_side=0, force=True))
    assert (out / PAIRS_CACHE).stat().st_mtime_ns != stamp


def test_recorded_pair_parameters_survive_ns_train_and_new_priors_rebuild(synth, tmp_path):
    from modgs_ns.scene.caches import PairParams

    out = tmp_path / "out"
    run(
        PreprocessConfig(
            output_dir=out,
            video=synth["video"],
            depth_dir=synth["depth"],
            max_side=0,
            diagnostics=False,
            pairs=PairParams(window=4, points_per_frame=500),
        )
    )
    assert json.loads((out / "transforms.json").read_text())["modgs"]["pairs"]["window"] == 4
    stamp = (out / PAIRS_CACHE).stat().st_mtime_ns
    # ns-train (through ModgsPipeline) trusts the caches preprocessing wrote: same file, window 4.
    env = dict(os.environ, TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
    cmd = [
        str(BIN / "ns-train"),
        "modgs-cpu",
        "--data",
        str(out),
        "--output-dir",
        str(tmp_path / "runs"),
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "3",
        "--pipeline.model.stage1.steps",
        "2",
        "--pipeline.model.stage1.eval-every",
        "0",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / PAIRS_CACHE).stat().st_mtime_ns == stamp and "building flow" not in r.stderr
    with np.load(out / PAIRS_CACHE) as z:
        assert np.abs(z["offsets"]).max() == 4
    # A replaced prior file makes the next ns-train rebuild the caches, still with window 4, saying why.
    prior = out / "depth_prior/frame_00003.npy"
    np.save(prior, np.load(prior) * 1.5 + 0.1)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    why = [ln for ln in r.stderr.splitlines() if "building flow" in ln]
    assert len(why) == 1 and "built from other inputs or parameters" in why[0]
    with np.load(out / PAIRS_CACHE) as z:
        assert (out / PAIRS_CACHE).stat().st_mtime_ns != stamp and np.abs(z["offsets"]).max() == 4


def test_stride_picks_the_matching_depth_files_and_resizes(synth, tmp_path):
    out = tmp_path / "out"
    run(
        PreprocessConfig(
            output_dir=out, video=synth["video"], depth_dir=synth["depth"], stride=3, max_side=64, diagnostics=False
        )
    )
    meta = json.loads((out / "transforms.json").read_text())
    assert [f["source_frame_index"] for f in meta["frames"]] == [0, 3, 6, 9]
    assert (meta["w"], meta["h"]) == (64, 48)
    d = np.load(out / "depth_prior/frame_00002.npy")
    src = np.load(synth["depth"] / "train_00006.npy")
    assert d.shape == (48, 64)
    np.testing.assert_array_equal(d, cv2.resize(src, (64, 48), interpolation=cv2.INTER_NEAREST))
    # Intrinsics follow the resize: 60 degrees horizontal field of view by default.
    assert abs(meta["fl_x"] - 32 / np.tan(np.radians(30))) < 1e-6


def test_nerfstudio_data_input_keeps_poses_and_intrinsics(synth, tmp_path):
    ns = tmp_path / "ns"
    (ns / "images").mkdir(parents=True)
    frames = []
    for k, f in enumerate(synth["train"][:6]):
        shutil.copy(synth["scene"] / f["file_path"], ns / "images" / f"frame_{k + 1:05d}.png")
        pose = np.array(f["transform_matrix"])
        pose[0, 3] += 0.01 * k  # a moving camera
        frames.append({"file_path": f"images/frame_{k + 1:05d}.png", "transform_matrix": pose.tolist()})
    m = synth["meta"]
    (ns / "transforms.json").write_text(
        json.dumps(
            {"fl_x": m["fl_x"], "fl_y": m["fl_y"], "cx": m["cx"], "cy": m["cy"], "w": 128, "h": 96, "frames": frames}
        )
    )
    depth = _first_depth_files(synth, tmp_path, 6)
    out = tmp_path / "out"
    run(PreprocessConfig(output_dir=out, nerfstudio_data=ns, depth_dir=depth, max_side=64, diagnostics=False))
    meta = json.loads((out / "transforms.json").read_text())
    np.testing.assert_allclose(meta["frames"][3]["transform_matrix"], frames[3]["transform_matrix"])
    assert abs(meta["fl_x"] - m["fl_x"] / 2) < 1e-9 and abs(meta["cx"] - m["cx"] / 2) < 1e-9


def test_image_folder_times_from_fps(synth, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k, f in enumerate(synth["train"][:5]):
        shutil.copy(synth["scene"] / f["file_path"], imgs / f"{k:03d}.png")
    depth = _first_depth_files(synth, tmp_path, 5)
    out = tmp_path / "out"
    run(PreprocessConfig(output_dir=out, images=imgs, depth_dir=depth, fps=2.0, diagnostics=False))
    meta = json.loads((out / "transforms.json").read_text())
    assert [f["timestamp"] for f in meta["frames"]] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [f["time"] for f in meta["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0]


def _cli(args, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCH_COMPILE_DISABLE="1")
    return subprocess.run(
        [str(BIN / "modgs-preprocess"), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


@pytest.mark.parametrize(
    "case",
    [
        "unreadable_video",
        "zero_frames",
        "missing_depth",
        "missized_depth",
        "nonfinite_depth",
        "unwritable_output",
        "no_depth",
    ],
)
def test_bad_input_is_one_line_error_and_leaves_nothing(synth, tmp_path, case):
    out = tmp_path / "out"
    video, depth = synth["video"], tmp_path / "depth"
    shutil.copytree(synth["depth"], depth)
    args = None
    if case == "unreadable_video":
        video = tmp_path / "clip.mp4"
        video.write_text("not a video")
    elif case == "zero_frames":
        video = tmp_path / "empty.avi"
        cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96)).release()
    elif case == "missing_depth":
        sorted(depth.iterdir())[4].unlink()
    elif case == "missized_depth":
        np.save(depth / "train_00007.npy", np.ones((50, 50), np.float32))
    elif case == "nonfinite_depth":
        d = np.load(depth / "train_00009.npy")
        d[3, 3] = np.nan
        np.save(depth / "train_00009.npy", d)
    elif case == "unwritable_output":
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        out = blocker / "out"
    elif case == "no_depth":
        args = ["--video", str(video), "--output-dir", str(out)]
    r = _cli(args or ["--video", str(video), "--output-dir", str(out), "--depth-dir", str(depth)], tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip() and "━" not in line]
    assert len(lines) == 1 and lines[0].startswith("modgs-preprocess: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not out.exists(), list(out.rglob("*")) if out.exists() else None


def test_tiny_depth_anything_model_loads_and_runs(tmp_path, synth):
    pytest.importorskip("transformers")
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from modgs_ns.preprocess.depth import TransformersDepth

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=70,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        reassemble_hidden_size=32,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    model_dir = tmp_path / "tiny-da"
    DepthAnythingForDepthEstimation(cfg).save_pretrained(model_dir)
    DPTImageProcessor(
        size={"height": 70, "width": 70},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(model_dir)
    backend = TransformersDepth(model_dir)
    assert backend.kind == "disparity"  # a "relative" model's output is kept as the disparity it is
    rgb = cv2.cvtColor(cv2.imread(str(synth["scene"] / synth["train"][0]["file_path"])), cv2.COLOR_BGR2RGB)
    d = backend(rgb, 0)
    # Independent expectation: the model's own prediction, resized to the frame, untouched.
    import torch

    proc = DPTImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        raw = DepthAnythingForDepthEstimation.from_pretrained(model_dir)(
            **proc(images=rgb, return_tensors="pt")
        ).predicted_depth
    raw = torch.nn.functional.interpolate(raw[:, None], size=rgb.shape[:2], mode="bicubic", align_corners=False)[0, 0]
    assert d.shape == rgb.shape[:2] and np.isfinite(d).all()
    np.testing.assert_allclose(d, raw.numpy(), rtol=1e-4, atol=1e-5)
    # Through the CLI on a few frames.
    r = _cli(
        [
            "--video",
            str(synth["video"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--depth-model",
            str(model_dir),
            "--max-frames",
            "4",
            "--no-diagnostics",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "out" / "depth_prior").glob("*.npy"))) == 4
    # The disparity route end to end: the kind is recorded, the caches aligned and inverted it.
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert meta["modgs"]["depth_prior"]["kind"] == "disparity"
    assert meta["modgs"]["preprocess"]["caches"]["prior_kind"] == "disparity"
    with np.load(tmp_path / "out" / DEPTH_CACHE) as z:
        depth = z["depth"]
    assert depth.shape[0] == 4 and np.isfinite(depth).all() and (depth >= 0).all() and (depth > 0).mean() > 0.5
    with pytest.raises(PreprocessError, match="huggingface-cli download"):
        TransformersDepth(tmp_path / "missing")


def test_raft_from_a_local_checkpoint(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_small

    from modgs_ns.preprocess.flow import make_flow

    ckpt = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), ckpt)
    flow = make_flow("raft-small", str(ckpt))
    a = np.random.default_rng(0).integers(0, 255, (60, 84, 3), dtype=np.uint8)  # small, not a multiple of 8
    f = flow(a, np.roll(a, 2, axis=1))
    assert f.shape == (60, 84, 2) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="checkpoint"):
        make_flow("raft-small", str(tmp_path / "none.pth"))


def test_dis_flow_accuracy_against_ground_truth_flow(synth):
    from modgs_ns.preprocess.flow import DISFlow

    meta, scene = synth["meta"], synth["scene"]
    K = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]])
    dis = DISFlow("medium")
    epe_all, epe_dyn, warp_err, still_err = [], [], [], []
    for a, b in zip(synth["train"][:-1:2], synth["train"][1::2]):
        gt, valid = ground_truth_flow(
            S.SceneParams(),
            a["time"],
            b["time"],
            np.array(a["transform_matrix"]),
            np.array(b["transform_matrix"]),
            K,
            128,
            96,
        )
        ia, ib = (cv2.imread(str(scene / f["file_path"])).astype(np.float32) for f in (a, b))
        dyn = cv2.imread(str(scene / a["dynamic_mask_path"]), 0) > 127
        epe = np.linalg.norm(dis(ia.astype(np.uint8), ib.astype(np.uint8)) - gt, axis=-1)
        epe_all.append(epe[valid].mean())
        epe_dyn.append(epe[valid & dyn].mean())
        # The GT flow itself: warping frame b back with it reproduces frame a on the moving objects.
        xs, ys = np.meshgrid(np.arange(128, dtype=np.float32), np.arange(96, dtype=np.float32))
        back = cv2.remap(ib, xs + gt[..., 0], ys + gt[..., 1], cv2.INTER_LINEAR)
        m = valid & dyn
        warp_err.append(np.abs(back - ia).mean(-1)[m].mean())
        still_err.append(np.abs(ib - ia).mean(-1)[m].mean())
    print(f"DIS EPE vs GT flow: all {np.mean(epe_all):.3f} px, dynamic {np.mean(epe_dyn):.3f} px")
    assert np.mean(warp_err) < 0.35 * np.mean(still_err)
    # Measured 0.21 px / 1.56 px at this 128x96 size (0.07-0.09 / 0.4-0.8 px at 320x240).
    assert np.mean(epe_all) < 0.3 and np.mean(epe_dyn) < 2.0


def _vtest() -> Path:
    """vtest.avi from Debian's opencv-doc, fetched once with `apt-get download` into a cache."""
    from samples import SampleUnavailable, vtest_video

    try:
        return vtest_video()
    except SampleUnavailable as err:
        pytest.skip(str(err))


def test_real_clip_vtest_static_mask_excludes_walkers(tmp_path):
    video = _vtest()
    n, size = 40, (240, 180)
    depth = tmp_path / "depth"
    depth.mkdir()
    # A precomputed depth folder: a ground plane receding towards the top of the image.
    ramp = np.repeat(np.linspace(30.0, 3.0, size[1], dtype=np.float32)[:, None], size[0], 1)
    for k in range(n):
        np.save(depth / f"{k:05d}.npy", ramp)
    out = tmp_path / "vtest"
    res = run(PreprocessConfig(output_dir=out, video=video, depth_dir=depth, max_frames=n, max_side=240))
    print("vtest time per step:", {k: round(v, 2) for k, v in res["timings"].items()})
    assert res["frames"] == n and tuple(res["size"]) == size
    with np.load(out / DEPTH_CACHE) as z:
        static = z["static"]
    frames = np.stack([cv2.imread(str(p), 0).astype(np.float32) for p in sorted((out / "images").glob("*.png"))])
    # Independent of flow: pixels that differ from the temporal median in >= 10% of the frames are
    # where people walk; pixels that never differ are background.
    diff = np.abs(frames - np.median(frames, 0)) > 25
    moving = diff.mean(0) >= 0.1
    never = diff.mean(0) == 0
    assert moving.mean() > 0.02 and never.mean() > 0.3
    assert static[moving].mean() < 0.25, static[moving].mean()
    assert static[never].mean() > 0.85, static[never].mean()
