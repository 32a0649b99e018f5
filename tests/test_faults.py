"""Careless and hostile use (issue 16): stale or corrupt caches, bad numbers, interrupted and killed
runs, resumed training, one-line errors, and safe defaults. Every command runs as a user would run it."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from modgs_ns.synth.depth_prior import PriorDistortion
from modgs_ns.synth.generate import SynthConfig, generate_scene

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "--vis", "tensorboard", "--pipeline.model.stage1.points", "256", "--pipeline.model.deformation.hidden", "16", "16",
    "--pipeline.model.deformation.feature-dims", "16", "--pipeline.model.deformation.proj-dims", "16",
    "--pipeline.model.deformation.gabor-hidden", "16", "--pipeline.model.canonical-init.max-points", "1500",
    "--pipeline.model.depth-loss.ordinal-pairs", "2000", "--pipeline.model.stage1.eval-every", "0",
    "--pipeline.model.warmup-length", "3", "--pipeline.model.refine-every", "3",
    "--pipeline.model.densify-grad-thresh", "0.00005", "--logging.steps-per-log", "1",
]  # fmt: skip


def cli(cmd, cwd, timeout=600, **kw):
    return subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), **kw)  # fmt: skip


def error_lines(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if "error:" in ln]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A generated scene's training frames as an image folder and its (depth-kind) prior as a folder."""
    root = tmp_path_factory.mktemp("faults")
    scene = generate_scene(SynthConfig(num_frames=8, width=96, height=72, supersample=1, num_seed_points=100,
                                       prior=PriorDistortion(kind="depth")), root / "synth", progress=False)  # fmt: skip
    meta = json.loads((scene / "transforms.json").read_text())
    train = sorted((f for f in meta["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    (root / "frames").mkdir()
    (root / "depth").mkdir()
    for k, f in enumerate(train):
        shutil.copy(scene / f["file_path"], root / "frames" / f"{k:03d}.png")
        shutil.copy(scene / f["depth_prior_path"], root / "depth" / f"{k:03d}.npy")
    return root


def preprocess_args(inputs, out, *extra):
    return ["modgs-preprocess", "--images", inputs / "frames", "--depth-dir", inputs / "depth", "--output-dir", out,
            "--pairs.window", "3", "--pairs.points-per-frame", "400", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def clean(inputs):
    """The reference: one uninterrupted preprocessing run, and how long it took."""
    t0 = time.time()
    r = cli(preprocess_args(inputs, inputs / "clean"), inputs)
    assert r.returncode == 0, r.stderr[-2000:]
    return inputs / "clean", time.time() - t0


def scene_digest(scene: Path) -> dict:
    """What a scene holds, comparable across runs: file bytes for images/priors/points, array contents for
    the caches (a zip archive's own timestamps differ), transforms.json without its timings."""
    out = {}
    for p in sorted(scene.rglob("*")):
        rel = str(p.relative_to(scene))
        if not p.is_file() or rel.startswith(".") or rel == "preprocess_state.json":
            continue
        if p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: z[k].tobytes() for k in z.files}
        elif p.name == "transforms.json":
            meta = json.loads(p.read_text())
            meta["modgs"]["preprocess"].pop("timings_s", None)
            out[rel] = meta
        else:
            out[rel] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------------------- caches
def test_caches_replaced_foreign_or_corrupt_are_rebuilt_with_one_line(clean, tmp_path, capsys):
    from modgs_ns.preprocess.pairs import ensure_caches
    from modgs_ns.scene.caches import PAIRS_CACHE

    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    assert ensure_caches(scene, progress=False) == {}  # as preprocessing left them: trusted
    # 64 bytes changed inside pairs.npz (still a valid zip): its CRC check fails, it is rebuilt.
    data = bytearray((scene / PAIRS_CACHE).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    (scene / PAIRS_CACHE).write_bytes(bytes(data))
    capsys.readouterr()
    assert ensure_caches(scene, progress=False)
    assert "caches/pairs.npz is unreadable" in capsys.readouterr().err
    # Another scene's caches copied in: keyed on the other scene's content, never trusted.
    other = tmp_path / "other"
    shutil.copytree(clean[0], other)
    img = cv2.imread(str(other / "images/frame_00002.png"))
    cv2.imwrite(str(other / "images/frame_00002.png"), 255 - img)
    ensure_caches(other, progress=False)
    shutil.rmtree(scene / "caches")
    shutil.copytree(other / "caches", scene / "caches")
    capsys.readouterr()
    assert ensure_caches(scene, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built from other inputs or parameters" in err[0]


# ----------------------------------------------------------------------------------- numeric options
@pytest.mark.parametrize(
    "flags, named",
    [(["--fov-deg", "0"], "--fov-deg"), (["--fov-deg", "200"], "--fov-deg"), (["--fx", "-50"], "--fx"),
     (["--max-frames", "-1"], "--max-frames"), (["--stride", "0"], "--stride"), (["--fps", "nan"], "--fps"),
     (["--pairs.window", "0"], "--pairs.window")],
)  # fmt: skip
def test_bad_numbers_are_one_line_naming_the_flag(inputs, tmp_path, flags, named):
    out = tmp_path / "out"
    r = cli(preprocess_args(inputs, out, *flags), tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and named in lines[0], r.stderr[-1500:]
    assert not out.exists()


def test_scene_with_an_infinite_focal_length_or_one_frame_is_one_line(clean, tmp_path):
    from modgs_ns.cli import one_line_errors
    from modgs_ns.preprocess.pairs import ensure_caches

    for case in ("inf_focal", "one_frame"):
        scene = tmp_path / case
        shutil.copytree(clean[0], scene)
        meta = json.loads((scene / "transforms.json").read_text())
        if case == "inf_focal":
            meta["fl_x"] = float("inf")
        else:
            meta["train_filenames"] = meta["train_filenames"][:1]
        (scene / "transforms.json").write_text(json.dumps(meta))
        with pytest.raises(SystemExit):
            with one_line_errors("modgs-data"):
                ensure_caches(scene, progress=False)


# -------------------------------------------------------------------------------- preprocessing kills
def test_interrupt_keeps_finished_steps_and_the_rerun_equals_a_clean_run(inputs, clean, tmp_path):
    out = tmp_path / "out"
    # Each flow call made to take 0.5 s (a sitecustomize on the child's path, nothing in the package), so the
    # interrupt below lands in the flow step however loaded the machine is.
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import time\nimport modgs_ns.preprocess.flow as F\n_make = F.make_flow\n"
        "def make_flow(*a, **k):\n    f = _make(*a, **k)\n    return lambda x, y: (time.sleep(0.5), f(x, y))[1]\n"
        "F.make_flow = make_flow\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(slow), os.environ.get("PYTHONPATH", "")]))
    # As in a terminal: a background job (e.g. a CI runner) inherits SIGINT ignored; Ctrl-C's default restored.
    proc = subprocess.Popen([str(BIN / "modgs-preprocess"), *map(str, preprocess_args(inputs, out)[1:])],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out / ".staging/depth_prior").is_dir():
        time.sleep(0.05)  # interrupt once the depth prior is done (in the flow / caches step)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1500:]
    line = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(line) == 1 and "frames" in line[0] and "depth prior" in line[0], err[-1500:]
    assert (out / ".staging/images").is_dir() and not (out / "transforms.json").exists()
    r = cli(preprocess_args(inputs, out), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "frames up to date" in r.stderr and "depth prior up to date" in r.stderr  # the kept steps were reused
    assert scene_digest(out) == scene_digest(clean[0]) and not (out / ".staging").exists()


def test_killed_at_random_points_the_rerun_equals_a_clean_run(inputs, clean, tmp_path):
    reference = scene_digest(clean[0])
    rng = np.random.default_rng(16)
    for k, frac in enumerate(sorted(rng.uniform(0.15, 0.95, 5))):
        out = tmp_path / f"kill{k}"
        proc = subprocess.Popen([str(BIN / "modgs-preprocess"), *map(str, preprocess_args(inputs, out)[1:])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))  # fmt: skip
        try:
            proc.wait(timeout=frac * clean[1])
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL: no handler runs
            proc.wait()
        r = cli(preprocess_args(inputs, out), tmp_path)
        assert r.returncode == 0, (frac, r.stderr[-2000:])
        assert scene_digest(out) == reference, frac
        assert not list(out.glob(".*")), list(out.glob(".*"))  # no temporary or staged file left


def test_failed_rerun_leaves_the_scene_as_it_was(inputs, clean, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    before = scene_digest(scene)
    bad = tmp_path / "bad_depth"
    shutil.copytree(inputs / "depth", bad)
    d = np.load(bad / "005.npy")
    d[2, 2] = np.nan
    np.save(bad / "005.npy", d)
    args = preprocess_args(inputs, scene, "--max-side", "32")
    args[args.index(inputs / "depth")] = bad
    r = cli(args, tmp_path)
    assert r.returncode == 1 and len(error_lines(r.stderr)) == 1 and "non-finite" in r.stderr
    assert scene_digest(scene) == before  # frames, transforms.json, priors and caches: all still the old ones
    # Stale temporary files of a killed run are removed by the next run.
    (scene / "caches/.pairs.abcd.npz").write_bytes(b"x" * 1000)
    (scene / ".tmp-depth-xyz").mkdir()
    r = cli(preprocess_args(inputs, scene), tmp_path)
    assert (
        r.returncode == 0
        and not (scene / "caches/.pairs.abcd.npz").exists()
        and not (scene / ".tmp-depth-xyz").exists()
    )


# --------------------------------------------------------------------------------------------- training
def lrs(ckpt: Path) -> dict:
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {name: [g["lr"] for g in opt["param_groups"]] for name, opt in state["optimizers"].items()}, state


def test_resumed_run_follows_the_same_schedules_and_skips_a_broken_checkpoint(clean, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    base = ["ns-train", "modgs-cpu", "--data", scene, "--output-dir", tmp_path / "runs", "--max-num-iterations", "14",
            "--pipeline.model.stage1.steps", "6", "--steps-per-save", "4", "--save-only-latest-checkpoint", "False",
            "--experiment-name", "e", *TINY_TRAIN]  # fmt: skip
    r = cli([*base, "--timestamp", "full"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    full = tmp_path / "runs/e/modgs-cpu/full"
    # Killed at a fixed step: the run folder as a kill right after step 4's checkpoint leaves it, plus a
    # 0-byte step-8 checkpoint (a kill during that write, as nerfstudio's own writer leaves it).
    cut = tmp_path / "runs/e/modgs-cpu/cut"
    shutil.copytree(full, cut)
    for f in (cut / "nerfstudio_models").glob("step-*.ckpt"):
        if int(f.stem.split("-")[1]) > 4:
            f.unlink()
    (cut / "nerfstudio_models/step-000000008.ckpt").write_bytes(b"")
    r = cli([*base, "--timestamp", "cut", "--load-dir", cut / "nerfstudio_models"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step-000000008.ckpt is unreadable" in r.stderr
    assert "canonical initialization at step 6" in r.stdout.replace("\n", " ")  # the phase switch, on time
    last = sorted((cut / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    assert last.name == "step-000000013.ckpt"  # continued to the run's total, not 14 more steps
    (lr_a, sa), (lr_b, sb) = lrs(full / "nerfstudio_models" / last.name), lrs(last)
    assert lr_a.keys() == lr_b.keys()
    for name in lr_a:
        np.testing.assert_allclose(lr_b[name], lr_a[name], rtol=1e-12, atol=0, err_msg=name)
    n_a, n_b = (s["pipeline"]["_model.gauss_params.means"].shape[0] for s in (sa, sb))
    print(f"final Gaussians: uninterrupted {n_a}, resumed {n_b}")
    assert n_a == n_b


def test_training_killed_at_random_points_continues_at_the_right_step_and_phase(clean, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    base = ["ns-train", "modgs-cpu", "--data", scene, "--output-dir", tmp_path / "runs", "--max-num-iterations", "40",
            "--pipeline.model.stage1.steps", "20", "--steps-per-save", "5", "--experiment-name", "e", "--timestamp", "t",
            *TINY_TRAIN]  # fmt: skip
    ckpts = tmp_path / "runs/e/modgs-cpu/t/nerfstudio_models"
    rng = np.random.default_rng(7)
    for delay in rng.uniform(10, 25, 2):  # seconds: process start-up is ~8 s, the run ~20-30 s
        proc = subprocess.Popen([str(BIN / base[0]), *map(str, base[1:]), *(["--load-dir", ckpts] if ckpts.is_dir() else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, env=dict(os.environ))  # fmt: skip
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    r = cli([*base, *(["--load-dir", ckpts] if ckpts.is_dir() else [])], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import torch

    state = torch.load(sorted(ckpts.glob("step-*.ckpt"))[-1], map_location="cpu", weights_only=True)
    assert state["step"] == 39  # the run's total, whatever the kills
    out = r.stdout.replace("\n", " ")
    loaded = re.search(r"modgs: resuming from step-(\d+)\.ckpt", r.stderr)
    resumed_at = int(loaded.group(1)) + 1 if loaded else 0
    # Phase: the canonical initialization happens at step 20 exactly when this run crossed it.
    assert ("canonical initialization at step 20" in out) == (resumed_at <= 20), (resumed_at, out[-1500:])
    assert not list(ckpts.parent.glob(".partial-*"))


def test_resuming_a_finished_run_says_so_and_changes_nothing(clean, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    base = ["ns-train", "modgs-cpu", "--data", scene, "--output-dir", tmp_path / "runs", "--max-num-iterations", "16",
            "--pipeline.model.stage1.steps", "8", "--experiment-name", "e", "--timestamp", "t", *TINY_TRAIN]  # fmt: skip
    assert cli(base, tmp_path).returncode == 0
    ckpts = tmp_path / "runs/e/modgs-cpu/t/nerfstudio_models"
    before = {p.name: p.read_bytes() for p in ckpts.glob("*.ckpt")}
    assert list(before) == ["step-000000015.ckpt"]
    r = cli([*base, "--load-dir", ckpts], tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "modgs: the run is already finished (step 15 of --max-num-iterations 16)" in r.stderr
    assert {p.name: p.read_bytes() for p in ckpts.glob("*.ckpt")} == before


# ------------------------------------------------------------------------------------ one-line errors
def test_export_to_an_unwritable_folder_fails_before_loading(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("not loaded\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.time()
    r = cli(["modgs-export", "--load-config", config, "--output-dir", blocker / "out", "--time", "0.5"], tmp_path)
    assert r.returncode == 2 and len(error_lines(r.stderr)) == 1 and "--output-dir" in r.stderr
    assert "Traceback" not in r.stderr and time.time() - t0 < 30


def test_eval_refuses_a_scene_without_held_out_cameras(clean, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    r = cli(["ns-train", "modgs-cpu", "--data", scene, "--output-dir", tmp_path / "runs", "--experiment-name", "e",
             "--timestamp", "t", "--max-num-iterations", "3", "--pipeline.model.stage1.steps", "2", *TINY_TRAIN], tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    config = tmp_path / "runs/e/modgs-cpu/t/config.yml"
    r = cli(["modgs-eval", "--load-config", config, "--output-dir", tmp_path / "ev", "--no-training-views"], tmp_path)
    assert r.returncode == 2 and "no held-out cameras" in r.stderr and len(error_lines(r.stderr)) == 1
    r = cli(["modgs-eval", "--load-config", config, "--output-dir", tmp_path / "ev", "--no-training-views",
             "--allow-training-views", "--grid-every", "0"], tmp_path)  # fmt: skip
    assert r.returncode == 0 and "not a novel-view metric" in r.stderr
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["held_out_cameras"] is False


def test_duplicate_times_warn(clean, tmp_path, capsys):
    from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
    from modgs_ns.preprocess.pairs import ensure_caches

    scene = tmp_path / "s"
    shutil.copytree(clean[0], scene)
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"][3]["time"] = meta["frames"][2]["time"]
    (scene / "transforms.json").write_text(json.dumps(meta))
    ensure_caches(scene, progress=False)
    capsys.readouterr()
    ModgsDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    warn = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "share a time" in warn[0]


# ----------------------------------------------------------------------------------------- safe defaults
def test_safe_defaults_and_no_shell():
    from modgs_ns.configs import modgs_cpu_method, modgs_method

    for method in (modgs_method, modgs_cpu_method):
        assert method.config.viewer.websocket_host == "127.0.0.1"  # no unauthenticated viewer on the network
    shell = [str(p) for d in ("modgs_ns", "scripts", "tests") for p in (ROOT / d).rglob("*.py")
             if re.search(r"shell\s*=\s*True", p.read_text()) and p.name != "test_faults.py"]  # fmt: skip
    assert not shell, shell
    readme = (ROOT / "README.md").read_text()
    assert "--pipeline.datamanager.dataparser.test-camera-scale" not in readme  # ns-train rejects that spelling
    assert "Loading runs from others" in readme and "--viewer.websocket-host" in readme


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00"])
def test_an_empty_or_truncated_depth_prior_is_a_format_error(tmp_path, content):
    from modgs_ns.scene.errors import SceneFormatError
    from modgs_ns.scene.format import load_depth_prior

    path = tmp_path / "prior.npy"
    path.write_bytes(content)  # 0 bytes (numpy raises EOFError) or a cut-off header
    with pytest.raises(SceneFormatError, match="cannot read depth prior"):
        load_depth_prior(path, 4, 4)
