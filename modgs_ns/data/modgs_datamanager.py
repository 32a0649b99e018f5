"""nerfstudio's FullImageDatamanager for modgs scenes, made acceptable to `ns-render spiral`.

nerfstudio 1.1.5's `ns-render spiral` asserts a ray-based datamanager (VanillaDataManager and
kin) and asks `datamanager.eval_dataloader.get_camera(image_idx=0)` for its start camera
(scripts/render.py:673-682). Rather than patching nerfstudio, this class also derives from
VanillaDataManager, below FullImageDatamanager in the MRO so that every method the full-image
datamanager defines wins, and with VanillaDataManager's constructor skipped (`_NoRayInit`): no pixel
samplers or ray generators are built. `eval_dataloader.get_camera` returns the first training
camera, with its time, so nerfstudio's spiral starts at the training camera and sweeps time 0 -> 1.
"""

from __future__ import annotations

from typing import Dict, Tuple

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManager, VanillaDataManager
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager

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
    @property
    def eval_dataloader(self) -> _TrainCameraLookup:
        return _TrainCameraLookup(self)
