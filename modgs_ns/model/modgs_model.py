"""ModgsModel: splatfacto with canonical Gaussians deformed to each camera's time (MoDGS).

The ideas live in their own modules (`phases`, `stage1`, `canonical_init`, `lifespans`, `deformation`,
`losses`; options in `config`); this class is the glue nerfstudio calls, handed pairs and images by the pipeline.
"""

from __future__ import annotations

import math
import types
from typing import Dict, List, Optional, Tuple, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from modgs_ns.data.scene_info import SceneInfo
from modgs_ns.model import canonical_init, lifespans, stage1
from modgs_ns.model.config import ModgsModelConfig
from modgs_ns.model.deformation import Deformation
from modgs_ns.model.lifespans import STATIC_LOG_WIDTH
from modgs_ns.model.losses import depth_loss
from modgs_ns.model.rasterize import rasterization
from modgs_ns.model.splatfacto_compat import Carried, get_viewmat, lpips_deferred

__all__ = ["ModgsModel", "ModgsModelConfig", "get_viewmat"]

LIFESPAN_PARAMS = ("times", "time_scales")
"""Per-Gaussian lifespan data in `gauss_params`: not trained, split and pruned with the Gaussians."""


class ModgsModel(SplatfactoModel):
    config: ModgsModelConfig

    def populate_modules(self):
        seed_rgb = None
        if self.seed_points is not None and not self.config.random_init and self.seed_points[1].shape[0] > 0:
            # splatfacto moves seed colours to CUDA; hand it the points only and set colours here.
            seed_rgb = self.seed_points[1]
            self.seed_points = (self.seed_points[0], self.seed_points[1][:0])
        with lpips_deferred():
            super().populate_modules()
        if seed_rgb is not None:
            rgb = seed_rgb.float() / 255.0
            dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-4)
            self.gauss_params["features_dc"] = torch.nn.Parameter(dc)
        n = len(self.gauss_params["means"])
        self._set_lifespans(torch.zeros(n, 1), torch.full((n, 1), STATIC_LOG_WIDTH))
        self.deform = Deformation.from_config(self.config.deformation)
        self.stage1_stop = stage1.StopRule()
        self.stage1_report: Dict[Tuple[str, str], dict] = {}
        self.phases = self.config.phases()
        # The scene comes through the constructor (the dataparser's outputs).
        scene: Optional[SceneInfo] = (self.kwargs.get("metadata") or {}).get("modgs_scene")
        self.frame_times = torch.unique(torch.tensor(scene.frame_times if scene else [], dtype=torch.float64))
        if scene is not None and scene.bounds is not None:
            # Once, from the scene's bounds (a loaded checkpoint then restores the same buffers).
            self.deform.set_normalization(torch.from_numpy(scene.bounds).float())
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.world_extent())

    def _set_lifespans(self, centres: Tensor, log_widths: Tensor) -> None:
        for name, value in zip(LIFESPAN_PARAMS, (centres, log_widths)):
            self.gauss_params[name] = torch.nn.Parameter(
                value.to(self.gauss_params["means"].device), requires_grad=False
            )

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        groups = super().get_param_groups()
        # MoDGS gives the time encoder and the coupling network different stage-1 learning rates.
        groups["deform_time"] = list(self.deform.time_encoder.parameters())
        groups["deform"] = list(self.deform.layers.parameters())
        return groups

    def learning_rate_scales(self) -> Dict[str, float]:
        """Param groups whose learning rates are in normalized scene units (MoDGS scales the scene to
        [-1, 1]) and the factor to world units: this world keeps the scene's own units."""
        return {"means": self.world_extent()}

    def load_state_dict(self, state, **kwargs):  # type: ignore
        n = len(state.get("gauss_params.means", state.get("means", [])))
        state.setdefault("gauss_params.times", torch.zeros(n, 1))  # runs from before lifespans: all static
        state.setdefault("gauss_params.time_scales", torch.full((n, 1), STATIC_LOG_WIDTH))
        for old in ("best", "stale", "stopped_at"):  # runs from before the stop rule was its own module
            if f"stage1_{old}" in state:
                state[f"stage1_stop.{old}"] = state.pop(f"stage1_{old}")
        out = super().load_state_dict(state, **kwargs)
        self._set_lifespans(self.gauss_params["times"].detach(), self.gauss_params["time_scales"].detach())
        return out

    def world_extent(self) -> float:
        """World units per normalized unit (half the largest extent of the scene's depth points)."""
        return float(1.0 / self.deform.scale)

    # ------------------------------------------------------------------ stage 1 and the switch
    def stage1_loss_dict(self, batch: Optional[dict]) -> Dict[str, Tensor]:
        """Pair loss of one stage-1 batch (`Correspondences.sample`; None once stage 1 has stopped)."""
        return stage1.pair_loss(self.deform, batch, self.config.stage1)

    @torch.no_grad()
    def stage1_evaluate(self, corr, step: int, final: bool = False) -> None:
        """Held-out pair error, logged in one line; applies the stop rule. `final`: the evaluation at the
        switch, logged as the stage-1 result."""
        self.stage1_report = corr.heldout_errors(lambda x, a, b: stage1.warp(self.deform, x, a, b))
        mse = stage1.heldout_mse(self.stage1_report)
        if mse is None:
            return
        label = "stage 1 result (held-out pairs)" if final else f"stage 1 step {step}: held-out pairs"
        summary = stage1.heldout_summary(self.stage1_report, 2.0 * self.world_extent())
        print(f"modgs: {label}: {summary}", flush=True)  # one unwrapped line
        if self.stage1_stop.update(mse, step, self.config.stage1.patience):
            print(
                f"modgs: stage 1 stopped at step {step}: held-out error has not improved by 2% in "
                f"{self.config.stage1.patience} evaluations",
                flush=True,
            )

    @torch.no_grad()
    def initialize_canonical(self, corr, images: Optional[Dict[int, Tensor]], optimizers: Optimizers, step: int):
        """Replace the Gaussians with the canonical cloud (`canonical_init`), inside their optimizers."""
        c = self.config
        if c.stage1.steps > 0 and c.stage1.eval_every > 0 and not c.static_scene:
            self.stage1_evaluate(corr, step, final=True)  # the fit the canonical cloud is built with
        points = canonical_init.canonical_points(
            corr,
            self.deform,
            c.canonical_init,
            warped=c.stage1.steps > 0,
            lifespans=c.lifespans if c.uses_lifespans() else None,
            images=images,
            seed=c.deformation.seed,
        )
        new = canonical_init.gaussians_from_points(
            points, c.canonical_init.thickness, c.sh_degree, self.k_nearest_sklearn
        )
        for name, value in new.items():
            if name in LIFESPAN_PARAMS:
                continue
            if name in optimizers.optimizers:
                optimizers.optimizers[name].state.clear()  # fresh Adam moments for the new points
            self.gauss_params[name] = torch.nn.Parameter(value.to(self.device))
        self._set_lifespans(new["times"], new["time_scales"])
        self._rebind_optimizers(optimizers)
        for name in ("deform", "deform_time"):  # MoDGS re-creates the deformation's optimizer for stage 2
            if name in optimizers.optimizers:
                optimizers.optimizers[name].state.clear()
        CONSOLE.log(f"[bold]modgs: canonical initialization at step {step}: {len(new['means'])} Gaussians")

    # ------------------------------------------------------------------ training hooks
    def step_cb(self, optimizers: Optimizers, step):
        """splatfacto's schedules (SH, densification) see the stage-2 step."""
        self._rebind_optimizers(optimizers)
        super().step_cb(optimizers, self.phases.stage2_step(step))

    def step_post_backward(self, step):
        if self.phases.in_stage1(step):
            return  # nothing was rendered; the Gaussians are not being trained yet
        if self.step == 0:
            # gsplat resets every opacity to 2 * cull_alpha_thresh whenever step % reset_every == 0, step 0
            # included: that would erase the canonical cloud's initial opacities (3DGS's first reset is at
            # reset_every, never at its first step).
            return
        info, packed = self.info, False
        if getattr(self, "rendered_ids", None) is not None:
            # A subset was rendered: hand the strategy its statistics in packed form, indexed into all Gaussians.
            seen = info["radii"][0] > 0
            grad = types.SimpleNamespace(grad=info["means2d"].grad[0][seen])  # gsplat reads only `.grad`
            info = {**info, "gaussian_ids": self.rendered_ids[seen], "radii": info["radii"][0][seen], "means2d": grad}
            packed = True
        carried = {name: Carried(self.gauss_params[name]) for name in LIFESPAN_PARAMS}
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers={**self.optimizers, **carried},
            state=self.strategy_state,
            step=self.step,
            info=info,
            packed=packed,
        )
        if self.gauss_params["times"].requires_grad:  # gsplat's ops replaced them (trainable by default)
            self._set_lifespans(self.gauss_params["times"].detach(), self.gauss_params["time_scales"].detach())

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
        """Canonical means [N,3] at time t (interpolated between frames: `lifespans.interpolated_positions`)."""
        if self.config.static_scene:
            return means
        if not self.config.interpolate_between_frames:
            return self.deform.from_canonical(means, t)
        return lifespans.interpolated_positions(self.deform.from_canonical, means, self.frame_times, t)

    def has_lifespan(self, ids: Optional[Tensor] = None) -> Tensor:
        """[N] bool (or [M] for `ids`): the Gaussian lives only around its frame's time."""
        log_widths = self.gauss_params["time_scales"][:, 0]
        return lifespans.has_lifespan(log_widths if ids is None else log_widths[ids])

    def gaussians_at(self, t: float, ids: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(indices [M] of the Gaussians alive at t among `ids` (default all), their means at t [M,3],
        their opacities at t [M]). Alive: lifespan weight at least the cutoff (always, without lifespans)."""
        mortal_content = self.config.uses_lifespans()
        if ids is None and not mortal_content:  # everything, in order: no gather on the training hot path
            ids = torch.arange(len(self.means), device=self.means.device)
            return ids, self.deformed_means(self.means, t), torch.sigmoid(self.opacities).squeeze(-1)
        if ids is None:
            ids = torch.arange(len(self.means), device=self.means.device)
        opacity = torch.sigmoid(self.opacities[ids]).squeeze(-1)
        if not mortal_content:
            return ids, self.deformed_means(self.means[ids], t), opacity
        # Between two frames' times each moving object is drawn by the nearer frame's Gaussians.
        w = lifespans.lifespan_weights(
            self.gauss_params["times"][:, 0],
            self.gauss_params["time_scales"][:, 0],
            lifespans.nearest_frame_time(self.frame_times, t),
        )[ids]
        alive = w >= self.config.lifespans.cutoff
        ids, opacity = ids[alive], opacity[alive] * w[alive]
        if self.config.lifespans.deform_static:
            return ids, self.deformed_means(self.means[ids], t), opacity
        means = self.means[ids]
        mortal = self.has_lifespan(ids)
        means_t = means.clone()
        means_t[mortal] = self.deformed_means(means[mortal], t)
        return ids, means_t, opacity

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        if not isinstance(camera, Cameras):
            return {}
        assert camera.shape[0] == 1, "Only one camera at a time"
        c2w = self.camera_optimizer.apply_to_camera(camera) if self.training else camera.camera_to_worlds
        t = self.camera_time(camera)
        ids = None
        if self.crop_box is not None and not self.training:
            ids = torch.where(self.crop_box.within(self.means).squeeze(-1))[0]
        ids, means_t, opacities_t = self.gaussians_at(t, ids)
        if len(ids) == 0:
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        # Which Gaussians were rendered, for the densification statistics (None: all of them, in order).
        self.rendered_ids = None if len(ids) == len(self.means) else ids

        def sel(x):
            return x if self.rendered_ids is None else x[ids]

        colors = torch.cat((sel(self.features_dc)[:, None, :], sel(self.features_rest)), dim=1)
        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        viewmat = get_viewmat(c2w)
        K = camera.get_intrinsics_matrices().to(self.device)
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale)

        if not self.training:
            render_mode = "RGB+ED"  # normalized depth for viewing
        elif self.config.depth_loss.kind != "none":
            render_mode = "RGB+D"  # accumulated depth, as MoDGS's rasterizer gives it
        else:
            render_mode = "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)
            sh_degree = None

        render, alpha, self.info = rasterization(
            means=means_t,
            quats=sel(self.quats),
            scales=torch.exp(sel(self.scales)),
            opacities=opacities_t,
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
            cpu_backend=self.config.cpu_rasterizer,
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        out = {"rgb": rgb.squeeze(0), "depth": None, "accumulation": alpha.squeeze(0), "background": background}
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            out["depth"] = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        elif render_mode == "RGB+D":
            out["depth_accumulated"] = render[..., 3:4].squeeze(0)
        if background.shape[0] == 3 and not self.training:
            out["background"] = background.expand(H, W, 3)
        return out

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
        cfg = self.config.depth_loss
        if cfg.kind != "none" and "depth_accumulated" in outputs and "depth_prior" in batch:
            prior, valid = batch["depth_prior"].to(self.device), batch["depth_valid"].to(self.device)
            loss_dict["depth_loss"] = cfg.weight * depth_loss(
                outputs["depth_accumulated"], prior, valid, cfg, self.deform.scale
            )
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
