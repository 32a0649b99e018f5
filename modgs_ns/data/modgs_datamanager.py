"""nerfstudio's FullImageDatamanager for modgs scenes: it also owns stage 1's pairs, and is made
acceptable to `ns-render spiral`.

nerfstudio 1.1.5's `ns-render spiral` asserts a ray-based datamanager (VanillaDataManager and
kin) and asks `datamanager.eval_dataloader.get_camera(image_idx=0)` for its start camera
(scripts/render.py:673-682). Rather than patching nerfstudio, this class also derives from
VanillaDataManager, below FullImageDatamanager in the MRO so that every method the full-image
datamanager defines wins, and with VanillaDataManager's constructor skipped (`_NoRayInit`): no pixel
samplers or ray generators are built. `eval_dataloader.get_camera` returns the first training
camera, with its time, so nerfstudio's spiral starts at the training camera and sweeps time 0 -> 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManager, VanillaDataManager
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager
from torch import Tensor

from modgs_ns.data.correspondences import Correspondences
from modgs_ns.data.modgs_dataset import ModgsDataset


class _NoRayInit(VanillaDataManager):
    """Placeholder in the MRO: stands for VanillaDataManager without building its ray machinery."""

    def __init__(self, *args, **kwargs):  # reached from FullImageDatamanager's super().__init__()
        DataManager.__init__(self)


class _TrainCameraLookup:
    """The part of a ray datamanager's eval dataloader that `ns-render spiral` uses."""

    def __init__(self, datamanager: "ModgsDataManager"):
        self.datamanager = datamanager

    def get_camera(self, image_idx: int = 0) -> Tuple[Cameras, Dict]:
        cameras = self.datamanager.train_dataset.cameras
        return cameras[image_idx : image_idx + 1].to(self.datamanager.device), {"image_idx": image_idx}


class ModgsDataManager(FullImageDatamanager[ModgsDataset], _NoRayInit):
    _pairs: Optional[Tuple[tuple, Correspondences]] = None

    def stage1_pairs(self, heldout_fraction: float, seed: int) -> Correspondences:
        """The scene's point maps and 3D pairs (stage 1 and the canonical initialization), loaded on first use."""
        key = (heldout_fraction, seed)
        if self._pairs is None or self._pairs[0] != key:
            root = Path(self.train_dataset.metadata["modgs_scene"].root)
            self._pairs = (key, Correspondences.load(root, heldout_fraction, seed))
        return self._pairs[1]

    def stage1_batch(self, step: int, points: int, seed: int, moving_fraction: float) -> dict:
        """One stage-1 batch of pairs (`Correspondences.sample`); the pairs must have been loaded."""
        assert self._pairs is not None, "stage1_pairs() first"
        return self._pairs[1].sample(step, points, seed=seed, moving_fraction=moving_fraction)

    def train_images_by_frame(self, corr: Correspondences) -> Dict[int, Tensor]:
        """The cached training images ([H,W,C] uint8) keyed by the pairs' frame index."""
        row = {name: i for i, name in enumerate(corr.names)}
        out = {}
        for k, path in enumerate(self.train_dataset.image_filenames):
            i = row.get(Path(path).name)
            if i is not None:
                out[i] = self.cached_train[k]["image"]
        return out

    @property
    def eval_dataloader(self) -> _TrainCameraLookup:
        return _TrainCameraLookup(self)
