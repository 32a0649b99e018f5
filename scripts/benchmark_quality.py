#!/usr/bin/env python
"""Quality benchmark: MoDGS and its ablations on generated scenes, scored on held-out cameras.

Scenes (modgs-synth, each with 2 held-out cameras at +-15 degrees and ground truth):
  rigid     rolling ball + turning box, static camera
  nonrigid  pulsating, wobbling blob, static camera
  orbit     all objects, the training camera slowly orbits (8 degrees)
Variants (same stage-2 step budget for all):
  a  full MoDGS: stage-1 3D-aware initialization + ordinal depth loss
  b  without the 3D-aware initialization (stage1-steps 0, deformation learnt from images only)
  c  Pearson-correlation depth loss instead of ordinal
  d  plain deformable GS: no initialization, no depth loss
  e  static Gaussians (splatfacto's model, time ignored)
Each run is a real `ns-train modgs-cpu` + `modgs-eval` (test-camera scale solved from metric depth,
the same for every variant of a scene). Writes docs/benchmark_quality.md and a JSON next to it.

    .venv/bin/python scripts/benchmark_quality.py                      # the default table
    .venv/bin/python scripts/benchmark_quality.py --scenes rigid --variants a d --stage2-steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SCENES = {
    "rigid": ["--scene.objects", "rigid", "--scene.motion-amplitude", "0.6"],
    "nonrigid": ["--scene.objects", "nonrigid"],
    "orbit": ["--scene.camera-motion", "orbit", "--scene.motion-amplitude", "0.6"],
}
VARIANTS = {  # name, with stage 1, extra ns-train arguments
    "a": ("full MoDGS", True, []),
    "b": ("no 3D-aware init", False, []),
    "c": ("Pearson depth loss", True, ["--pipeline.model.depth-loss", "pearson"]),
    "d": ("deformable GS (no init, no depth loss)", False, ["--pipeline.model.depth-loss", "none"]),
    "e": ("static Gaussians", False, ["--pipeline.model.depth-loss", "none", "--pipeline.model.static-scene", "True"]),
}


def run(cmd: list[str], log: Path, env: dict) -> float:
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (log {log}): {tail}")
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage2-steps", type=int, default=600)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "benchmark_output")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmark_quality.md")
    args = ap.parse_args()

    env = dict(os.environ, TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
    env.setdefault("TORCH_HOME", str(args.work_dir / "torch_home"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for scene in args.scenes:
        sdir = args.work_dir / scene / "scene"
        if not (sdir / "transforms.json").exists():
            run([str(BIN / "modgs-synth"), "--output-dir", str(sdir), "--overwrite", "--scene.num-frames", str(args.frames),
                 "--scene.width", str(args.width), "--scene.height", str(args.height), *SCENES[scene]], args.work_dir / f"{scene}_synth.log", env)
        for v in args.variants:
            name, with_stage1, extra = VARIANTS[v]
            n1 = args.stage1_steps if with_stage1 else 0
            runs = args.work_dir / scene / "runs"
            shutil.rmtree(runs / v, ignore_errors=True)
            cmd = [str(BIN / "ns-train"), "modgs-cpu", "--data", str(sdir), "--output-dir", str(runs), "--experiment-name", v,
                   "--timestamp", "run", "--vis", "tensorboard", "--max-num-iterations", str(n1 + args.stage2_steps),
                   "--pipeline.model.stage1-steps", str(n1), *extra]
            print(f"[{scene}/{v}] training: {name}", flush=True)
            t_train = run(cmd, args.work_dir / scene / f"{v}_train.log", env)
            config = runs / v / "modgs-cpu" / "run" / "config.yml"
            out_dir = args.work_dir / scene / f"{v}_eval"
            run([str(BIN / "modgs-eval"), "--load-config", str(config), "--output-dir", str(out_dir), "--scale-method", "metric-depth",
                 "--grid-every", "16"], args.work_dir / scene / f"{v}_eval.log", env)
            m = json.loads((out_dir / "metrics.json").read_text())
            row = {"scene": scene, "variant": v, "name": name, "train_s": t_train, "scale": m["test_camera_scale"], **m["mean"]}
            results.append(row)
            print(f"[{scene}/{v}] PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} dynamic PSNR {row.get('psnr_dynamic') or float('nan'):.2f} "
                  f"covisible PSNR {row.get('psnr_covisible') or float('nan'):.2f}  train {t_train:.0f} s", flush=True)
            (args.output.with_suffix(".json")).parent.mkdir(parents=True, exist_ok=True)
            args.output.with_suffix(".json").write_text(json.dumps({"args": {k: str(x) for k, x in vars(args).items()}, "results": results}, indent=1))
    write_table(args, results)


def write_table(args, results: list[dict]) -> None:
    f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [
        "# Quality benchmark (generated scenes, held-out cameras)",
        "",
        f"`scripts/benchmark_quality.py`: {args.frames} frames at {args.width}x{args.height} per scene, 2 held-out cameras at",
        f"+-15 degrees, {args.stage1_steps} stage-1 steps (variants a, c) and {args.stage2_steps} stage-2 steps for every variant,",
        "preset `modgs-cpu`, CPU (2 cores). Metrics from `modgs-eval` (full image; inside the dynamic-object",
        "mask; inside the co-visibility mask). LPIPS columns are absent offline (no AlexNet/VGG weights here).",
        "",
        "| scene | variant | PSNR | SSIM | PSNR dynamic | SSIM dynamic | PSNR co-visible | SSIM co-visible | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scene']} | {r['variant']}: {r['name']} | {f(r['psnr'])} | {f(r['ssim'], 3)} | {f(r.get('psnr_dynamic'))} | "
            f"{f(r.get('ssim_dynamic'), 3)} | {f(r.get('psnr_covisible'))} | {f(r.get('ssim_covisible'), 3)} | {r['train_s']:.0f} s |"
        )
    if any(r.get("lpips_alex") is not None for r in results):
        lines += ["", "| scene | variant | LPIPS-alex | LPIPS-vgg |", "|---|---|---|---|"]
        lines += [f"| {r['scene']} | {r['variant']} | {f(r.get('lpips_alex'), 3)} | {f(r.get('lpips_vgg'), 3)} |" for r in results]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
