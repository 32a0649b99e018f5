"""`modgs-data`: nerfstudio's transforms.json reader plus time, depth priors and a fixed split.

Defaults are safe for a static camera: no re-orientation, no centring and no auto-scaling of
poses (nerfstudio divides by max |t|, which is 0 when every frame has the same pose); the world
stays the scene's own, so depth unprojections need no extra transform.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from modgs_ns.data.placement import (
    ScaleEstimate,
    combine,
    place,
    relative_pose,
    scale_from_matches,
    scale_from_metric_depth,
)
from modgs_ns.data.scene_info import SceneInfo
from modgs_ns.scene.caches import DepthCache, cache_key, cache_state, pair_params_of
from modgs_ns.scene.errors import CacheError
from modgs_ns.scene.files import read_rgb
from modgs_ns.scene.format import (
    load_scene_meta,
    prior_kind,
    scene_warnings,
    training_frame_at,
    training_frames,
    validate_scene,
)


@dataclass
class ModgsDataParserConfig(NerfstudioDataParserConfig):
    """Reads a modgs scene (transforms.json with per-frame time and depth prior)."""

    _target: Type = field(default_factory=lambda: ModgsDataParser)
    orientation_method: Literal["pca", "up", "vertical", "none"] = "none"
    """Re-orientation of the poses (none: the scene's own world, which the caches' depth points live in)."""
    center_method: Literal["poses", "focus", "none"] = "none"
    """Centring of the poses (none, for the same reason)."""
    auto_scale_poses: bool = False
    """Scale the poses to a unit cube (off: it divides by 0 for a static camera)."""
    load_3D_points: bool = True
    """Seed Gaussians from the scene's `ply_file_path` points when it has them."""
    downscale_factor: int = 1
    """Image downscale factor (1: the scene's images as they are)."""
    test_camera_scale: Optional[float] = None
    """Reconstruction units per scene unit for placing val/test cameras; None = solve it (see
    test_camera_scale_method). The reconstruction has the aligned depth prior's scale."""
    test_camera_scale_method: Literal["auto", "metric-depth", "matches", "none"] = "auto"
    """auto: metric-depth when the scene has metric depth for its training frames, else matches
    (SIFT between training and test images at the same time); none: poses as given (scale 1)."""


class ModgsDataParser(Nerfstudio):
    """Adds `times` (from each frame's `time`, matched by file name) and depth-prior paths."""

    config: ModgsDataParserConfig
    includes_time: bool = True

    def __init__(self, config: ModgsDataParserConfig, **kwargs):
        super().__init__(config, **kwargs)
        # Nerfstudio is a dataclass whose generated __init__ sets includes_time=False on the
        # instance, hiding the class attribute; the datamanager (and so the viewer's Time slider)
        # reads the instance's value.
        self.includes_time = True

    def _check_caches(self, data_dir: Path, meta: dict) -> None:
        """The caches must be valid for the scene's current inputs (ModgsPipeline rebuilds them first)."""
        why = cache_state(data_dir, cache_key(data_dir, meta, pair_params_of(meta)))
        if why:
            raise CacheError(
                f"the caches of {data_dir} are not usable ({why}); ns-train rebuilds them, or run modgs-preprocess"
            )

    def _generate_dataparser_outputs(self, split: str = "train"):
        data_dir, meta = load_scene_meta(self.config.data)
        validate_scene(data_dir, meta, require_prior=(split == "train"))
        if split == "train":
            self._check_caches(data_dir, meta)
            for warning in scene_warnings(meta):
                print(f"modgs-data: warning: {warning}", file=sys.stderr, flush=True)
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
        outputs.metadata["modgs_scene"] = SceneInfo(
            root=data_dir,
            prior_kind=prior_kind(meta),
            frame_times=tuple(float(f.get("time", 0.0)) for f in frames),
            bounds=DepthCache.load(data_dir).bounds() if split == "train" else None,
        )
        if split != "train" and any(c != "train" for c in outputs.metadata["frame_cameras"]):
            outputs.cameras.camera_to_worlds = self._place_held_out_cameras(data_dir, meta, frames, outputs.cameras)
        return outputs

    def _place_held_out_cameras(self, data_dir: Path, meta: dict, frames: list, cameras: Cameras) -> torch.Tensor:
        """Held-out poses moved into the reconstruction's units relative to the training camera at
        the same time (modgs_ns/data/placement.py); the estimate is kept in `self.test_camera_scale`."""
        train = training_frames(meta)
        est = self.test_camera_scale = self._solve_test_camera_scale(data_dir, meta, frames, train)
        c2w = cameras.camera_to_worlds.clone()
        for i, f in enumerate(frames):
            if f.get("camera", "train") == "train":
                continue
            ref = training_frame_at(train, f["time"])
            c2w[i] = torch.from_numpy(
                place(np.array(ref["transform_matrix"]), np.array(f["transform_matrix"]), est.scale)
            ).to(c2w)
        return c2w

    def _solve_test_camera_scale(self, data_dir, meta, frames, train) -> ScaleEstimate:
        if self.config.test_camera_scale is not None:
            return ScaleEstimate(float(self.config.test_camera_scale), "given", 0)
        method = self.config.test_camera_scale_method
        if method == "none":
            return ScaleEstimate(1.0, "none", 0)
        try:
            self._check_caches(data_dir, meta)
            cache = DepthCache.load(data_dir)
            names, valid, aligned, K = cache.names, cache.valid, cache.depth, cache.K
            row = {n: i for i, n in enumerate(names)}
            has_metric = all(f.get("gt_depth_path") for f in train)
            if method == "metric-depth" or (method == "auto" and has_metric):
                metric = np.stack([np.load(data_dir / f["gt_depth_path"]) for f in train])
                idx = [row[Path(f["file_path"]).name] for f in train]
                est = scale_from_metric_depth(aligned[idx], valid[idx], metric)
            else:
                held = [f for f in frames if f.get("camera", "train") != "train"]
                pick = held[:: max(1, len(held) // 12)]
                results = []
                for f in pick:
                    ref = training_frame_at(train, f["time"])
                    i = row[Path(ref["file_path"]).name]
                    img_a, img_b = read_rgb(data_dir / ref["file_path"]), read_rgb(data_dir / f["file_path"])
                    rel = relative_pose(np.array(ref["transform_matrix"]), np.array(f["transform_matrix"]))
                    results.append(scale_from_matches(img_a, aligned[i], K, img_b, K, rel, valid[i]))
                est = combine(results)
        except (OSError, KeyError, ValueError) as err:
            raise CacheError(
                f"cannot place the held-out cameras ({err}); give the scale with "
                "`modgs-data --test-camera-scale S` after the method's options"
            ) from None
        print(
            f"modgs-data: held-out cameras placed with scale {est.scale:.5g} (reconstruction units per scene unit, {est.method}, support {est.support})",
            file=sys.stderr,
        )
        return est


modgs_dataparser = DataParserSpecification(
    config=ModgsDataParserConfig(), description="MoDGS scene: transforms.json with per-frame time and depth prior"
)
