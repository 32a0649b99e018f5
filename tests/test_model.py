"""ModgsModel pieces: camera conventions, offline construction, time-conditioned rendering, loss."""

import math
import os
from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from pytorch_msssim import ssim

from modgs_ns.data.scene_info import SceneInfo
from modgs_ns.model.deformation import DeformationConfig
from modgs_ns.model.modgs_model import LIFESPAN_PARAMS, ModgsModelConfig, get_viewmat


def test_viewmat_matches_splatfacto():
    from nerfstudio.models.splatfacto import get_viewmat as ns_get_viewmat

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    c2w = torch.cat([q, torch.randn(3, 1, generator=g)], 1)[None]
    torch.testing.assert_close(get_viewmat(c2w), ns_get_viewmat(c2w))


def make_model(n=400, seed=0, bounds=None, **options):
    """A small model; `options`: config fields, dotted for a group's ("stage1.steps"); `bounds` [2,3]:
    the scene's depth-point bounds as the dataparser would hand them."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.stack(
        [torch.rand(n, generator=g) * 2 - 1, torch.rand(n, generator=g) * 1.5 - 0.75, -3 - torch.rand(n, generator=g)],
        -1,
    )
    rgb = (torch.rand(n, 3, generator=g) * 255).to(torch.uint8)
    config = ModgsModelConfig(
        deformation=DeformationConfig(feature_dims=32, proj_dims=32, hidden=(32,), gabor_hidden=32)
    )
    for key, value in options.items():
        *groups, name = key.split(".")
        target = config
        for group in groups:
            target = getattr(target, group)
        assert hasattr(target, name), key
        setattr(target, name, value)
    scene = SceneInfo(root=Path("."), prior_kind="", frame_times=(), bounds=None if bounds is None else bounds.numpy())
    model = config.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])),
        num_train_data=4,
        metadata={"modgs_scene": scene},
        seed_points=(xyz, rgb),
    )
    return model, xyz, rgb


def camera(t):
    return Cameras(
        camera_to_worlds=torch.eye(4)[None, :3],
        fx=40.0,
        fy=40.0,
        cx=24.0,
        cy=18.0,
        width=48,
        height=36,
        times=None if t is None else torch.tensor([[t]]),
    )


def test_construction_is_offline_and_keeps_seed_colours():
    model, xyz, rgb = make_model()
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert not any(hub.glob("*.pth")) if hub.exists() else True  # nothing downloaded or attempted
    assert torch.equal(model.means.detach(), xyz)
    torch.testing.assert_close(torch.sigmoid(model.features_dc.detach()) * 255, rgb.float(), atol=0.05, rtol=0)
    assert "deform" in model.get_param_groups()


def test_time_reaches_the_renderer():
    model, *_ = make_model()
    model.eval()
    with torch.no_grad():
        a = model.get_outputs_for_camera(camera(0.0))["rgb"]
        b = model.get_outputs_for_camera(camera(1.0))["rgb"]
        assert torch.equal(a, b)  # the deformation starts as the identity
        assert model.camera_time(camera(None)) == model.config.default_time
        model.deform.set_normalization(model.means.detach())
        for layer in model.deform.layers:
            torch.nn.init.normal_(layer.map_st[-1].weight, std=0.2)
        a = model.get_outputs_for_camera(camera(0.0))["rgb"]
        b = model.get_outputs_for_camera(camera(1.0))["rgb"]
        c = model.get_outputs_for_camera(camera(1.0))["rgb"]
    assert (a - b).abs().max() > 1e-2 and torch.equal(b, c)


def test_loss_is_l1_plus_weighted_dssim():
    model, *_ = make_model()
    model.config.depth_loss.kind = "none"  # photometric part only; the depth losses have their own tests
    model.train()
    model.optimizers = {}  # set by the trainer's step callback; the strategy only retains grads here
    out = model.get_outputs(camera(0.5))
    img = torch.rand(36, 48, 3, generator=torch.Generator().manual_seed(1))
    loss = model.get_loss_dict(out, {"image": img})["main_loss"]
    pred = out["rgb"].detach()
    ref = (img - pred).abs().mean() + 0.2 * (
        1 - ssim(img.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None], data_range=1.0)
    )
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert model.means.grad is not None and model.means.grad.abs().sum() > 0
    assert model.deform.layers[0].map_st[-1].weight.grad.abs().sum() > 0  # the deformation is trained by the render


def test_cpu_refuses_absgrad():
    with pytest.raises(ValueError):
        model, *_ = make_model()
        model.strategy.absgrad = True
        model.train()
        model.optimizers = {}
        model.get_outputs(camera(0.0))


def test_depth_loss_uses_the_accumulated_render():
    model, *_ = make_model()
    model.train()
    model.optimizers = {}
    out = model.get_outputs(camera(0.5))
    assert "depth_accumulated" in out and out["depth"] is None
    prior = out["depth_accumulated"].detach() * 2 + 1  # same order as the render
    batch = {"image": out["rgb"].detach(), "depth_prior": prior, "depth_valid": out["accumulation"].detach() > 0.5}
    losses = model.get_loss_dict(out, batch)
    assert "depth_loss" in losses and float(losses["depth_loss"]) < 0.05
    batch["depth_prior"] = -prior  # reversed order
    assert float(model.get_loss_dict(out, batch)["depth_loss"]) > 0.05


class _FramePoints:
    """Minimal caches: two frames of points moving by +0.5 in x, all valid."""

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        base = torch.rand(3000, 3, generator=g) * torch.tensor([2.0, 1.0, 1.0]) - torch.tensor([1.0, 0.5, 4.0])
        self.frames = [base, base + torch.tensor([0.5, 0.0, 0.0])]
        self.times = torch.tensor([0.0, 1.0])
        self.names = ["a.png", "b.png"]
        self.T = 2
        self.normals = [torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=-1) for _ in range(2)]

    def frame_normals(self, i):
        return self.normals[i]

    def frame_points(self, i, image=None):
        return self.frames[i], torch.rand(len(self.frames[i]), 3), torch.zeros(len(self.frames[i]), dtype=torch.bool)

    def bbox(self):
        p = torch.cat(self.frames)
        return p.min(0).values, p.max(0).values


def test_canonical_initialization_replaces_gaussians_inside_optimizers():
    from nerfstudio.engine.optimizers import Optimizers

    corr = _FramePoints()
    model, *_ = make_model(
        bounds=torch.stack(corr.bbox()),
        **{
            "stage1.steps": 10,
            "canonical_init.min_points": 0,
            "canonical_init.max_points": 1500,
            "stage1.eval_every": 0,  # the stand-in has no held-out pairs and no depth maps
            "canonical_init.consistency_frames": 0,
        },
    )
    for layer in model.deform.layers:
        torch.nn.init.normal_(layer.map_st[-1].weight, std=0.05)
    from modgs_ns.configs import modgs_cpu_method

    opt_cfg = modgs_cpu_method.config.optimizers
    optimizers = Optimizers(opt_cfg, model.get_param_groups())
    model.initialize_canonical(corr, None, optimizers, step=10)
    means = model.means.detach()
    with torch.no_grad():
        warped = torch.cat([model.deform.to_canonical(corr.frames[i], float(corr.times[i])) for i in range(2)])
    assert 0 < len(means) <= 1500
    assert bool((means >= warped.min(0).values - 1e-5).all() and (means <= warped.max(0).values + 1e-5).all())
    for name, param in model.gauss_params.items():
        assert len(param) == len(means)
        if name in LIFESPAN_PARAMS:  # carried without an optimizer, never trained
            assert name not in optimizers.optimizers and not param.requires_grad
        else:
            assert optimizers.optimizers[name].param_groups[0]["params"][0] is param
    assert torch.allclose(torch.sigmoid(model.opacities), torch.tensor(0.1))
    assert model.strategy_state["scene_scale"] == model.world_extent()


def _lifespan_model(total_steps=100, **config):
    """A model initialized from _FramePoints whose second frame's first 1000 points move (lifespans on);
    `config`: ModgsModelConfig fields (dotted for groups) to set before the construction; optimizers on
    the cpu preset's schedules for a run of `total_steps`."""
    from nerfstudio.engine.optimizers import Optimizers

    from modgs_ns.configs import modgs_cpu_method, phased_optimizer_configs

    corr = _FramePoints()
    options = {
        "stage1.steps": 10,
        "canonical_init.min_points": 0,
        "canonical_init.max_points": 100000,
        "stage1.eval_every": 0,
        "canonical_init.consistency_frames": 0,
        "lifespans.width": 0.25,
        **config,
    }
    model, *_ = make_model(bounds=torch.stack(corr.bbox()), **options)
    moving = torch.zeros(3000, dtype=torch.bool)
    moving[:1000] = True
    corr.frame_points = lambda i, image=None: (
        corr.frames[i],
        torch.rand(3000, 3),
        moving if i == 1 else torch.zeros(3000, dtype=torch.bool),
    )
    model.corr = corr
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a deformation that moves points (its last layers start at zero: identity)
        for p in model.deform.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    configs = phased_optimizer_configs(
        modgs_cpu_method.config.optimizers, model.config.phases(total_steps), model.learning_rate_scales()
    )
    optimizers = Optimizers(configs, model.get_param_groups())
    model.initialize_canonical(corr, None, optimizers, step=10)
    return model, optimizers


