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
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


TINY = [
    "--vis", "tensorboard",
    "--pipeline.model.warmup-length", "10",
    "--pipeline.model.refine-every", "10",
    "--pipeline.model.densify-grad-thresh", "0.00005",
    "--steps-per-save", "20",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    generate_scene(SynthConfig(num_frames=4, width=64, height=48, supersample=1, num_seed_points=400, val_every=2), root / "scene", progress=False)
    return root


def test_ns_train_help_lists_modgs(tiny):
    r = run(["ns-train", "--help"], tiny)
    assert r.returncode == 0
    assert "modgs" in r.stdout and "modgs-cpu" in r.stdout


def test_paper_preset_trains_on_cpu(tiny):
    r = run(["ns-train", "modgs", "--data", "scene", "--output-dir", "out_paper", "--machine.device-type", "cpu",
             "--vis", "tensorboard", "--max-num-iterations", "3"], tiny)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert list((tiny / "out_paper").rglob("step-000000002.ckpt"))


def test_train_resume_eval_render(tiny):
    r = run(["ns-train", "modgs-cpu", "--data", "scene", "--output-dir", "out", "--experiment-name", "e", "--timestamp", "a",
             "--max-num-iterations", "30", *TINY], tiny)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = tiny / "out/e/modgs-cpu/a"
    ckpts = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts and ckpts[-1].name == "step-000000029.ckpt"
    import torch

    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # loads through the numpy shim
    n_gauss = state["pipeline"]["_model.gauss_params.means"].shape[0]
    assert n_gauss != 400  # densification changed the count before the checkpoint

    # Resume from the densified checkpoint (splatfacto 1.1.5 crashes here without the optimizer re-binding).
    r = run(["ns-train", "modgs-cpu", "--data", "scene", "--output-dir", "out", "--experiment-name", "e", "--timestamp", "b",
             "--max-num-iterations", "25", "--load-dir", str(run_dir / "nerfstudio_models"), *TINY], tiny)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tiny / "out/e/modgs-cpu/b/nerfstudio_models/step-000000054.ckpt").exists()

    r = run(["ns-eval", "--load-config", str(run_dir / "config.yml"), "--output-path", "eval.json"], tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tiny / "eval.json").read_text())["results"]
    assert 5 < res["psnr"] < 60 and 0 < res["ssim"] <= 1

    r = run(["ns-render", "dataset", "--load-config", str(run_dir / "config.yml"), "--split", "test",
             "--output-path", "rendered", "--rendered-output-names", "rgb", "depth"], tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tiny / "rendered/test/rgb").glob("*"))) == 8  # 2 test cameras x 4 times

    r = run(["modgs-render", "spiral", "--load-config", str(run_dir / "config.yml"), "--output-path", "spiral.mp4", "--num-frames", "6"], tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tiny / "spiral.mp4").stat().st_size > 1000
    path = json.loads((tiny / "spiral.camera_path.json").read_text())["camera_path"]
    times = [f["render_time"] for f in path]
    assert len(times) == 6 and times == sorted(times) and times[0] == 0 and times[-1] == 1


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
    r = run(["ns-train", "modgs-cpu", "--data", str(scene), "--output-dir", str(tmp_path / "out"), "--max-num-iterations", "2",
             "--vis", "tensorboard"], tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    err = [line for line in r.stderr.splitlines() if "modgs-data: error" in line]
    assert len(err) == 1 and expect in err[0]
