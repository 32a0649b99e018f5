#!/usr/bin/env python
"""Depth-prior benchmark: prior kind x route -> median aligned-depth error (and, with --train, held-out PSNR).

On the quality benchmark's generated scenes, with the prior simulated two ways (modgs-synth
`--scene.prior.kind`): `disparity` (what Depth Anything V2 "relative", MiDaS and DPT give: affine in
inverse depth per frame, warp, noise, soft edges) and `depth` (affine in depth). Routes:

  old       disparity -> 1 / (d_norm + 0.05) (d stretched to [0, 1] by its 1st/99th percentiles),
            then aligned as depth (what --depth-model did before)
  inverse   disparity -> 1 / disparity, aligned as depth
  disp0     aligned in disparity space, global shift 0            (the new route without the estimate)
  disp      aligned in disparity space, global shift estimated    (the new default)
  disp*     aligned in disparity space, the true global shift     (oracle; static cameras)
  depth     a depth prior, aligned as depth (unchanged route)

Scenes: rigid, nonrigid, orbit, hard as in scripts/benchmark_quality.py; sky = rigid with the back wall
ending at 2.2 m (a fifth of the image is sky: infinite depth, zero true disparity).

Error: median |s * aligned - gt| / gt over the caches' valid pixels of all training frames, with one
global scale s (the similarity that a static or posed camera leaves free) fitted as median(gt / aligned).
Writes docs/benchmark_priors.md and .json.

    .venv/bin/python scripts/benchmark_priors.py                 # depth errors (a few minutes)
    .venv/bin/python scripts/benchmark_priors.py --train         # + held-out PSNR of routes old / disp / depth
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_quality import SCENES as QUALITY_SCENES  # noqa: E402

# The quality benchmark's scenes, plus one whose wall ends below the top of the image (sky: zero disparity).
SCENES = {
    **QUALITY_SCENES,
    "sky": (["--scene.objects", "rigid", "--scene.motion-amplitude", "0.6", "--scene.wall-height", "2.2"], None),
}

ROUTES = ("old", "inverse", "disp0", "disp", "disp*")


def legacy_disparity_to_depth(disp: np.ndarray, offset: float = 0.05) -> np.ndarray:
    """The conversion modgs-preprocess --depth-model used before: percentile-normalized disparity, inverted."""
    lo, hi = np.percentile(disp, 1), np.percentile(disp, 99)
    d = np.clip((disp - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return (1.0 / (d + offset)).astype(np.float32)


def route_scene(src: Path, route: str) -> Path:
    """A copy of `src` whose prior files / kind / pair parameters implement `route`."""
    out = src.parent / f"route_{route.replace('*', 'oracle')}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("caches"))
    meta = json.loads((out / "transforms.json").read_text())
    pairs = meta["modgs"].setdefault("pairs", {})
    if route in ("old", "inverse"):
        for f in meta["frames"]:
            if f.get("depth_prior_path"):
                p = out / f["depth_prior_path"]
                d = np.load(p)
                np.save(
                    p,
                    legacy_disparity_to_depth(d)
                    if route == "old"
                    else np.where(d > 0, 1.0 / np.maximum(d, 1e-12), 0.0).astype(np.float32),
                )
        meta["modgs"]["depth_prior"]["kind"] = "relative_depth"
    elif route == "disp0":
        pairs["disparity_shift"] = 0.0
    elif route == "disp*":
        g = meta["modgs"]["ground_truth"]
        train = sorted((f for f in meta["frames"] if f.get("camera", "train") == "train"), key=lambda f: f["time"])
        ref = len(train) // 2  # the caches' reference frame
        # prior = scale * (1/z + shift): the reference's disparity units need s = -scale * shift.
        pairs["disparity_shift"] = -g["prior_scale"][ref] * g["prior_shift"][ref]
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out


def depth_error(scene: Path) -> tuple[float, float, dict]:
    """(median relative error after one global scale, fraction of valid pixels, the caches' disparity-shift record)."""
    from modgs_ns.preprocess.pairs import ensure_caches
    from modgs_ns.scene.caches import DepthCache

    ensure_caches(scene, progress=False)
    meta = json.loads((scene / "transforms.json").read_text())
    by_name = {Path(f["file_path"]).name: f for f in meta["frames"]}
    cache = DepthCache.load(scene)
    depth, names, shift, valid = cache.depth, cache.names, cache.disparity_shift, cache.valid
    gt = np.stack([np.load(scene / by_name[n]["gt_depth_path"]) for n in names])
    m = valid & np.isfinite(gt) & (gt > 0) & (depth > 0)
    s = np.median(gt[m] / depth[m])
    return float(np.median(np.abs(s * depth[m] - gt[m]) / gt[m])), float(m.mean()), shift


def train_psnr(scene: Path, work: Path, env: dict, stage1: int, stage2: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    cmd = [
        str(BIN / "ns-train"),
        "modgs-cpu",
        "--data",
        str(scene),
        "--output-dir",
        str(runs),
        "--experiment-name",
        "r",
        "--timestamp",
        "run",
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        str(stage1 + stage2),
        "--pipeline.model.stage1.steps",
        str(stage1),
    ]
    with open(work / "train.log", "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=True)
    out = work / "eval"
    with open(work / "eval.log", "w") as f:
        subprocess.run(
            [
                str(BIN / "modgs-eval"),
                "--load-config",
                str(runs / "r/modgs-cpu/run/config.yml"),
                "--output-dir",
                str(out),
                "--scale-method",
                "metric-depth",
                "--grid-every",
                "0",
                "--no-training-views",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
        )
    m = json.loads((out / "metrics.json").read_text())["mean"]
    return {k: m.get(k) for k in ("psnr", "copy_psnr", "psnr_dynamic", "psnr_covisible", "copy_psnr_covisible")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["rigid", "nonrigid", "orbit", "hard", "sky"], choices=list(SCENES))
    ap.add_argument("--frames", type=int, default=32, help="frames per scene (hard: its own 40)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument(
        "--window",
        type=int,
        default=8,
        help="pair window of the caches (the alignment needs +-1; orbit triangulates over it)",
    )
    ap.add_argument(
        "--train", action="store_true", help="also train routes old / disp / depth and score held-out views"
    )
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage2-steps", type=int, default=600)
    ap.add_argument("--work-dir", type=Path, default=ROOT / "benchmark_output" / "priors")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark_priors.md")
    args = ap.parse_args()
    env = dict(os.environ, TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
    rows = []
    for name in args.scenes:
        synth_args, size = SCENES[name]
        frames, width, height = size or (args.frames, args.width, args.height)
        for kind in ("disparity", "depth"):
            src = args.work_dir / name / kind / "scene"
            if not (src / "transforms.json").exists():
                subprocess.run(
                    [
                        str(BIN / "modgs-synth"),
                        "--output-dir",
                        str(src),
                        "--overwrite",
                        "--scene.num-frames",
                        str(frames),
                        "--scene.width",
                        str(width),
                        "--scene.height",
                        str(height),
                        "--scene.prior.kind",
                        kind,
                        *synth_args,
                    ],
                    check=True,
                    env=env,
                    capture_output=True,
                )
                meta = json.loads((src / "transforms.json").read_text())
                meta["modgs"]["pairs"] = {"window": args.window, "points_per_frame": 2000}
                (src / "transforms.json").write_text(json.dumps(meta, indent=1))
            for route in ROUTES if kind == "disparity" else ("depth",):
                if route == "disp*" and "orbit" in name:
                    continue  # a posed moving camera has no unknown global shift
                scene = src if route in ("disp", "depth") else route_scene(src, route)
                err, frac, shift = depth_error(scene)
                row = {
                    "scene": name,
                    "prior": kind,
                    "route": route,
                    "depth_error": err,
                    "valid": frac,
                    "shift": shift or None,
                }
                if args.train and route in ("old", "disp", "depth"):
                    row.update(
                        train_psnr(
                            scene,
                            args.work_dir / name / kind / f"train_{route}",
                            env,
                            args.stage1_steps,
                            args.stage2_steps,
                        )
                    )
                rows.append(row)
                sh = row["shift"]
                print(
                    f"{name:9s} {kind:9s} {route:8s} depth error {100 * err:6.2f}%  valid {100 * frac:5.1f}%"
                    + (
                        f"  shift {sh['applied']:.4g} ({sh['source']}, estimate {100 * sh['estimate_relative']:.0f}% of median disparity)"
                        if sh
                        else ""
                    )
                    + (
                        f"  PSNR {row['psnr']:.2f} (copy {row['copy_psnr']:.2f})" if row.get("psnr") is not None else ""
                    ),
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| scene | prior | route | median depth error | valid px | global shift | held-out PSNR (copy floor) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sh = r["shift"]
        shift = f"{sh['applied']:.4g} ({sh['source']})" if sh else ""
        psnr = f"{r['psnr']:.2f} ({r['copy_psnr']:.2f})" if r.get("psnr") is not None else ""
        lines.append(
            f"| {r['scene']} | {r['prior']} | {r['route']} | {100 * r['depth_error']:.2f}% | {100 * r['valid']:.1f}% | {shift} | {psnr} |"
        )
    args.out.write_text(
        "# Depth-prior benchmark (`scripts/benchmark_priors.py`)\n"
        + __doc__.split("Writes")[0].split("\n", 1)[1]
        + f"Run: {' '.join(sys.argv[1:]) or 'defaults'}; {args.frames} frames at {args.width}x{args.height} (hard: 40 at "
        f"256x192), pair window {args.window}"
        + (
            f", training {args.stage1_steps} + {args.stage2_steps} steps (modgs-cpu), held-out PSNR from modgs-eval"
            if args.train
            else ""
        )
        + ", CPU (2 cores).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
