#!/usr/bin/env python
"""Quality benchmark: MoDGS and its ablations on generated scenes, scored on held-out cameras.

Scenes (modgs-synth, each with 2 held-out cameras at +-15 degrees and ground truth):
  hard      four objects moving ~8-20 px/frame, spinning, one deforming, occluding (40 frames, 256x192)
  rigid     rolling ball + turning box, static camera
  nonrigid  pulsating, wobbling blob, static camera
  orbit     all objects, the training camera slowly orbits (8 degrees)
Variants (same step budget for all):
  a  full MoDGS: stage-1 3D-aware initialization + ordinal depth loss
  b  without the 3D-aware initialization (stage1-steps 0, deformation learnt from images only)
  c  Pearson-correlation depth loss instead of ordinal
  d  plain deformable GS: no initialization, no depth loss
  e  static Gaussians (splatfacto's model, time ignored)
  g  a without lifespans for moving content (every Gaussian lives at all times, as MoDGS)
  A  oracle: a with the ground-truth depth as the prior
  F  oracle: a with ground-truth correspondences for stage 1 (the generator's analytic flow)
Every row also carries the copy floor (the training frame of the same time scored as the held-out view)
and the training views' PSNR inside and outside the moving objects. Each run is a real `ns-train
modgs-cpu` + `modgs-eval` (test-camera scale solved from metric depth, the same for every variant of a
scene). Writes docs/benchmark_quality.md and a JSON next to it.

    .venv/bin/python scripts/benchmark_quality.py                      # the default table
    .venv/bin/python scripts/benchmark_quality.py --scenes hard --variants a e A F
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from pathlib import Path

from bench_common import BIN, ROOT
from bench_common import sh as run

SCENES = {  # modgs-synth arguments; size None = the --frames/--width/--height defaults
    "hard": (["--scene.objects", "hard"], (40, 256, 192)),
    "rigid": (["--scene.objects", "rigid", "--scene.motion-amplitude", "0.6"], None),
    "nonrigid": (["--scene.objects", "nonrigid"], None),
    "orbit": (["--scene.camera-motion", "orbit", "--scene.motion-amplitude", "0.6"], None),
}
VARIANTS = {  # name, with stage 1, extra ns-train arguments, oracle scene
    "a": ("full MoDGS", True, [], None),
    "b": ("no 3D-aware init", False, [], None),
    "c": ("Pearson depth loss", True, ["--pipeline.model.depth-loss.kind", "pearson"], None),
    "d": ("deformable GS (no init, no depth loss)", False, ["--pipeline.model.depth-loss.kind", "none"], None),
    "e": (
        "static Gaussians",
        False,
        ["--pipeline.model.depth-loss.kind", "none", "--pipeline.model.static-scene", "True"],
        None,
    ),
    "g": ("MoDGS as published (no lifespans)", True, ["--pipeline.model.lifespans.width", "0"], None),
    "A": ("oracle: GT depth as the prior", True, [], "gt_depth"),
    "F": ("oracle: GT correspondences", True, [], "gt_flow"),
    "S": ("oracle: the prior's true global disparity shift (static camera)", True, [], "gt_shift"),
}


def oracle_scene(scene: Path, kind: str) -> Path:
    """A view of `scene` (links to its files, own caches) whose prior is the GT depth, or whose
    stage-1 correspondences come from the analytic flow (pair parameter `flow: gt` recorded in the scene),
    or whose disparity prior gets the true global shift (pair parameter `disparity_shift`)."""
    out = scene.parent / f"scene_{kind}"
    if (out / "transforms.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for f in scene.iterdir():
        if f.name not in ("caches", "transforms.json") and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    meta = json.loads((scene / "transforms.json").read_text())
    if kind == "gt_depth":
        for fr in meta["frames"]:
            if fr.get("depth_prior_path"):
                fr["depth_prior_path"] = fr["gt_depth_path"]
        meta["modgs"]["depth_prior"] = {**meta["modgs"]["depth_prior"], "dir": "depth_gt", "kind": "metric_depth"}
    if kind == "gt_flow":
        meta["modgs"]["pairs"] = {**meta["modgs"].get("pairs", {}), "flow": "gt"}
    if kind == "gt_shift":
        # The shift a static camera cannot observe, in the reference frame's aligned disparity units
        # (depth is aligned to frame T // 2): -scale_ref * shift_ref of the generator's prior.
        gt, ref = meta["modgs"]["ground_truth"], meta["modgs"]["num_frames"] // 2
        shift = -gt["prior_scale"][ref] * gt["prior_shift"][ref]
        meta["modgs"]["pairs"] = {**meta["modgs"].get("pairs", {}), "disparity_shift": shift}
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--stage1-steps", type=int, default=2000)
    ap.add_argument("--stage2-steps", type=int, default=2000)
    ap.add_argument("--train-args", default="", help="extra ns-train arguments for every run (one string)")
    ap.add_argument("--tag", default="", help="suffix of the run names (keeps earlier runs of a variant)")
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
        synth_args, size = SCENES[scene]
        frames, width, height = size or (args.frames, args.width, args.height)
        if not (sdir / "transforms.json").exists():
            run(
                [
                    str(BIN / "modgs-synth"),
                    "--output-dir",
                    str(sdir),
                    "--overwrite",
                    "--scene.num-frames",
                    str(frames),
                    "--scene.width",
                    str(width),
                    "--scene.height",
                    str(height),
                    *synth_args,
                ],
                args.work_dir / f"{scene}_synth.log",
                env,
            )
        for v in args.variants:
            name, with_stage1, extra, oracle = VARIANTS[v]
            n1 = args.stage1_steps if with_stage1 else 0
            runs = args.work_dir / scene / "runs"
            v = v + args.tag
            shutil.rmtree(runs / v, ignore_errors=True)
            data = oracle_scene(sdir, oracle) if oracle else sdir
            cmd = [
                str(BIN / "ns-train"),
                "modgs-cpu",
                "--data",
                str(data),
                "--output-dir",
                str(runs),
                "--experiment-name",
                v,
                "--timestamp",
                "run",
                "--vis",
                "tensorboard",
                "--max-num-iterations",
                str(n1 + args.stage2_steps),
                "--pipeline.model.stage1.steps",
                str(n1),
                *extra,
                *shlex.split(args.train_args),
            ]
            print(f"[{scene}/{v}] training: {name}", flush=True)
            t_train = run(cmd, args.work_dir / scene / f"{v}_train.log", env)
            config = runs / v / "modgs-cpu" / "run" / "config.yml"
            out_dir = args.work_dir / scene / f"{v}_eval"
            run(
                [
                    str(BIN / "modgs-eval"),
                    "--load-config",
                    str(config),
                    "--output-dir",
                    str(out_dir),
                    "--scale-method",
                    "metric-depth",
                    "--grid-every",
                    "16",
                ],
                args.work_dir / scene / f"{v}_eval.log",
                env,
            )
            m = json.loads((out_dir / "metrics.json").read_text())
            tv = {f"train_{k}": x for k, x in m.get("training_views", {}).get("mean", {}).items()}
            stage1 = [
                ln
                for ln in (args.work_dir / scene / f"{v}_train.log").read_text(errors="replace").splitlines()
                if "stage 1 result" in ln
            ]
            row = {
                "scene": scene,
                "variant": v,
                "name": name,
                "train_s": t_train,
                "scale": m["test_camera_scale"],
                **m["mean"],
                **tv,
                "stage1": stage1[-1].split("pairs):")[-1].strip() if stage1 else None,
            }
            results.append(row)
            g = lambda k: row.get(k) if row.get(k) is not None else float("nan")  # noqa: E731
            print(
                f"[{scene}/{v}] PSNR {g('psnr'):.2f} (copy {g('copy_psnr'):.2f}) dynamic {g('psnr_dynamic'):.2f} (copy "
                f"{g('copy_psnr_dynamic'):.2f}) covisible {g('psnr_covisible'):.2f} (copy {g('copy_psnr_covisible'):.2f}); training "
                f"views moving {g('train_psnr_moving'):.2f} background {g('train_psnr_background'):.2f}; train {t_train:.0f} s",
                flush=True,
            )
            (args.output.with_suffix(".json")).parent.mkdir(parents=True, exist_ok=True)
            args.output.with_suffix(".json").write_text(
                json.dumps({"args": {k: str(x) for k, x in vars(args).items()}, "results": results}, indent=1)
            )
    write_table(args, results)


def write_table(args, results: list[dict]) -> None:
    f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [
        "# Quality benchmark (generated scenes, held-out cameras)",
        "",
        f"`scripts/benchmark_quality.py`: {args.frames} frames at {args.width}x{args.height} per scene (hard: 40 at 256x192),",
        f"2 held-out cameras at +-15 degrees, {args.stage1_steps} stage-1 steps at most (variants with stage 1) and",
        f"{args.stage2_steps} stage-2 steps for every variant, preset `modgs-cpu`, CPU (2 cores). Held-out metrics from",
        "`modgs-eval`: full image, inside the dynamic-object mask, inside the co-visibility mask; each beside its **copy",
        "floor** (the training frame of the same time shown as the held-out view: what doing nothing scores). Training",
        "views: PSNR of every training frame at its own time inside / outside the moving objects. A and F are the oracles",
        "(ground-truth depth prior; ground-truth correspondences). LPIPS is absent offline (no AlexNet/VGG weights here).",
        "",
        "| scene | variant | PSNR (copy) | SSIM | PSNR dynamic (copy) | PSNR co-visible (copy) | train views: moving / background | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scene']} | {r['variant']}: {r['name']} | {f(r['psnr'])} ({f(r.get('copy_psnr'))}) | {f(r['ssim'], 3)} | "
            f"{f(r.get('psnr_dynamic'))} ({f(r.get('copy_psnr_dynamic'))}) | {f(r.get('psnr_covisible'))} ({f(r.get('copy_psnr_covisible'))}) | "
            f"{f(r.get('train_psnr_moving'))} / {f(r.get('train_psnr_background'))} | {r['train_s']:.0f} s |"
        )
    lines += [
        "",
        "Stage-1 fit on held-out pairs (median 3D error as % of the scene extent and pixels, against identity):",
        "",
    ]
    lines += [f"- {r['scene']} {r['variant']}: {r['stage1']}" for r in results if r.get("stage1")]
    if any(r.get("lpips_alex") is not None for r in results):
        lines += ["", "| scene | variant | LPIPS-alex | LPIPS-vgg |", "|---|---|---|---|"]
        lines += [
            f"| {r['scene']} | {r['variant']} | {f(r.get('lpips_alex'), 3)} | {f(r.get('lpips_vgg'), 3)} |"
            for r in results
        ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