def test_moving_points_get_lifespans_around_their_frame():
    model, _ = _lifespan_model()
    times = model.gauss_params["times"].squeeze(-1)
    widths = torch.exp(model.gauss_params["time_scales"].squeeze(-1))
    mortal = widths < 100
    assert int(mortal.sum()) == 1000  # exactly frame 1's moving points
    assert torch.allclose(times[mortal], torch.tensor(1.0)) and torch.allclose(widths[mortal], torch.tensor(0.25))
    # Opacity at t: sigmoid(logit) * exp(-0.5 ((t - 1) / 0.25)^2) for the mortal, unchanged for the rest
    # (the model knows no frame times here, so the weights are those of t itself).
    for t in (0.0, 0.6, 0.8, 1.0):
        p = 2.0
        ids, _, opacity = model.gaussians_at(t)
        expected = torch.sigmoid(model.opacities.squeeze(-1)) * torch.where(
            mortal, torch.tensor(math.exp(-0.5 * abs((t - 1.0) / 0.25) ** p)), torch.tensor(1.0)
        )
        alive = torch.where(expected / torch.sigmoid(model.opacities.squeeze(-1)) >= model.config.lifespans.cutoff)[0]
        assert torch.equal(ids, alive)
        assert torch.allclose(opacity, expected[alive], rtol=1e-5)
    assert len(model.gaussians_at(0.0)[0]) < len(model.means)  # at t=0 (4 widths away) frame 1 moving ones are cut


