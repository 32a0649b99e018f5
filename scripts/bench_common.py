"""Helpers shared by the benchmark scripts: run a logged command, add a generated scene's held-out
cameras to a preprocessed copy of it, train + score one scene."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def sh(cmd, log: Path, env) -> float:
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        raise SystemExit(
            f"failed: {' '.join(map(str, cmd[:3]))} (log {log}): {log.read_text().strip().splitlines()[-3:]}"
        )
    return time.time() - t0


def add_held_out(S: Path, P: Path) -> None:
    ms, mp = json.loads((S / "transforms.json").read_text()), json.loads((P / "transforms.json").read_text())
    train_s = {round(f["time"], 6): f for f in ms["frames"] if f["camera"] == "train"}
    train_p = sorted(mp["frames"], key=lambda f: f["time"])
    s_sorted = sorted(train_s.values(), key=lambda f: f["time"])
    for fp, fs in zip(train_p, s_sorted):  # metric depth of the training frames (for the scale)
        dst = P / "depth_gt" / Path(fs["gt_depth_path"]).name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(S / fs["gt_depth_path"], dst)
        fp["gt_depth_path"] = f"depth_gt/{dst.name}"
    test = []
    for f in ms["frames"]:
        if f["camera"] == "train" or f"images/{Path(f['file_path']).name}" not in ms["test_filenames"]:
            continue
        ref = train_s[round(f["time"], 6)]
        rel = np.linalg.inv(np.array(ref["transform_matrix"])) @ np.array(f["transform_matrix"])
        k = s_sorted.index(ref)
        pose = np.array(train_p[k]["transform_matrix"]) @ rel
        g = dict(f)
        g["time"] = train_p[k]["time"]  # the video's time for that frame
        g["transform_matrix"] = pose.tolist()
        for key in ("file_path", "gt_depth_path", "dynamic_mask_path"):
            dst = P / Path(f[key]).parent.name / Path(f[key]).name
            dst.parent.mkdir(exist_ok=True)
            shutil.copy(S / f[key], dst)
            g[key] = f"{dst.parent.name}/{dst.name}"
        test.append(g)
    mp["frames"] = train_p + test
    mp["test_filenames"] = [g["file_path"] for g in test]
    (P / "transforms.json").write_text(json.dumps(mp, indent=1))


def train_and_eval(
    scene: Path, tag: str, work: Path, stage1: int, stage2: int, env, extra=()
) -> tuple[dict, dict, float]:
    """`ns-train modgs-cpu` then `modgs-eval` (metric-depth test-camera scale); (mean metrics,
    test-camera scale, train seconds)."""
    runs = work / "runs"
    t = sh(
        [
            BIN / "ns-train",
            "modgs-cpu",
            "--data",
            scene,
            "--output-dir",
            runs,
            "--experiment-name",
            tag,
            "--timestamp",
            "run",
            "--vis",
            "tensorboard",
            "--max-num-iterations",
            stage1 + stage2,
            "--pipeline.model.stage1.steps",
            stage1,
            *extra,
        ],
        work / f"{tag}_train.log",
        env,
    )
    config = runs / tag / "modgs-cpu" / "run" / "config.yml"
    sh(
        [
            BIN / "modgs-eval",
            "--load-config",
            config,
            "--output-dir",
            work / f"{tag}_eval",
            "--scale-method",
            "metric-depth",
            "--grid-every",
            "0",
        ],
        work / f"{tag}_eval.log",
        env,
    )
    m = json.loads((work / f"{tag}_eval" / "metrics.json").read_text())
    return m["mean"], m["test_camera_scale"], t


def print_table(rows: dict, first: str) -> None:
    """Markdown table of train_and_eval results, one row per name."""
    print(f"| {first} | test PSNR | SSIM | PSNR dynamic | PSNR co-visible | test-camera scale | train time |")
    print("|---|---|---|---|---|---|---|")
    for name, (m, sc, t) in rows.items():
        print(
            f"| {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m.get('psnr_dynamic') or float('nan'):.2f} | "
            f"{m.get('psnr_covisible') or float('nan'):.2f} | {sc['scale']:.4f} | {t:.0f} s |"
        )


def bench_parser(doc: str, name: str):
    """The options every training benchmark has: stage lengths and a work folder."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage2-steps", type=int, default=600)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "benchmark_output" / name)
    return ap


def fresh_work_dir(path: Path) -> tuple[Path, dict]:
    """An empty work folder and the environment for the subprocesses (offline, no torch.compile)."""
    import os

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path, dict(os.environ, TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
