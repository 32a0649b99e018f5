"""modgs-preprocess: a monocular video (or image folder, or ns-process-data output) -> a modgs scene.

Steps: decode frames (exact, no frame-rate resampling; source index and timestamp kept; time
normalized to [0, 1]) -> depth prior (a local transformers model, or a folder of precomputed /
sensor depth) -> optical flow within a window both ways with a cycle check, static mask, per-frame
depth alignment, non-edge mask and the 3D-pair cache -> diagnostics.png. Poses: static camera
(identity) by default, the input's for an ns-process-data output, or estimated with --poses colmap
(structure from motion, rotation-only fallback) or --poses rotation; with a moving camera the static
mask and the depth alignment account for the camera's motion. Re-running skips finished steps
(keyed by their parameters); --force recomputes.

Examples:
    modgs-preprocess --video clip.mp4 --output-dir scene/ --depth-model Depth-Anything-V2-Small-hf/
    modgs-preprocess --video handheld.mp4 --output-dir scene/ --depth-model DA2/ --poses colmap
    ns-train modgs-cpu --data scene/
"""

from __future__ import annotations

import os
import sys

# FFmpeg's own messages ("moov atom not found", ...) would add lines to our one-line errors.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

import tyro  # noqa: E402

from modgs_ns.preprocess.run import PreprocessConfig, run  # noqa: E402


def main(cfg: PreprocessConfig) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network for weights
    from modgs_ns.scene.errors import ModgsError

    try:
        result = run(cfg)
    except (ModgsError, ValueError) as err:
        print(f"modgs-preprocess: error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as err:
        kept = getattr(err, "kept", [])
        where = cfg.output_dir / ".staging"
        print(
            "modgs-preprocess: interrupted; "
            + (
                f"kept the finished steps ({', '.join(kept)}) in {where} for the next "
                "run with the same inputs; the scene itself is unchanged"
                if kept
                else "nothing finished, nothing kept; the scene itself is unchanged"
            ),
            file=sys.stderr,
        )
        return 130
    t = result["timings"]
    c = result["caches"] or {}
    print(f"modgs-preprocess: {result['frames']} frames at {result['size'][0]}x{result['size'][1]} -> {cfg.output_dir}")
    print("  time per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    print(f"  poses: {result['poses']}")
    if c:
        print(
            f"  static pixels {100 * c.get('static_fraction', 0):.1f}%, caches {c.get('depth_bytes', 0) / 1e6:.1f} + "
            f"{c.get('pairs_bytes', 0) / 1e6:.1f} MB"
        )
    if c.get("disparity_shift"):
        s = c["disparity_shift"]
        print(
            f"  disparity prior: global shift {s['applied']:.4g} applied ({s['source']}); plane estimate {s['estimate']:.4g} "
            + (
                f"= {100 * s['estimate_relative']:.0f}% of the median disparity"
                if s.get("estimate_relative") is not None
                else "(median disparity 0)"
            )
            + f" ({s['detail']})"
        )
    if cfg.diagnostics:
        print(f"  diagnostics: {cfg.output_dir / 'diagnostics.png'}")
    print(f"  next: ns-train modgs-cpu --data {cfg.output_dir}")
    return 0


def entrypoint() -> None:
    sys.exit(main(tyro.cli(PreprocessConfig, description=__doc__)))


if __name__ == "__main__":
    entrypoint()