def test_between_frames_the_lifespans_are_the_nearest_frames():
    # Frames at 0, 0.5, 1; frame 1's moving Gaussians have a 0.25-wide lifespan around t = 1.
    model, _ = _lifespan_model()
    model.frame_times = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    mortal = model.has_lifespan()
    base = torch.sigmoid(model.opacities.squeeze(-1))
    for t in (0.6, 0.7, 0.8, 0.9, 1.0):
        t_eff = 0.5 if t < 0.75 else 1.0
        factor = torch.where(mortal, torch.tensor(math.exp(-0.5 * ((t_eff - 1.0) / 0.25) ** 2)), torch.tensor(1.0))
        alive = torch.where(factor >= model.config.lifespans.cutoff)[0]
        ids, _, opacity = model.gaussians_at(t)
        assert torch.equal(ids, alive)
        assert torch.allclose(opacity, (base * factor)[alive], rtol=1e-5)


def test_without_deform_static_only_gaussians_with_lifespans_move():
    model, _ = _lifespan_model()
    mortal = model.has_lifespan()
    for t in (0.8, 1.0):
        _, deformed, _ = model.gaussians_at(t)  # deform_static True (MoDGS): everything goes through it
        model.config.lifespans.deform_static = False
        ids, means_t, _ = model.gaussians_at(t)
        model.config.lifespans.deform_static = True
        expected = model.deform.from_canonical(model.means[ids], t).detach()
        keep = mortal[ids]
        assert keep.any() and (~keep).any()
        assert torch.equal(means_t[~keep], model.means[ids][~keep])  # the static ones stay in place
        assert torch.allclose(means_t[keep], expected[keep], atol=1e-6)
        assert torch.allclose(deformed, expected, atol=1e-6)
        assert (expected[~keep] - model.means[ids][~keep]).abs().max() > 1e-4  # the deformation is not identity


EXACT = "donot_use_mm_for_euclid_dist"  # cdist's matrix-product shortcut is off by ~1e-3 here


@pytest.mark.parametrize("deform_static", [True, False])
def test_static_gaussians_start_where_they_render_at_their_frame(deform_static):
    # One point per voxel, so that the canonical means are the (warped or not) frame points themselves.
    model, _ = _lifespan_model(**{"lifespans.deform_static": deform_static, "canonical_init.voxel_divisions": 10**6})
    static = model.gauss_params["time_scales"].squeeze(-1) >= 5
    observed = torch.cat(model.corr.frames)
    for t in (0.0, 1.0):
        ids, means_t, _ = model.gaussians_at(t)
        at_t = means_t[static[ids]].detach()
        nearest = torch.cdist(at_t, observed, compute_mode=EXACT).min(1).values
        frame = observed[:3000] if t == 0.0 else observed[3000:]
        own = (
            torch.cdist(at_t, frame, compute_mode=EXACT).min(1).values < 1e-4
        )  # the static points of the frame at time t
        # Either way a frame's static points are where it saw them at its own time (3000 static in frame
        # 0, 2000 in frame 1); deformed ones went to canonical space and back (the deformation is exact).
        assert own.sum() >= (3000 if t == 0.0 else 2000)
        if not deform_static:  # never deformed: every static Gaussian sits on a point some frame observed
            assert torch.all(nearest < 1e-5)
        else:  # the other frame's points moved with the (random, not identity) deformation
            assert (nearest > 1e-4).sum() > 1000


