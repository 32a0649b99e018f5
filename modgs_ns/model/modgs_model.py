"""ModgsModel: splatfacto with canonical Gaussians deformed to each camera's time.

Overrides only what must change: seeding without `.cuda()`, lazy LPIPS (its AlexNet weights
cannot be downloaded offline), the deformation module and its parameter group, `get_outputs`
(deformed means, `camera.times`, our rasterization dispatch), the MoDGS photometric loss, and
optimizer re-binding after a checkpoint load (nerfstudio issue #3554).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from modgs_ns.model.deformation import OffsetDeformation
from modgs_ns.model.rasterize import rasterization


@dataclass
class ModgsModelConfig(SplatfactoModelConfig):
    """MoDGS model: splatfacto's Gaussians in a canonical space plus a time deformation."""

    _target: Type = field(default_factory=lambda: ModgsModel)
    sh_degree: int = 0
    """MoDGS uses view-independent colour (SH degree 0)."""
    num_downscales: int = 0
    use_absgrad: bool = False
    """absgrad needs gsplat's CUDA backward; the CPU rasterizer gives plain gradients."""
    l1_lambda: float = 1.0
    dssim_lambda: float = 0.2
    """Photometric loss l1_lambda * L1 + dssim_lambda * (1 - SSIM), as MoDGS (not splatfacto's convex mix)."""
    default_time: float = 0.0
    """Time used when a camera carries none (e.g. `ns-render interpolate` in nerfstudio 1.1.5)."""
    deform_hidden: int = 64
    deform_layers: int = 3


def get_viewmat(c2w: Tensor) -> Tensor:
    """nerfstudio (OpenGL) camera-to-world [C,3,4] -> OpenCV world-to-camera [C,4,4].

    splatfacto's version is `torch.compile`d, which costs many seconds per shape on a CPU.
    """
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
def _lpips_deferred():
    import torchmetrics.image.lpip as lpip_mod

    original = lpip_mod.LearnedPerceptualImagePatchSimilarity
    lpip_mod.LearnedPerceptualImagePatchSimilarity = lambda *a, **k: LazyLPIPS()
    try:
        yield
    finally:
        lpip_mod.LearnedPerceptualImagePatchSimilarity = original


class ModgsModel(SplatfactoModel):
    config: ModgsModelConfig

    def populate_modules(self):
        seed_rgb = None
        if self.seed_points is not None and not self.config.random_init and self.seed_points[1].shape[0] > 0:
            # splatfacto moves seed colours to CUDA; hand it the points only and set colours here.
            seed_rgb = self.seed_points[1]
            self.seed_points = (self.seed_points[0], self.seed_points[1][:0])
        with _lpips_deferred():
            super().populate_modules()
        if seed_rgb is not None:
            rgb = seed_rgb.float() / 255.0
            if self.config.sh_degree > 0:
                dc = RGB2SH(rgb)
            else:
                dc = torch.logit(rgb, eps=1e-4)
            self.gauss_params["features_dc"] = torch.nn.Parameter(dc)
        self.deform = OffsetDeformation(hidden=self.config.deform_hidden, layers=self.config.deform_layers)

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        groups = super().get_param_groups()
        groups["deform"] = list(self.deform.parameters())
        return groups

    # ------------------------------------------------------------------ training hooks
    def step_cb(self, optimizers: Optimizers, step):
        self._rebind_optimizers(optimizers)
        super().step_cb(optimizers, step)

    def _rebind_optimizers(self, optimizers: Optimizers) -> None:
        """After loading a checkpoint the Gaussian tensors are new objects; point Adam at them."""
        for name, param in self.gauss_params.items():
            if name not in optimizers.optimizers:
                continue
            opt = optimizers.optimizers[name]
            old = opt.param_groups[0]["params"][0]
            if old is param:
                continue
            state = opt.state.pop(old, None)
            opt.param_groups[0]["params"] = [param]
            if state is not None and all(
                not torch.is_tensor(v) or v.dim() == 0 or v.shape == param.shape for v in state.values()
            ):
                opt.state[param] = state
            optimizers.parameters[name] = [param]

    # ------------------------------------------------------------------ rendering
    def camera_time(self, camera: Cameras) -> float:
        if camera.times is None:
            return float(self.config.default_time)
        return float(camera.times.reshape(-1)[0])

    def deformed_means(self, means: Tensor, t: float) -> Tensor:
        return self.deform.from_canonical(means, t)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        if not isinstance(camera, Cameras):
            return {}
        assert camera.shape[0] == 1, "Only one camera at a time"
        if self.training:
            c2w = self.camera_optimizer.apply_to_camera(camera)
        else:
            c2w = camera.camera_to_worlds
        t = self.camera_time(camera)

        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)

        def sel(x):
            return x if crop_ids is None else x[crop_ids]

        means_t = self.deformed_means(sel(self.means), t)
        colors = torch.cat((sel(self.features_dc)[:, None, :], sel(self.features_rest)), dim=1)

        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        viewmat = get_viewmat(c2w)
        K = camera.get_intrinsics_matrices().to(self.device)
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale)

        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)
            sh_degree = None

        render, alpha, self.info = rasterization(
            means=means_t,
            quats=sel(self.quats),
            scales=torch.exp(sel(self.scales)),
            opacities=torch.sigmoid(sel(self.opacities)).squeeze(-1),
            colors=colors,
            viewmats=viewmat,
            Ks=K,
            width=W,
            height=H,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        depth = None
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(H, W, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    # ------------------------------------------------------------------ losses and metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        if "mask" in batch:
            mask = self._downscale_if_required(batch["mask"]).to(self.device)
            gt, pred = gt * mask, pred * mask
        l1 = torch.abs(gt - pred).mean()
        dssim = 1 - self.ssim(gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
        loss_dict = {"main_loss": self.config.l1_lambda * l1 + self.config.dssim_lambda * dssim}
        if self.training:
            self.camera_optimizer.get_loss_dict(loss_dict)
        return loss_dict

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if "lpips" in metrics and math.isnan(metrics["lpips"]):
            del metrics["lpips"]
        if outputs.get("depth") is not None:
            images["depth"] = colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"])
        return metrics, images
