"""Dataset that yields each image with its depth prior and the prior's valid mask."""

from __future__ import annotations

from typing import Dict

import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from modgs_ns.data.scene_format import load_depth_prior


class ModgsDataset(InputDataset):
    """Adds `depth_prior` [H,W,1] float and `depth_valid` [H,W,1] bool for frames that have a prior."""

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + ["depth_prior", "depth_valid"]

    def get_metadata(self, data: Dict) -> Dict:
        paths = self.metadata.get("depth_prior_filenames")
        if not paths or paths[data["image_idx"]] is None:
            return {}
        h, w = data["image"].shape[:2]
        depth, valid = load_depth_prior(paths[data["image_idx"]], h, w)
        return {"depth_prior": torch.from_numpy(depth)[..., None], "depth_valid": torch.from_numpy(valid)[..., None]}
