"""Dataset that yields each image with its depth prior and the prior's valid mask."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from modgs_ns.scene.caches import DEPTH_CACHE, load_valid_masks
from modgs_ns.scene.format import load_depth_prior


class ModgsDataset(InputDataset):
    """Adds `depth_prior` [H,W,1] float and `depth_valid` [H,W,1] bool for frames that have a prior.

    `depth_valid` also drops depth-edge pixels when the scene's depth cache has a non-edge mask
    (MoDGS excludes them from the ordinal loss).
    """

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + ["depth_prior", "depth_valid"]
    _nonedge: Optional[Dict[str, np.ndarray]] = None

    def _nonedge_masks(self) -> Dict[str, np.ndarray]:
        if self._nonedge is None:
            self._nonedge = {}
            root = self.metadata.get("modgs_root")
            if root and (Path(root) / DEPTH_CACHE).is_file():
                names, valid = load_valid_masks(Path(root))
                self._nonedge = dict(zip(names, valid))
        return self._nonedge

    def get_metadata(self, data: Dict) -> Dict:
        paths = self.metadata.get("depth_prior_filenames")
        if not paths or paths[data["image_idx"]] is None:
            return {}
        h, w = data["image"].shape[:2]
        depth, valid = load_depth_prior(paths[data["image_idx"]], h, w)
        edge_ok = self._nonedge_masks().get(Path(self.image_filenames[data["image_idx"]]).name)
        if edge_ok is not None and edge_ok.shape == valid.shape:
            valid = valid & edge_ok
        return {"depth_prior": torch.from_numpy(depth)[..., None], "depth_valid": torch.from_numpy(valid)[..., None]}
