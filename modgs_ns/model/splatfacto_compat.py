"""What splatfacto needs to run on a CPU and offline: an uncompiled view matrix, LPIPS built only when
its weights load, and the optimizer view gsplat's strategy ops take of a tensor without an optimizer."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Optional

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor


def get_viewmat(c2w: Tensor) -> Tensor:
    """nerfstudio (OpenGL) camera-to-world [C,3,4] -> OpenCV world-to-camera [C,4,4] (splatfacto's
    version is `torch.compile`d: seconds per shape on a CPU)."""
    R = c2w[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=c2w.device, dtype=c2w.dtype)
    T = c2w[:, :3, 3:4]
    R_inv = R.transpose(1, 2)
    view = torch.zeros(c2w.shape[0], 4, 4, device=c2w.device, dtype=c2w.dtype)
    view[:, 3, 3] = 1.0
    view[:, :3, :3] = R_inv
    view[:, :3, 3:4] = -R_inv @ T
    return view


class LazyLPIPS:
    """LPIPS built on first use, and only when its backbone weights can be loaded offline."""

    def __init__(self):
        self._metric = None
        self.available: Optional[bool] = None

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        if self.available is None:
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
                self.available = True
            except Exception as err:  # no network and no cached AlexNet weights
                CONSOLE.print(f"[yellow]LPIPS unavailable ({type(err).__name__}); it is left out of the metrics")
                self.available = False
        if not self.available:
            return torch.tensor(float("nan"))
        self._metric = self._metric.to(a.device)
        return self._metric(a.clamp(0, 1), b.clamp(0, 1))


@contextlib.contextmanager
def lpips_deferred():
    import torchmetrics.image.lpip as lpip_mod

    original = lpip_mod.LearnedPerceptualImagePatchSimilarity
    lpip_mod.LearnedPerceptualImagePatchSimilarity = lambda *a, **k: LazyLPIPS()
    try:
        yield
    finally:
        lpip_mod.LearnedPerceptualImagePatchSimilarity = original


class Carried:
    """What gsplat's strategy ops read of an optimizer, for a tensor that has none: they split, duplicate
    and prune it with the Gaussians and there is no optimizer state to carry."""

    def __init__(self, param: Tensor):
        self.param_groups = [{"params": [param]}]
        self.state: dict = defaultdict(dict)
