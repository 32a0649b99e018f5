"""Dataset that yields each image with its depth prior and the prior's valid mask."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from modgs_ns.scene.caches import DEPTH_CACHE, DepthCache
from modgs_ns.scene.format import load_depth_prior


class ModgsDataset(InputDataset):
    """Adds `depth_prior` [H,W,1] float and `depth_valid` [H,W,1] bool for frames that have a prior.

    `depth_valid` also drops depth-edge pixels when the scene's depth cache has a non-edge mask
    (MoDGS excludes them from the ordinal loss). A disparity prior is given as the cache's aligned
    depth (its inverse, so the depth losses see depth order; far pixels are invalid there).
    """

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + ["depth_prior", "depth_valid"]
    _cache: Optional[Dict[str, tuple]] = None

    def _cached(self) -> Dict[str, tuple]:
        """Image name -> (non-edge valid mask, aligned depth or None) from the depth cache."""
        if self._cache is None:
            self._cache = {}
            scene = self.metadata.get("modgs_scene")
            if scene is not None and (Path(scene.root) / DEPTH_CACHE).is_file():
                cache = DepthCache.load(scene.root)
                disparity = scene.prior_kind == "disparity"
                self._cache = {
                    n: (cache.valid[i], cache.depth[i] if disparity else None) for i, n in enumerate(cache.names)
                }
        return self._cache

    def get_metadata(self, data: Dict) -> Dict:
        paths = self.metadata.get("depth_prior_filenames")
        if not paths or paths[data["image_idx"]] is None:
            return {}
        h, w = data["image"].shape[:2]
        cached = self._cached().get(Path(self.image_filenames[data["image_idx"]]).name)
        if cached is not None and cached[1] is not None and cached[1].shape == (h, w):
            depth, valid = cached[1].astype(np.float32), cached[1] > 0
        else:
            scene = self.metadata.get("modgs_scene")
            depth, valid = load_depth_prior(paths[data["image_idx"]], h, w, scene.prior_kind if scene else "")
        if cached is not None and cached[0].shape == valid.shape:
            valid = valid & cached[0]
        return {"depth_prior": torch.from_numpy(depth)[..., None], "depth_valid": torch.from_numpy(valid)[..., None]}
