"""`modgs-data`: nerfstudio's transforms.json reader plus time, depth priors and a fixed split.

Defaults are safe for a static camera: no re-orientation, no centring and no auto-scaling of
poses (nerfstudio divides by max |t|, which is 0 when every frame has the same pose); the world
stays the scene's own, so depth unprojections need no extra transform.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from modgs_ns.data.scene_format import SceneFormatError, load_scene_meta, validate_scene
from modgs_ns.preprocess.pairs import PairParams, build_caches, caches_valid


@dataclass
class ModgsDataParserConfig(NerfstudioDataParserConfig):
    """Reads a modgs scene (transforms.json with per-frame time and depth prior)."""

    _target: Type = field(default_factory=lambda: ModgsDataParser)
    orientation_method: Literal["pca", "up", "vertical", "none"] = "none"
    center_method: Literal["poses", "focus", "none"] = "none"
    auto_scale_poses: bool = False
    load_3D_points: bool = True
    """Seed Gaussians from the scene's `ply_file_path` points when it has them."""
    downscale_factor: int = 1
    pairs: PairParams = field(default_factory=PairParams)
    """Flow, depth alignment and 3D-pair cache settings (built on first use, then reused)."""


class ModgsDataParser(Nerfstudio):
    """Adds `times` (from each frame's `time`, matched by file name) and depth-prior paths."""

    config: ModgsDataParserConfig
    includes_time: bool = True

    def _generate_dataparser_outputs(self, split: str = "train"):
        try:
            data_dir, meta = load_scene_meta(self.config.data)
            validate_scene(data_dir, meta, require_prior=(split == "train"))
            if split == "train" and not caches_valid(data_dir, self.config.pairs):
                print(f"modgs-data: building flow / depth-alignment / 3D-pair caches in {data_dir / 'caches'}", file=sys.stderr)
                build_caches(data_dir, meta, self.config.pairs)
        except (SceneFormatError, ValueError) as err:
            # One line, no traceback: this is a problem with the user's data, not with the code.
            print(f"modgs-data: error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
        if not any(f"{s}_filenames" in meta for s in ("train", "val", "test")):
            # No split in the file: nerfstudio's fraction split would mix frames at random times.
            self.config.eval_mode = "interval"
        outputs = super()._generate_dataparser_outputs(split)

        by_name = {Path(f["file_path"]).name: f for f in meta["frames"]}
        frames = [by_name[Path(p).name] for p in outputs.image_filenames]
        times = torch.tensor([[float(f["time"])] for f in frames], dtype=torch.float32)
        cams = outputs.cameras
        outputs.cameras = Cameras(
            camera_to_worlds=cams.camera_to_worlds,
            fx=cams.fx,
            fy=cams.fy,
            cx=cams.cx,
            cy=cams.cy,
            width=cams.width,
            height=cams.height,
            distortion_params=cams.distortion_params,
            camera_type=cams.camera_type,
            times=times,
            metadata=cams.metadata,
        )
        outputs.metadata["depth_prior_filenames"] = [
            (data_dir / f["depth_prior_path"]) if f.get("depth_prior_path") else None for f in frames
        ]
        outputs.metadata["frame_cameras"] = [f.get("camera", "train") for f in frames]
        outputs.metadata["gt_depth_filenames"] = [
            (data_dir / f["gt_depth_path"]) if f.get("gt_depth_path") else None for f in frames
        ]
        outputs.metadata["dynamic_mask_filenames"] = [
            (data_dir / f["dynamic_mask_path"]) if f.get("dynamic_mask_path") else None for f in frames
        ]
        outputs.metadata["modgs"] = meta.get("modgs", {})
        outputs.metadata["modgs_root"] = str(data_dir)
        return outputs


modgs_dataparser = DataParserSpecification(
    config=ModgsDataParserConfig(), description="MoDGS scene: transforms.json with per-frame time and depth prior"
)
