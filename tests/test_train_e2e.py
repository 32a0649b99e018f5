"""Real nerfstudio commands on a tiny generated scene: ns-train (with densification, checkpoint and
resume), ns-eval, ns-render dataset, modgs-render spiral, and one-line errors for bad data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modgs_ns.synth.generate import SynthConfig, generate_scene

BIN = Path(sys.executable).parent


def run(cmd, cwd, timeout=600):
    env = dict(os.environ)
    return subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


N1 = 10
TINY = [
    "--vis",
    "tensorboard",
    "--pipeline.model.stage1.steps",
    str(N1),
    "--pipeline.model.stage1.points",
    "512",
    "--pipeline.model.deformation.hidden",
    "32",
    "32",
    "--pipeline.model.deformation.feature-dims",
    "32",
    "--pipeline.model.deformation.proj-dims",
    "32",
    "--pipeline.model.deformation.gabor-hidden",
    "32",
    "--pipeline.model.canonical-init.max-points",
    "2000",
    "--pipeline.model.depth-loss.ordinal-pairs",
    "5000",
    "--pipeline.model.warmup-length",
    "5",
    "--pipeline.model.refine-every",
    "5",
    "--pipeline.model.densify-grad-thresh",
    "0.00005",
    "--steps-per-save",
    "5",
    "--steps-per-eval-image",
    "4",  # evaluates in both stages
    "--save-only-latest-checkpoint",
    "False",
]


def scalars(run_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(next(run_dir.glob("events.out.*"))))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    generate_scene(
        SynthConfig(num_frames=4, width=64, height=48, supersample=1, num_seed_points=400, val_every=2),
        root / "scene",
        progress=False,
    )
    return root


def test_too_few_steps_for_stage2_is_one_line_error(tiny):
    r = run(
        ["ns-train", "modgs-cpu", "--data", "scene", "--max-num-iterations", "5", "--pipeline.model.stage1.steps", "5"],
        tiny,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "must exceed --pipeline.model.stage1.steps" in r.stderr


@pytest.mark.parametrize(
    "flag, value, message",
    [("lifespans.width", "-1", "must be >= 0 (0 = off)"), ("canonical-init.thickness", "1.5", "must be in (0, 1]")],
)
def test_lifespan_options_out_of_range_are_one_line_errors(tiny, flag, value, message):
    r = run(["ns-train", "modgs-cpu", "--data", "scene", f"--pipeline.model.{flag}", value], tiny)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"--pipeline.model.{flag} {message}, got" in r.stderr


def test_splatfacto_option_modgs_ignores_is_one_line_error(tiny):
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            "scene",
            "--vis",
            "tensorboard",
            "--pipeline.model.ssim-lambda",
            "0.5",
            "--pipeline.model.use-scale-regularization",
            "True",
        ],
        tiny,
    )
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(err) == 1
    assert "--pipeline.model.ssim-lambda" in err[0] and "--pipeline.model.use-scale-regularization" in err[0]
    assert "dssim-lambda" in err[0]


def test_ns_train_help_lists_modgs(tiny):
    r = run(["ns-train", "--help"], tiny)
    assert r.returncode == 0
    assert "modgs" in r.stdout and "modgs-cpu" in r.stdout


def test_paper_preset_trains_on_cpu(tiny):
    r = run(
        [
            "ns-train",
            "modgs",
            "--data",
            "scene",
            "--output-dir",
            "out_paper",
            "--machine.device-type",
            "cpu",
            "--vis",
            "tensorboard",
            "--max-num-iterations",
            "3",
            "--pipeline.model.stage1.steps",
            "1",
            "--pipeline.model.stage1.points",
            "2000",
            "--pipeline.model.canonical-init.max-points",
            "3000",
        ],
        tiny,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert list((tiny / "out_paper").rglob("step-000000002.ckpt"))


def test_two_phases_resume_eval_render(tiny):
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            "scene",
            "--output-dir",
            "out",
            "--experiment-name",
            "e",
            "--timestamp",
            "a",
            "--max-num-iterations",
            "30",
            "--logging.steps-per-log",
            "1",
            *TINY,
        ],
        tiny,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tiny / "scene/caches/pairs.npz").is_file()  # built on first use
    assert "canonical initialization at step 10" in r.stdout.replace("\n", " ")
    run_dir = tiny / "out/e/modgs-cpu/a"
    sc = scalars(run_dir)
    # Stage 1 trains on 3D pairs only, stage 2 renders: the switch is at N1.
    assert sorted(sc["Train Loss Dict/flow3d_loss"]) == list(range(0, N1))
    assert min(sc["Train Loss Dict/main_loss"]) == N1 and "Train Loss Dict/depth_loss" in sc
    counts = sc["Train Metrics Dict/gaussian_count"]
    assert min(counts) == N1 and counts[N1] != 400 and counts[29] != counts[N1]  # re-initialized, then densified
    ckpts = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts[-1].name == "step-000000029.ckpt"
    import torch

    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # no numpy objects: no allow-list needed
    assert state["pipeline"]["_model.gauss_params.means"].shape[0] == counts[29]

    # Resume from a stage-1 checkpoint: the run crosses N1 and re-initializes.
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            "scene",
            "--output-dir",
            "out",
            "--experiment-name",
            "e",
            "--timestamp",
            "b",
            "--max-num-iterations",
            "16",  # the run's total: a resumed modgs run continues to it (ModgsTrainer)
            "--load-checkpoint",
            str(run_dir / "nerfstudio_models/step-000000005.ckpt"),
            *TINY,
        ],
        tiny,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "canonical initialization at step 10" in r.stdout.replace("\n", " ")
    assert (tiny / "out/e/modgs-cpu/b/nerfstudio_models/step-000000015.ckpt").exists()

    # Resume from a densified stage-2 checkpoint (splatfacto 1.1.5 crashes here without the
    # optimizer re-binding): no second initialization, densification goes on.
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            "scene",
            "--output-dir",
            "out",
            "--experiment-name",
            "e",
            "--timestamp",
            "c",
            "--max-num-iterations",
            "31",
            "--load-checkpoint",
            str(run_dir / "nerfstudio_models/step-000000020.ckpt"),
            "--logging.steps-per-log",
            "1",
            *TINY,
        ],
        tiny,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "canonical initialization" not in r.stdout
    sc_c = scalars(tiny / "out/e/modgs-cpu/c")
    assert min(sc_c["Train Loss Dict/main_loss"]) == 21 and "Train Loss Dict/flow3d_loss" not in sc_c

    r = run(["ns-eval", "--load-config", str(run_dir / "config.yml"), "--output-path", "eval.json"], tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tiny / "eval.json").read_text())["results"]
    assert 5 < res["psnr"] < 60 and 0 < res["ssim"] <= 1

    r = run(
        [
            "ns-render",
            "dataset",
            "--load-config",
            str(run_dir / "config.yml"),
            "--split",
            "test",
            "--output-path",
            "rendered",
            "--rendered-output-names",
            "rgb",
            "depth",
        ],
        tiny,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tiny / "rendered/test/rgb").glob("*"))) == 8  # 2 test cameras x 4 times

    r = run(
        [
            "modgs-render",
            "spiral",
            "--load-config",
            str(run_dir / "config.yml"),
            "--output-path",
            "spiral.mp4",
            "--num-frames",
            "6",
        ],
        tiny,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tiny / "spiral.mp4").stat().st_size > 1000
    path = json.loads((tiny / "spiral.camera_path.json").read_text())["camera_path"]
    times = [f["render_time"] for f in path]
    assert len(times) == 6 and times == sorted(times) and times[0] == 0 and times[-1] == 1


def test_without_stage1_deformation_stays_identity_from_first_frame(tiny):
    args = [a if a != str(N1) else "0" for a in TINY]
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            "scene",
            "--output-dir",
            "out0",
            "--experiment-name",
            "e",
            "--timestamp",
            "z",
            "--max-num-iterations",
            "3",
            *args,
        ],
        tiny,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "canonical initialization at step 0" in r.stdout.replace("\n", " ")


@pytest.mark.parametrize("breakage", ["no_transforms", "missing_depth"])
def test_bad_data_gives_one_line_error(tiny, tmp_path, breakage):
    import shutil

    scene = tmp_path / "bad"
    if breakage == "no_transforms":
        scene.mkdir()
        expect = "transforms.json"
    else:
        shutil.copytree(tiny / "scene", scene)
        (scene / "depth_prior/train_00002.npy").unlink()
        expect = "train_00002.npy"
    r = run(
        [
            "ns-train",
            "modgs-cpu",
            "--data",
            str(scene),
            "--output-dir",
            str(tmp_path / "out"),
            "--max-num-iterations",
            "2",
            "--pipeline.model.stage1.steps",
            "1",
            "--vis",
            "tensorboard",
        ],
        tmp_path,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    err = [line for line in r.stderr.splitlines() if "modgs-data: error" in line]
    assert len(err) == 1 and expect in err[0]
