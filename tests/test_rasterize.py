"""The CPU rasterizers (PyTorch path and compiled kernel) against independent references: gsplat's
torch projection formulas, a plain per-pixel / per-Gaussian compositing loop, and finite differences."""

import functools
import math
import shutil

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from modgs_ns.model import rasterize as rasterize_module
from modgs_ns.model import rasterize_cpp
from modgs_ns.model.rasterize_torch import TILE, eval_sh, quat_scale_to_covar, tile_intersections

BACKENDS = ["torch", "cpp"]


def _require_compiled() -> None:
    """The compiled rasterizer must build wherever a C++ compiler exists (first use compiles it,
    ~40 s); without a compiler its tests are skipped."""
    if not rasterize_cpp.available():
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail(f"compiled rasterizer did not build: {rasterize_cpp._error}")
        pytest.skip("no C++ compiler on this machine")


@pytest.fixture(params=BACKENDS)
def rasterization(request):
    """rasterization() bound to one CPU backend."""
    if request.param == "cpp":
        _require_compiled()
    return functools.partial(rasterize_module.rasterization, cpu_backend=request.param)


def make_scene(n=24, seed=0, dtype=torch.float64, width=40, height=32):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack(
        [
            torch.rand(n, generator=g) * 2 - 1,
            torch.rand(n, generator=g) * 1.6 - 0.8,
            torch.rand(n, generator=g) * 3 + 2,
        ],
        -1,
    ).to(dtype)
    quats = torch.randn(n, 4, generator=g).to(dtype)
    scales = (torch.rand(n, 3, generator=g) * 0.15 + 0.03).to(dtype)
    opac = (torch.rand(n, generator=g) * 0.8 + 0.15).to(dtype)
    colors = torch.rand(n, 3, generator=g).to(dtype)
    viewmat = torch.eye(4, dtype=dtype)[None]  # OpenCV camera at the origin looking along +z
    f = 30.0
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)[None]
    return means, quats, scales, opac, colors, viewmat, K, width, height