@pytest.mark.parametrize("train_in_stage2,lifespan", [(False, 0.25), (True, 0.25), (False, 0.0)])
def test_stage2_keeps_the_deformation_only_with_lifespans_when_asked(train_in_stage2, lifespan):
    # The deformation is frozen through its optimizer: its stage-2 learning rate is 0 (stage 1's is not).
    model, optimizers = _lifespan_model(
        **{"lifespans.train_deformation_in_stage2": train_in_stage2, "lifespans.width": lifespan}
    )
    kept = not train_in_stage2 and lifespan > 0
    assert model.config.phases().deformation_frozen_in_stage2 == kept
    model.train()
    model.optimizers = optimizers.optimizers
    for step in range(10):  # stage 1's schedule: the deformation's learning rate is positive there
        assert optimizers.optimizers["deform"].param_groups[0]["lr"] > 0
        optimizers.scheduler_step_all(step)
    before = [p.detach().clone() for p in model.deform.parameters()]
    for step in (10, 11):  # two stage-2 steps: step_cb, render, backward, Adam, schedule
        model.step_cb(optimizers, step)
        out = model.get_outputs(camera(0.8))
        out["rgb"].mean().backward()
        assert model.means.grad is not None and model.means.grad.abs().sum() > 0  # positions still learn
        assert (optimizers.optimizers["deform"].param_groups[0]["lr"] == 0) == kept
        optimizers.optimizer_step_all()
        optimizers.zero_grad_all()
        optimizers.scheduler_step_all(step)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.deform.parameters()))
    assert unchanged == kept


def test_lifespans_are_split_duplicated_and_pruned_with_their_gaussians():
    from gsplat.strategy.ops import duplicate, remove

    from modgs_ns.model.splatfacto_compat import Carried

    model, optimizers = _lifespan_model()
    params = model.gauss_params
    before = {k: params[k].detach().clone() for k in ("means", *LIFESPAN_PARAMS)}
    n = len(before["means"])
    carried = {k: Carried(params[k]) for k in LIFESPAN_PARAMS}
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::7] = True
    duplicate(params, {**optimizers.optimizers, **carried}, {}, mask)
    for k, v in before.items():  # the copies are appended, each with its source's lifespan
        assert torch.equal(params[k].detach(), torch.cat([v, v[mask]]))
    drop = torch.zeros(len(params["means"]), dtype=torch.bool)
    drop[: n // 2] = True
    remove(params, {**optimizers.optimizers, **{k: Carried(params[k]) for k in LIFESPAN_PARAMS}}, {}, drop)
    for k, v in before.items():
        assert torch.equal(params[k].detach(), torch.cat([v, v[mask]])[~drop])


def test_densification_statistics_land_on_the_rendered_subset():
    model, optimizers = _lifespan_model()
    model.train()
    model.optimizers = optimizers.optimizers
    model.step = 11
    out = model.get_outputs(camera(0.0))
    rendered = model.rendered_ids
    assert rendered is not None and len(rendered) < len(model.means)
    out["rgb"].sum().backward()
    grads = model.info["means2d"].grad[0].clone()
    seen = model.info["radii"][0] > 0
    model.step_post_backward(11)
    state = model.strategy_state
    expected = torch.zeros(len(model.means))
    half_size = torch.tensor([model.info["width"] / 2.0, model.info["height"] / 2.0])  # gsplat's normalization
    expected[rendered[seen]] = (grads[seen] * half_size).norm(dim=-1)
    assert torch.allclose(state["grad2d"], expected)
    assert torch.equal(state["count"] > 0, torch.isin(torch.arange(len(model.means)), rendered[seen]))


def test_first_stage2_step_keeps_the_initial_opacities_and_later_resets_still_happen():
    # gsplat's strategy resets every opacity to 2 * cull_alpha_thresh at step % reset_every == 0, which
    # includes stage 2's step 0; 3DGS's first reset comes after reset_every steps.
    model, optimizers = _lifespan_model()
    model.train()
    mortal = model.has_lifespan()
    with torch.no_grad():  # some opacities above the reset's cap (2 * cull_alpha_thresh)
        model.gauss_params["opacities"][mortal] = torch.logit(torch.tensor(0.5))
    expected = torch.where(mortal, torch.tensor(0.5), torch.tensor(0.1))
    reset_every = model.strategy.reset_every
    for stage2_step in (0, reset_every):
        model.step_cb(optimizers, model.config.stage1.steps + stage2_step)
        assert model.step == stage2_step
        model.get_outputs(camera(1.0))["rgb"].mean().backward()
        model.step_post_backward(model.config.stage1.steps + stage2_step)
        optimizers.zero_grad_all()
        opacity = torch.sigmoid(model.opacities.detach().squeeze(-1))
        if stage2_step == 0:
            assert torch.allclose(opacity, expected)
        else:  # the periodic reset is still there: opacities capped at 2 * cull_alpha_thresh (0.2 here)
            assert torch.allclose(opacity, expected.clamp(max=2 * model.config.cull_alpha_thresh))
            assert (opacity < expected).any()


def test_quat_with_z_axis_turns_the_thin_axis_onto_the_normal():
    from modgs_ns.model.canonical_init import quat_with_z_axis
    from modgs_ns.model.rasterize_torch import quat_scale_to_covar

    g = torch.Generator().manual_seed(0)
    axes = torch.eye(3)
    normals = torch.cat([axes, -axes, torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)])
    q = quat_with_z_axis(normals)
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(q)), atol=1e-6)
    cov = quat_scale_to_covar(q, torch.tensor([1.0, 1.0, 0.1]).expand(len(q), 3))
    # Sigma n = 0.01 n along the normal, and Sigma is the identity across it.
    assert torch.allclose((cov @ normals[:, :, None])[..., 0], 0.01 * normals, atol=1e-5)
    assert torch.allclose(torch.linalg.eigvalsh(cov), torch.tensor([0.01, 1.0, 1.0]).expand(len(q), 3), atol=1e-5)


