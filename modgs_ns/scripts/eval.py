"""modgs-eval: score a trained modgs run on its held-out cameras.

Renders every test camera at its time (placed in the reconstruction's units, see
modgs_ns/data/placement.py), computes PSNR / SSIM / LPIPS (AlexNet and VGG when their weights are
available offline) on the full image and inside the scene's dynamic and co-visibility masks, and
writes metrics.json (per image, per camera, mean) plus GT | render | error | depth grids.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from modgs_ns.scene.format import write_json_atomic


@dataclass
class EvalArgs:
    load_config: Path
    """config.yml of a trained modgs run."""
    output_dir: Optional[Path] = None
    """Where metrics.json and grids/ go (default: eval/ next to the config)."""
    split: Literal["test", "val"] = "test"
    """Which held-out split to score."""
    test_camera_scale: Optional[float] = None
    """Reconstruction units per scene unit for the held-out poses; default: solved (and reported)."""
    scale_method: Literal["auto", "metric-depth", "matches", "none"] = "auto"
    """How to solve the scale: metric depth of the training frames, SIFT matches train/test, or none."""
    lpips_weights: Optional[Path] = None
    """Folder with torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth (no download here)."""
    lpips_nets: tuple[str, ...] = ("alex", "vgg")
    """LPIPS backbones to score with (each skipped with a note when its weights are not on disk)."""
    protocol: Literal["full", "modgs"] = "full"
    """full: metrics on whole images (and masks); modgs: MoDGS's own protocol, both images multiplied
    by the rendered alpha > 0.5 first."""
    grid_every: int = 8
    """Write a GT | render | error | depth grid for every N-th image, and for every N-th training view (0: none)."""
    allow_training_views: bool = False
    """Score a scene without held-out cameras (its val/test views are training frames: not a novel-view metric)."""
    training_views: bool = True
    """Also score every training view at its own time, inside and outside the moving region."""


def main(args: EvalArgs) -> int:
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    if not args.load_config.is_file():
        print(f"modgs-eval: error: no config at {args.load_config}", file=sys.stderr)
        return 2
    from modgs_ns.scene.format import writable_dir_problem

    out_dir = args.output_dir or args.load_config.parent / "eval"
    problem = writable_dir_problem(out_dir, "--output-dir")
    if problem:
        print(f"modgs-eval: error: {problem}", file=sys.stderr)
        return 2
    from nerfstudio.utils.eval_utils import eval_setup

    def update(config):
        dp = config.pipeline.datamanager.dataparser
        if not hasattr(dp, "test_camera_scale"):
            print(
                f"modgs-eval: error: {args.load_config} is not a modgs run (dataparser {type(dp).__name__})",
                file=sys.stderr,
            )
            sys.exit(2)
        dp.test_camera_scale = args.test_camera_scale
        dp.test_camera_scale_method = args.scale_method
        return config

    config, pipeline, ckpt, step = eval_setup(
        args.load_config, test_mode=args.split if args.split == "test" else "val", update_config_callback=update
    )
    from modgs_ns.eval.evaluate import evaluate_pipeline

    cameras = set(pipeline.datamanager.eval_dataset.metadata.get("frame_cameras", []))
    if cameras <= {"train"}:
        if not args.allow_training_views:
            print(
                "modgs-eval: error: the scene has no held-out cameras: its val/test views are training frames, so their "
                "PSNR is not a novel-view score; pass --allow-training-views to score them anyway",
                file=sys.stderr,
            )
            return 2
        print(
            "modgs-eval: warning: no held-out cameras: scoring training frames (not a novel-view metric)",
            file=sys.stderr,
        )
    result = evaluate_pipeline(
        pipeline,
        out_dir,
        lpips_nets=args.lpips_nets,
        lpips_weights=args.lpips_weights,
        modgs_protocol=args.protocol == "modgs",
        grid_every=args.grid_every,
    )
    if args.training_views:
        from modgs_ns.eval.evaluate import evaluate_training_views

        result["training_views"] = evaluate_training_views(pipeline, out_dir, args.grid_every)
    parser = pipeline.datamanager.dataparser
    est = getattr(parser, "test_camera_scale", None)
    result = {
        "config": str(args.load_config),
        "checkpoint": str(ckpt),
        "step": step,
        "split": args.split,
        "held_out_cameras": not cameras <= {"train"},
        "test_camera_scale": None
        if est is None
        else {"scale": est.scale, "method": est.method, "support": est.support},
        **result,
    }
    # Written atomically: a crash never leaves a truncated metrics.json behind.
    write_json_atomic(out_dir / "metrics.json", result, allow_nan=True)

    m = result["mean"]
    fmt = lambda k: "-" if m.get(k) is None else f"{m[k]:.4f}"  # noqa: E731
    for note in result["notes"]:
        print(f"modgs-eval: {note}", file=sys.stderr)
    print(f"held-out views: {len(result['images'])}, scale {result['test_camera_scale']}")
    for region in ["", "_dynamic", "_covisible"]:
        if region and f"psnr{region}" not in m:
            continue
        print(
            f"  {region[1:] or 'full':10s} PSNR {fmt('psnr' + region)}  SSIM {fmt('ssim' + region)}  "
            f"LPIPS-alex {fmt('lpips_alex' + region)}  LPIPS-vgg {fmt('lpips_vgg' + region)}"
        )
        if m.get("copy_psnr" + region) is not None:
            print(
                f"  {'':10s} copy floor (the training frame of the same time): PSNR {fmt('copy_psnr' + region)}  "
                f"SSIM {fmt('copy_ssim' + region)}"
            )
    if "training_views" in result:
        t = result["training_views"]["mean"]
        tf = lambda k: "-" if t.get(k) is None else f"{t[k]:.4f}"  # noqa: E731
        print(
            f"training views: {len(result['training_views']['images'])}: PSNR full {tf('psnr')}  moving {tf('psnr_moving')}  "
            f"background {tf('psnr_background')}"
        )
    print(f"metrics: {out_dir / 'metrics.json'}")
    return 0


def entrypoint() -> None:
    sys.exit(main(tyro.cli(EvalArgs, description=__doc__)))


if __name__ == "__main__":
    entrypoint()