def dense_reference(means, quats, scales, opac, colors, viewmat, K, width, height, bg=None):
    """Plain loops: every pixel composites every depth-sorted Gaussian whose tile box covers it."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False, triu=False)
    radii, m2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat, K, width, height)
    radii, m2d, depths, conics = radii[0], m2d[0], depths[0], conics[0]
    order = torch.argsort(depths).tolist()
    img = torch.zeros(height, width, 3, dtype=means.dtype)
    dep = torch.zeros(height, width, dtype=means.dtype)
    alp = torch.zeros(height, width, dtype=means.dtype)
    for y in range(height):
        for x in range(width):
            T = 1.0
            c = torch.zeros(3, dtype=means.dtype)
            d = 0.0
            for i in order:
                r = int(radii[i])
                if r <= 0:
                    continue
                # gsplat's tile culling: the tile of (x, y) must lie in the Gaussian's tile box.
                tx0 = max(0, math.floor((m2d[i, 0] - r) / TILE))
                tx1 = min(math.ceil(width / TILE), math.ceil((m2d[i, 0] + r) / TILE))
                ty0 = max(0, math.floor((m2d[i, 1] - r) / TILE))
                ty1 = min(math.ceil(height / TILE), math.ceil((m2d[i, 1] + r) / TILE))
                if not (tx0 <= x // TILE < tx1 and ty0 <= y // TILE < ty1):
                    continue
                dx, dy = m2d[i, 0] - (x + 0.5), m2d[i, 1] - (y + 0.5)
                a, b, cc = conics[i]
                sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                if sigma < 0:
                    continue
                alpha = min(0.999, float(opac[i] * torch.exp(-sigma)))
                if alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                c = c + colors[i] * alpha * T
                d = d + float(depths[i]) * alpha * T
                T = T * (1 - alpha)
            img[y, x] = c + (T * bg if bg is not None else 0)
            dep[y, x] = d
            alp[y, x] = 1 - T
    return img, dep, alp, radii, m2d


def test_covariance_matches_gsplat_formula():  # shared by both backends
    means, quats, scales, *_ = make_scene()
    ref, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False, triu=False)
    torch.testing.assert_close(quat_scale_to_covar(quats, scales), ref, rtol=1e-12, atol=1e-12)


def test_image_depth_alpha_match_per_pixel_loop(rasterization):
    scene = make_scene()
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    render, alpha, info = rasterization(*scene, render_mode="RGB+D", backgrounds=bg[None])
    img, dep, alp, radii, m2d = dense_reference(*scene, bg=bg)
    assert alp.max() > 0.5  # the scene is not empty
    torch.testing.assert_close(render[0, ..., :3], img, rtol=0, atol=1e-9)
    torch.testing.assert_close(render[0, ..., 3], dep, rtol=0, atol=1e-9)
    torch.testing.assert_close(alpha[0, ..., 0], alp, rtol=0, atol=1e-9)
    assert torch.equal(info["radii"][0], radii)
    torch.testing.assert_close(info["means2d"][0], m2d, rtol=1e-12, atol=1e-10)


def test_expected_depth_and_saturation(rasterization):
    # A single opaque, large Gaussian: expected depth equals its depth wherever alpha > 0.
    means = torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    scales = torch.full((1, 3), 0.5, dtype=torch.float64)
    opac = torch.tensor([0.99], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64)
    K = torch.tensor([[[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]]], dtype=torch.float64)
    render, alpha, _ = rasterization(
        means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64)[None], K, 32, 32, render_mode="RGB+ED"
    )
    m = alpha[0, ..., 0] > 1e-3
    torch.testing.assert_close(render[0, ..., 3][m], torch.full_like(render[0, ..., 3][m], 4.0))
    # Centre pixel: alpha = 0.99 * exp(-sigma) with sigma from the analytic 2D covariance.
    var = (20.0 * 0.5 / 4.0) ** 2 + 0.3
    sigma = 0.5 * (0.5**2 + 0.5**2) / var  # pixel centre (16.5, 16.5) vs mean (16, 16)
    assert abs(float(alpha[0, 16, 16, 0]) - 0.99 * math.exp(-sigma)) < 1e-9


def test_sh_degree_zero_and_view_dependence():
    dirs = torch.randn(5, 3, dtype=torch.float64)
    coeffs = torch.randn(5, 16, 3, dtype=torch.float64)
    torch.testing.assert_close(eval_sh(0, dirs, coeffs), 0.28209479177387814 * coeffs[:, 0])
    # Degree 1 against its closed form.
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    c1 = 0.4886025119029199
    ref = 0.28209479177387814 * coeffs[:, 0] + c1 * (
        -d[:, 1:2] * coeffs[:, 1] + d[:, 2:3] * coeffs[:, 2] - d[:, 0:1] * coeffs[:, 3]
    )
    torch.testing.assert_close(eval_sh(1, dirs, coeffs), ref)


def test_gradients_match_finite_differences(rasterization):
    means, quats, scales, opac, colors, viewmat, K, W, H = make_scene(n=10, seed=3, width=24, height=20)
    loss_w = torch.randn(1, H, W, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def f(m, q, s, o, c):
        render, alpha, _ = rasterization(m, q, s, o, c, viewmat, K, W, H, render_mode="RGB+D")
        return (render * loss_w).sum() + alpha.sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_batched_cameras_equal_single_renders(rasterization):
    means, quats, scales, opac, colors, viewmat, K, W, H = make_scene(dtype=torch.float32)
    v2 = viewmat.clone()
    v2[0, 0, 3] = 0.3
    both, alpha, info = rasterization(
        means, quats, scales, opac, colors, torch.cat([viewmat, v2]), K.repeat(2, 1, 1), W, H
    )
    one, _, _ = rasterization(means, quats, scales, opac, colors, v2, K, W, H)
    torch.testing.assert_close(both[1], one[0])
    assert info["radii"].shape == (2, len(means)) and info["n_cameras"] == 2


def test_default_strategy_densifies_on_cpu(rasterization):
    from gsplat.strategy import DefaultStrategy

    means, quats, scales, opac, colors, viewmat, K, W, H = make_scene(n=30, dtype=torch.float32)
    params = torch.nn.ParameterDict(
        {"means": means, "quats": quats, "scales": torch.log(scales), "opacities": torch.logit(opac), "colors": colors}
    )
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=1,
        refine_every=2,
        grow_grad2d=1e-9,
        reset_every=1000,
        pause_refine_after_reset=0,
        verbose=False,
    )
    state = strategy.initialize_state()
    target = torch.rand(1, H, W, 3)
    n0 = len(params["means"])
    for step in range(3):
        render, alpha, info = rasterization(
            params["means"],
            params["quats"],
            torch.exp(params["scales"]),
            torch.sigmoid(params["opacities"]),
            params["colors"],
            viewmat,
            K,
            W,
            H,
        )
        strategy.step_pre_backward(params, optimizers, state, step, info)
        ((render - target) ** 2).mean().backward()
        assert info["means2d"].grad is not None and info["means2d"].grad.abs().sum() > 0
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for o in optimizers.values():
            o.step()
            o.zero_grad()
    assert len(params["means"]) > n0
    assert all(len(p) == len(params["means"]) for p in params.values())


def test_cuda_tensors_are_never_required_on_cpu(rasterization):
    scene = make_scene(dtype=torch.float32)
    with pytest.raises(ValueError):
        rasterization(*scene, absgrad=True)


def test_float32_matches_float64(rasterization):
    # The CPU path evaluates sigma as a quadratic form in tile-local coordinates; float32 must hold up.
    s64 = make_scene(n=300, width=160, height=120)
    s32 = [x.float() if torch.is_tensor(x) else x for x in s64]
    r64, a64, _ = rasterization(*s64, render_mode="RGB+D")
    r32, a32, _ = rasterization(*s32, render_mode="RGB+D")
    assert (r64[..., :3] - r32[..., :3].double()).abs().max() < 1e-4
    assert (a64 - a32.double()).abs().max() < 1e-4


def _random_scene(n, width, height, seed=0, dtype=torch.float32):
    """Gaussians 1-16 px across filling the view, as in scripts/benchmark_rasterizer.py."""
    g = torch.Generator().manual_seed(seed)
    f = float(width)
    z = torch.rand(n, generator=g) * 4 + 2
    means = torch.stack(
        [(torch.rand(n, generator=g) - 0.5) * width / f * z, (torch.rand(n, generator=g) - 0.5) * height / f * z, z], -1
    )
    px = torch.exp(torch.rand(n, 1, generator=g) * math.log(16.0))
    scales = px * z[:, None] / f / 3.0 * (0.5 + torch.rand(n, 3, generator=g))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])[None]
    scene = (
        means,
        torch.randn(n, 4, generator=g),
        scales,
        torch.rand(n, generator=g) * 0.9 + 0.1,
        torch.rand(n, 3, generator=g),
        torch.eye(4)[None],
        K,
    )
    return [t.to(dtype) for t in scene] + [width, height]


@pytest.fixture
def compiled():
    _require_compiled()
    return rasterize_cpp._ext


def test_compiled_tile_lists_equal_pytorch_sort(compiled):
    means, quats, scales, opac, colors, viewmat, K, W, H = _random_scene(3000, 200, 120)
    from modgs_ns.model.rasterize_torch import project

    m2d, _, depths, radii = project(means, quat_scale_to_covar(quats, scales), viewmat[0], K[0], W, H, 0.01, 1e10)
    tx, ty = math.ceil(W / TILE), math.ceil(H / TILE)
    _, gauss_id, counts = tile_intersections(m2d, radii, depths, tx, ty)
    offsets, ids = compiled.tile_lists(m2d.contiguous(), radii.int(), torch.argsort(depths, stable=True), tx, ty)
    assert len(ids) > 3000
    assert torch.equal(ids, gauss_id.long())
    assert torch.equal(offsets[1:] - offsets[:-1], counts)


def test_compiled_matches_pytorch_on_a_dense_scene_float32(compiled):
    # Thousands of overlapping Gaussians, saturating pixels: forward and every gradient agree.
    scene = _random_scene(4000, 160, 96, seed=2)
    w = torch.randn(1, 96, 160, 4, generator=torch.Generator().manual_seed(0))
    out = {}
    for backend in BACKENDS:
        params = [t.clone().requires_grad_(True) for t in scene[:5]]
        render, alpha, info = rasterize_module.rasterization(
            *params, *scene[5:], render_mode="RGB+D", cpu_backend=backend
        )
        ((render * w).sum() + alpha.sum()).backward()
        out[backend] = (render.detach(), alpha.detach(), [p.grad for p in params])
    (r0, a0, g0), (r1, a1, g1) = out["torch"], out["cpp"]
    assert a0.mean() > 0.5
    assert (r0 - r1).abs().max() < 2e-4 and (a0 - a1).abs().max() < 2e-4
    for name, x, y in zip(["means", "quats", "scales", "opacities", "colors"], g0, g1):
        rel = (x - y).norm() / x.norm()
        assert rel < 1e-3, (name, float(rel))


def test_compiled_backward_is_deterministic(compiled):
    scene = _random_scene(2000, 128, 128, seed=5)
    grads = []
    for _ in range(2):
        params = [t.clone().requires_grad_(True) for t in scene[:5]]
        render, alpha, _ = rasterize_module.rasterization(*params, *scene[5:], cpu_backend="cpp")
        (render.square().sum() + alpha.sum()).backward()
        grads.append([p.grad for p in params])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
    # A fresh process whose compiler does not exist: "auto" renders through PyTorch and says so once.
    import os
    import subprocess
    import sys

    code = (
        "import torch, sys; sys.path.insert(0, 'tests');"
        "from test_rasterize import make_scene;"
        "from modgs_ns.model.rasterize import rasterization;"
        "s = make_scene(dtype=torch.float32);"
        "r1, a1, _ = rasterization(*s); r2, a2, _ = rasterization(*s, cpu_backend='torch');"
        "assert torch.equal(r1, r2) and a1.max() > 0.5;"
        "rasterization(*s); print('ok')"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), MODGS_EXTENSIONS_DIR=str(tmp_path / "ext"))
    env.pop("MODGS_CPU_RASTERIZER", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
    lines = [ln for ln in out.stderr.splitlines() if "modgs:" in ln]
    assert (
        len(lines) == 1 and "compiled CPU rasterizer unavailable" in lines[0] and "using the PyTorch path" in lines[0]
    ), out.stderr[-2000:]
