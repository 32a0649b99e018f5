"""modgs-preprocess's options (every field is a CLI flag; its docstring is the flag's help)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from modgs_ns.scene.caches import PairParams, pair_param_problems
from modgs_ns.scene.errors import PreprocessError


@dataclass
class PreprocessConfig:
    output_dir: Path
    """Scene folder to write (created if missing; a re-run reuses the steps whose inputs are unchanged)."""
    video: Optional[Path] = None
    """Input video file (one of --video, --images, --nerfstudio-data)."""
    images: Optional[Path] = None
    """Input folder of frames, in file-name order."""
    nerfstudio_data: Optional[Path] = None
    """Input nerfstudio folder (transforms.json with poses and intrinsics)."""
    stride: int = 1
    """Keep every stride-th source frame."""
    max_frames: int = 0
    """Keep at most this many frames after the stride (0 = all)."""
    max_side: int = 480
    """Resize frames so that their longer side is at most this many pixels (0 = keep the size)."""
    fps: float = 30.0
    """Frame rate of an image folder (videos carry their own); sets the frames' timestamps."""
    fov_deg: float = 60.0
    """Horizontal field of view, degrees, when neither the input nor --fx gives the focal length."""
    fx: Optional[float] = None
    """Focal length in source pixels (overrides --fov-deg)."""
    fy: Optional[float] = None
    """Vertical focal length in source pixels (default: --fx)."""
    cx: Optional[float] = None
    """Principal point x in source pixels (default: the image centre)."""
    cy: Optional[float] = None
    """Principal point y in source pixels (default: the image centre)."""
    poses: Optional[Literal["static", "given", "colmap", "rotation"]] = None
    """Camera poses. static: identity (a tripod video, the released MoDGS setting); given: the input's
    transforms.json (--nerfstudio-data); colmap: structure from motion with pycolmap (a moving camera);
    rotation: rotations from feature matches between neighbouring frames (a camera that only turns).
    Default: given for --nerfstudio-data, static otherwise."""
    pose_fallback: bool = True
    """When structure from motion fails (little parallax), fall back to rotation-only poses (with a
    warning) instead of stopping."""
    dynamic_masks: Optional[Path] = None
    """Folder of masks, one per source frame in name order, non-zero where things move: kept out of
    feature matching for the poses."""
    depth_model: Optional[Path] = None
    """Local folder of a transformers depth-estimation model (e.g. Depth Anything V2), downloaded beforehand."""
    depth_dir: Optional[Path] = None
    """Folder of precomputed or sensor depth, one file (.npy, .png, .exr, ...) per source frame in name order."""
    depth_scale: float = 1.0
    """Multiplier applied to the files of --depth-dir (e.g. 0.001 for millimetre PNGs)."""
    depth_kind: Literal["relative", "metric", "disparity"] = "relative"
    """What --depth-dir holds: relative depth (known up to scale and shift), metric depth, or disparity up to
    scale and shift (precomputed Depth Anything / MiDaS maps). --depth-model records its model's kind itself."""
    pairs: PairParams = field(default_factory=PairParams)
    """Flow, depth alignment and 3D-pair cache settings (recorded in the scene; ns-train rebuilds with them)."""
    eval_every: int = 8
    """Every eval_every-th frame is also listed as a val/test view (a monocular video has no held-out camera)."""
    seed_points: int = 20000
    """Points of points3d.ply (the first frame's aligned depth), the seed before the canonical initialization."""
    diagnostics: bool = True
    """Write diagnostics.png (priors, aligned depth, flow, static mask, pair counts)."""
    force: bool = False
    """Recompute every step even when its inputs are unchanged."""

    def validate(self) -> None:
        """PreprocessError naming the flag of the first option that cannot work."""

        def finite(x) -> bool:
            return x is not None and math.isfinite(x)

        checks = [
            ("--stride", self.stride >= 1, "at least 1", self.stride),
            ("--max-frames", self.max_frames >= 0, ">= 0 (0 = every frame)", self.max_frames),
            ("--max-side", self.max_side >= 0, ">= 0 (0 = keep the size)", self.max_side),
            ("--fps", finite(self.fps) and self.fps > 0, "a positive number", self.fps),
            ("--fov-deg", finite(self.fov_deg) and 0 < self.fov_deg < 180, "in (0, 180) degrees", self.fov_deg),
            ("--depth-scale", finite(self.depth_scale) and self.depth_scale > 0, "a positive number", self.depth_scale),
            ("--eval-every", self.eval_every >= 1, "at least 1", self.eval_every),
            ("--seed-points", self.seed_points >= 1, "at least 1", self.seed_points),
        ]
        for flag, value in (("--fx", self.fx), ("--fy", self.fy)):
            checks.append(
                (flag, value is None or (finite(value) and value > 0), "a positive focal length in pixels", value)
            )
        for flag, value in (("--cx", self.cx), ("--cy", self.cy)):
            checks.append((flag, value is None or finite(value), "a finite pixel coordinate", value))
        problems = [f"{flag} must be {what} (got {value!r})" for flag, ok, what, value in checks if not ok]
        problems += pair_param_problems(self.pairs)
        if problems:
            raise PreprocessError(problems[0])
