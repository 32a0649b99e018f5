"""ModgsModel pieces: camera conventions, offline construction, time-conditioned rendering, loss."""

import os
from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from pytorch_msssim import ssim

from modgs_ns.model.modgs_model import ModgsModelConfig, get_viewmat


def test_viewmat_matches_splatfacto():
    from nerfstudio.models.splatfacto import get_viewmat as ns_get_viewmat

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    c2w = torch.cat([q, torch.randn(3, 1, generator=g)], 1)[None]
    torch.testing.assert_close(get_viewmat(c2w), ns_get_viewmat(c2w))


def make_model(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.stack([torch.rand(n, generator=g) * 2 - 1, torch.rand(n, generator=g) * 1.5 - 0.75, -3 - torch.rand(n, generator=g)], -1)
    rgb = (torch.rand(n, 3, generator=g) * 255).to(torch.uint8)
    model = ModgsModelConfig().setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])),
        num_train_data=4,
        metadata={},
        seed_points=(xyz, rgb),
    )
    return model, xyz, rgb


def camera(t):
    return Cameras(
        camera_to_worlds=torch.eye(4)[None, :3],
        fx=40.0, fy=40.0, cx=24.0, cy=18.0, width=48, height=36,
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
        torch.nn.init.normal_(model.deform.head.weight, std=0.05)
        a = model.get_outputs_for_camera(camera(0.0))["rgb"]
        b = model.get_outputs_for_camera(camera(1.0))["rgb"]
        c = model.get_outputs_for_camera(camera(1.0))["rgb"]
    assert (a - b).abs().max() > 1e-2 and torch.equal(b, c)


def test_loss_is_l1_plus_weighted_dssim():
    model, *_ = make_model()
    model.train()
    model.optimizers = {}  # set by the trainer's step callback; the strategy only retains grads here
    out = model.get_outputs(camera(0.5))
    img = torch.rand(36, 48, 3, generator=torch.Generator().manual_seed(1))
    loss = model.get_loss_dict(out, {"image": img})["main_loss"]
    pred = out["rgb"].detach()
    ref = (img - pred).abs().mean() + 0.2 * (1 - ssim(img.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None], data_range=1.0))
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert model.means.grad is not None and model.means.grad.abs().sum() > 0
    assert model.deform.head.weight.grad.abs().sum() > 0  # the deformation is trained by the render


def test_cpu_refuses_absgrad():
    with pytest.raises(ValueError):
        model, *_ = make_model()
        model.strategy.absgrad = True
        model.train()
        model.optimizers = {}
        model.get_outputs(camera(0.0))
