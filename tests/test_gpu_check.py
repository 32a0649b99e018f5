"""scripts/gpu_check.py's own logic, on the CPU: the comparison it runs on a GPU, with a fake CUDA
backend (our PyTorch compositor under gsplat's call signature) standing in for gsplat."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from modgs_ns.model.rasterize_torch import rasterization_torch, rasterize_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def fake_gsplat(
    means,
    quats,
    scales,
    opacities,
    colors,
    viewmats,
    Ks,
    width,
    height,
    near_plane=0.01,
    far_plane=1e10,
    sh_degree=None,
    backgrounds=None,
    render_mode="RGB",
    packed=False,
    absgrad=False,
    rasterize_mode="classic",
):
    """gsplat.rendering.rasterization's signature, computed by our PyTorch path."""
    return rasterization_torch(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode=render_mode,
        composite=rasterize_image,
    )


def shifted_gsplat(means, **kw):
    """A backend with a bug: every Gaussian a third of a pixel off (as a wrong pixel-centre rule gives)."""
    f = float(kw["Ks"][0, 0, 0])
    z = means[:, 2:3].detach()
    return fake_gsplat(means + torch.cat([z / f / 3, torch.zeros_like(z), torch.zeros_like(z)], -1), **kw)


@pytest.mark.parametrize("scene_name", ["random", "generated"])
def test_fake_backend_matches_the_cpu_path(gpu_check, scene_name):
    from modgs_ns.model.rasterize import rasterization

    scene = (
        gpu_check.random_scene(1500, 96, 64) if scene_name == "random" else gpu_check.generated_scene(96, 72, stride=2)
    )
    rows = gpu_check.compare_rasterizers(fake_gsplat, "cpu", rasterization, scene)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    quantities = {r["quantity"] for r in rows}
    # Every quantity the issue names is compared, in both depth modes.
    for mode in ("RGB+D", "RGB+ED"):
        for q in (
            "image",
            "depth",
            "alpha",
            "radii",
            "means2d",
            "means2d_grad",
            "grad_means",
            "grad_quats",
            "grad_scales",
            "grad_opacities",
            "grad_colors",
        ):
            assert f"{mode} {q}" in quantities


def test_a_wrong_backend_is_caught(gpu_check):
    from modgs_ns.model.rasterize import rasterization

    rows = gpu_check.compare_rasterizers(shifted_gsplat, "cpu", rasterization, gpu_check.random_scene(1500, 96, 64))
    failed = {r["quantity"] for r in rows if not r["ok"]}
    assert "RGB+D image" in failed and "RGB+D means2d" in failed


def test_training_loop_reduces_both_losses(gpu_check):
    rows = gpu_check.training_loop("cpu", stage1_steps=60, stage2_steps=12, width=48, height=36)
    assert len(rows) == 2 and all(r["ok"] for r in rows), rows
    # Stage 1 must learn a real part of the known motion, not just move a little.
    assert rows[0]["after"] < 0.5 * rows[0]["before"]


def test_script_refuses_without_cuda(tmp_path):
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "no CUDA device" in r.stderr