@pytest.mark.parametrize("thickness", [0.1, 1.0])
def test_flat_initialization_lays_gaussians_on_their_frames_surface(thickness):
    from modgs_ns.model.rasterize_torch import quat_scale_to_covar

    # One point per voxel: every Gaussian is one frame point, so its normal is that point's normal.
    model, _ = _lifespan_model(**{"canonical_init.thickness": thickness, "canonical_init.voxel_divisions": 10**6})
    cov = quat_scale_to_covar(model.quats.detach(), torch.exp(model.scales.detach()))
    eigval, eigvec = torch.linalg.eigh(cov)
    ratio = (eigval[:, 0] / eigval[:, 2]).sqrt()
    assert torch.allclose(ratio, torch.tensor(thickness), atol=1e-3)
    if thickness < 1:
        given = torch.cat(model.corr.normals)
        cos = (eigvec[:, :, 0] @ given.T).abs().max(-1).values  # the thin axis against every frame normal
        assert bool((cos > 1 - 1e-5).all())
    else:  # MoDGS: spheres, identity rotations
        assert torch.equal(model.quats.detach(), torch.tensor([1.0, 0, 0, 0]).expand(len(model.quats), 4))


@pytest.mark.parametrize("interpolate", [True, False])
def test_between_two_frames_means_move_on_the_line_between_the_frames_positions(interpolate):
    model, *_ = make_model()
    model.config.interpolate_between_frames = interpolate
    model.frame_times = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a deformation that moves points (its last layers start at zero: identity)
        for p in model.deform.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    x = model.means.detach()
    with torch.no_grad():
        at = {t: model.deform.from_canonical(x, t) for t in (0.0, 0.3, 0.5, 0.8, 1.0)}
        for t in (0.0, 0.5, 1.0):  # at a frame's time: the deformation itself
            assert torch.equal(model.deformed_means(x, t), at[t])
        assert torch.equal(model.deformed_means(x, float(torch.tensor(0.5, dtype=torch.float32))), at[0.5])
        for t, (t0, t1) in ((0.3, (0.0, 0.5)), (0.8, (0.5, 1.0))):
            a = (t - t0) / (t1 - t0)
            expected = (1 - a) * at[t0] + a * at[t1] if interpolate else at[t]
            assert torch.allclose(model.deformed_means(x, t), expected, atol=1e-6)
            assert (at[t] - ((1 - a) * at[t0] + a * at[t1])).norm(dim=-1).max() > 1e-4  # the two differ here
