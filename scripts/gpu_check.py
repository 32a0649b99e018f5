#!/usr/bin/env python
"""GPU parity and timing check: gsplat's CUDA rasterizer against our CPU path, and the deformation
model's two training stages on CUDA. Needs torch, numpy and gsplat only (no nerfstudio), so it runs
on the device machine as it is; `scripts/gpu_check.sh` prepares gsplat there.

What it checks (each row of the printed table):
- parity: on identical scenes (random Gaussians in the frustum, and Gaussians made from the
  generated scene's ray-cast depth), `rasterization()` on CUDA tensors (gsplat) against the same
  call on CPU tensors (our compiled or PyTorch compositor): image, depth (accumulated and
  expected), alpha, means2d, radii (what the densification strategy reads) and the gradient of every
  parameter through a fixed random loss;
- training: a stage-1 loop of the deformation on a known rigid motion, then stage-2 steps that
  render the deformed Gaussians and back-propagate L1 + ordinal depth into both, all on CUDA;
- timing: forward+backward at 50k and 200k Gaussians, 480x270 and 1920x1080.

Exits 1 when a parity error is beyond float32 tolerance or a training loop does not reduce its loss.

    python scripts/gpu_check.py                 # on a CUDA machine
    python scripts/gpu_check.py --quick         # smaller scenes, no 1080p timing
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modgs_ns.model.deformation import Deformation  # noqa: E402
from modgs_ns.model.losses import flow3d_loss, ordinal_depth_loss  # noqa: E402
from modgs_ns.model.rasterize import rasterization  # noqa: E402

PARAMS = ("means", "quats", "scales", "opacities", "colors")


@dataclass
class Tolerance:
    """float32 tolerances. Images: a pixel may differ where one path keeps a Gaussian whose alpha
    is within rounding of the 1/255 cut and the other drops it, so a small fraction is allowed out."""

    atol: float = 2e-4
    outlier_fraction: float = 2e-3
    grad_rel: float = 1e-2
    radii_fraction: float = 2e-3


# ----------------------------------------------------------------------------- scenes
def random_scene(n: int, width: int, height: int, seed: int = 0) -> dict:
    """n Gaussians in the frustum of an identity camera looking along +z (OpenCV)."""
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * width
    z = 2.0 + 6.0 * torch.rand(n, generator=g)
    x = (torch.rand(n, generator=g) - 0.5) * width / f * z
    y = (torch.rand(n, generator=g) - 0.5) * height / f * z
    return {
        "means": torch.stack([x, y, z], -1),
        "quats": torch.randn(n, 4, generator=g),
        "scales": (0.004 + 0.03 * torch.rand(n, 3, generator=g)) * z[:, None] / 4,
        "opacities": 0.05 + 0.9 * torch.rand(n, generator=g),
        "colors": torch.rand(n, 3, generator=g),
        "viewmats": torch.eye(4)[None],
        "Ks": torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]]),
        "width": width,
        "height": height,
    }


def generated_scene(width: int, height: int, stride: int = 2) -> dict:
    """Gaussians on the generated scene's surfaces: every `stride`-th pixel of a ray-cast frame of
    the training camera, unprojected with its depth, coloured, sized to cover its pixel."""
    from modgs_ns.synth import scene as S

    K = S.intrinsics(width, height)
    c2w = S.orbit_pose(0.0)
    rgb, depth, _ = S.render(S.scene_at(0.3, S.SceneParams()), c2w, K, width, height, supersample=1)
    v, u = np.mgrid[0:height:stride, 0:width:stride]
    z = depth[v, u]
    ok = np.isfinite(z)
    u, v, z = u[ok], v[ok], z[ok]
    pts = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], -1)  # OpenCV camera
    n = len(z)
    s = (stride * z / K[0, 0] * 0.6).astype(np.float32)
    return {
        "means": torch.from_numpy(pts.astype(np.float32)),
        "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "scales": torch.from_numpy(np.stack([s, s, 0.3 * s], -1)),
        "opacities": torch.full((n,), 0.9),
        "colors": torch.from_numpy(rgb[v, u].astype(np.float32)),
        "viewmats": torch.eye(4)[None],
        "Ks": torch.from_numpy(K.astype(np.float32))[None],
        "width": width,
        "height": height,
    }


# ----------------------------------------------------------------------------- parity
def _render(fn: Callable, scene: dict, device: str, render_mode: str, weights: dict) -> dict:
    """One forward + backward through a fixed random linear loss; outputs and gradients on the CPU."""
    params = {k: scene[k].detach().to(device).float().requires_grad_(True) for k in PARAMS}
    render, alpha, info = fn(
        means=params["means"],
        quats=params["quats"],
        scales=params["scales"],
        opacities=params["opacities"],
        colors=params["colors"],
        viewmats=scene["viewmats"].to(device),
        Ks=scene["Ks"].to(device),
        width=scene["width"],
        height=scene["height"],
        render_mode=render_mode,
    )
    info["means2d"].retain_grad()
    loss = (render * weights["render"].to(device)[..., : render.shape[-1]]).sum() + (
        alpha * weights["alpha"].to(device)
    ).sum()
    loss.backward()
    out = {
        "image": render[..., :3],
        "alpha": alpha,
        "means2d": info["means2d"],
        "radii": info["radii"],
        "means2d_grad": info["means2d"].grad,
    }
    if render.shape[-1] > 3:
        out["depth"] = render[..., 3:4]
    out.update({f"grad_{k}": p.grad for k, p in params.items()})
    return {k: v.detach().cpu() for k, v in out.items()}


def compare_rasterizers(
    fn_test: Callable,
    device_test: str,
    fn_ref: Callable,
    scene: dict,
    tol: Tolerance = Tolerance(),
    render_modes=("RGB+D", "RGB+ED"),
) -> list[dict]:
    """Rows {quantity, max_err, measure, ok} comparing `fn_test` on `device_test` with `fn_ref` on the CPU.

    Gaussians that either path culls (radius 0) have no gradient on that path; means2d and its
    gradient are compared only where both render the Gaussian."""
    g = torch.Generator().manual_seed(1)
    H, W = scene["height"], scene["width"]
    weights = {"render": torch.randn(1, H, W, 4, generator=g), "alpha": torch.randn(1, H, W, 1, generator=g)}
    rows = []
    for mode in render_modes:
        a = _render(fn_test, scene, device_test, mode, weights)
        b = _render(fn_ref, scene, "cpu", mode, weights)
        both = (a["radii"] > 0) & (b["radii"] > 0)
        for key in ("image", "alpha", "depth"):
            if key not in a:
                continue
            err = (a[key] - b[key]).abs()
            scale = 1.0 if key != "depth" else float(b[key].abs().max().clamp_min(1.0))
            frac = float((err > tol.atol * scale).float().mean())
            rows.append(
                {
                    "quantity": f"{mode} {key}",
                    "max_err": float(err.max()),
                    "measure": f"{frac:.1e} of px > {tol.atol * scale:.1e}",
                    "ok": frac <= tol.outlier_fraction,
                }
            )
        radii_frac = float((a["radii"] != b["radii"]).float().mean())
        rows.append(
            {
                "quantity": f"{mode} radii",
                "max_err": float((a["radii"] - b["radii"]).abs().max()),
                "measure": f"{radii_frac:.1e} differ",
                "ok": radii_frac <= tol.radii_fraction,
            }
        )
        err = (a["means2d"] - b["means2d"])[both].abs()
        rows.append(
            {
                "quantity": f"{mode} means2d",
                "max_err": float(err.max()) if err.numel() else 0.0,
                "measure": "px",
                "ok": err.numel() == 0 or float(err.max()) < 1e-2,
            }
        )
        for key in ("means2d_grad", *[f"grad_{k}" for k in PARAMS]):
            ga, gb = a[key], b[key]
            if key == "means2d_grad":
                ga, gb = ga[both], gb[both]
            rel = float((ga - gb).norm() / gb.norm().clamp_min(1e-12))
            rows.append(
                {
                    "quantity": f"{mode} {key}",
                    "max_err": float((ga - gb).abs().max()),
                    "measure": f"rel {rel:.1e}",
                    "ok": rel <= tol.grad_rel,
                }
            )
    return rows


# ----------------------------------------------------------------------------- training loop
def training_loop(
    device: str,
    render_fn: Callable = rasterization,
    stage1_steps: int = 300,
    stage2_steps: int = 30,
    width: int = 96,
    height: int = 72,
) -> list[dict]:
    """Stage 1 on a known motion (a block of points in front translating 0.4 units over t in [0,1]
    while the rest stays), then stage-2 steps that render the deformed Gaussians against a target image
    rendered with the true motion. Rows: the losses before and after each stage."""
    torch.manual_seed(0)
    n = 4000
    pts = torch.rand(n, 3, device=device) * 2 - 1
    pts[:, 2] += 5.0
    moving = pts[:, 0] < -0.3
    pts[moving, 2] -= 1.5  # the moving block in front of the rest, as objects stand before a wall

    def truth(x, t):
        return x + moving[:, None].float() * torch.tensor([0.4 * t, 0.0, 0.0], device=device)

    deform = Deformation(feature_dims=32, proj_dims=32, hidden=(64, 64), gabor_hidden=32).to(device)
    deform.set_normalization(pts)
    opt = torch.optim.Adam(deform.parameters(), lr=2e-3)
    times = torch.linspace(0, 1, 9).tolist()

    def stage1_error():
        with torch.no_grad():
            return float(
                np.mean(
                    [
                        flow3d_loss(
                            deform.from_canonical(deform.to_canonical(truth(pts, a), a), b), truth(pts, b), deform.scale
                        ).item()
                        for a in times
                        for b in times
                        if a != b
                    ]
                )
            )

    rows = [{"quantity": "stage 1 pair MSE (normalized)", "before": stage1_error()}]
    rng = np.random.default_rng(0)
    for _ in range(stage1_steps):
        a, b = (float(v) for v in rng.choice(times, 2, replace=False))
        x, y = truth(pts, a), truth(pts, b)
        loss = flow3d_loss(deform.from_canonical(deform.to_canonical(x, a), b), y, deform.scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows[-1]["after"] = stage1_error()

    # Stage 2: canonical Gaussians at the t = 0 positions (canonical space of the trained deformation).
    f = 1.2 * width
    K = torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]], device=device)
    view = torch.eye(4, device=device)[None]
    colors = torch.rand(n, 3, device=device)
    scales = torch.full((n, 3), 0.03, device=device)
    quats = torch.tensor([[1.0, 0, 0, 0]], device=device).repeat(n, 1)
    opac = torch.full((n,), 0.8, device=device)

    def draw(means, mode="RGB+D"):
        return render_fn(
            means=means,
            quats=quats,
            scales=scales,
            opacities=opac,
            colors=colors,
            viewmats=view,
            Ks=K,
            width=width,
            height=height,
            render_mode=mode,
        )

    with torch.no_grad():
        targets = {t: draw(truth(pts, t))[0] for t in times}
        canon = deform.to_canonical(truth(pts, 0.0), 0.0)
    means = torch.nn.Parameter(canon.clone())
    opt2 = torch.optim.Adam([{"params": [means], "lr": 1e-3}, {"params": deform.parameters(), "lr": 1e-4}])

    def stage2_loss(t):
        render, alpha, _ = draw(deform.from_canonical(means, t))
        tgt = targets[t]
        valid = tgt[0, ..., 3] > 0
        return (render[..., :3] - tgt[..., :3]).abs().mean() + 0.1 * ordinal_depth_loss(
            render[0, ..., 3], tgt[0, ..., 3], valid, 20000
        )

    with torch.no_grad():
        before = float(np.mean([stage2_loss(t).item() for t in times]))
    for step in range(stage2_steps):
        loss = stage2_loss(times[step % len(times)])
        opt2.zero_grad()
        loss.backward()
        opt2.step()
    with torch.no_grad():
        after = float(np.mean([stage2_loss(t).item() for t in times]))
    rows.append({"quantity": "stage 2 L1 + 0.1 ordinal", "before": before, "after": after})
    for r in rows:
        r["ok"] = math.isfinite(r["after"]) and r["after"] < r["before"]
    return rows


# ----------------------------------------------------------------------------- timing
def time_forward_backward(fn: Callable, n: int, width: int, height: int, device: str, repeats: int = 5) -> float:
    """Median seconds of one forward + backward (RGB+D, sum of the render as the loss)."""
    scene = random_scene(n, width, height, seed=3)
    params = {k: scene[k].to(device).requires_grad_(True) for k in PARAMS}
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        render, alpha, info = fn(
            **params,
            viewmats=scene["viewmats"].to(device),
            Ks=scene["Ks"].to(device),
            width=width,
            height=height,
            render_mode="RGB+D",
        )
        (render.sum() + alpha.sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first call includes kernel loading
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ----------------------------------------------------------------------------- main
def print_parity(title: str, rows: list[dict]) -> None:
    print(f"\n### parity: {title}\n\n| quantity | max abs error | measure | ok |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['quantity']} | {r['max_err']:.2e} | {r['measure']} | {'yes' if r['ok'] else '**NO**'} |")


def run_all(
    device: str,
    test_fn: Callable = rasterization,
    ref_fn: Callable = rasterization,
    quick: bool = False,
    timing_sizes: Optional[list] = None,
) -> bool:
    ok = True
    scenes = {
        "random 2k Gaussians, 160x120": random_scene(2000, 160, 120),
        "random 20k Gaussians, 480x270": random_scene(20000 if not quick else 5000, 480, 270, seed=1),
        "generated scene, 240x180": generated_scene(240, 180),
    }
    for title, scene in scenes.items():
        rows = compare_rasterizers(test_fn, device, ref_fn, scene)
        print_parity(title, rows)
        ok &= all(r["ok"] for r in rows)
    rows = training_loop(device, test_fn, stage1_steps=100 if quick else 300)
    print("\n### training on", device, "\n\n| loop | before | after | ok |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['quantity']} | {r['before']:.3e} | {r['after']:.3e} | {'yes' if r['ok'] else '**NO**'} |")
    ok &= all(r["ok"] for r in rows)
    if timing_sizes is None:
        timing_sizes = [(50000, 480, 270), (200000, 480, 270)] + (
            [] if quick else [(50000, 1920, 1080), (200000, 1920, 1080)]
        )
    if timing_sizes:
        print(f"\n### forward + backward on {device} (median of 5)\n\n| Gaussians | image | seconds |\n|---|---|---|")
        for n, w, h in timing_sizes:
            print(f"| {n} | {w}x{h} | {time_forward_backward(test_fn, n, w, h, device):.4f} |")
    print(
        f"\ngpu_check: {'PASS' if ok else 'FAIL: a parity error beyond float32 tolerance or a loss that did not fall'}"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller scenes and no 1080p timing")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_check: error: no CUDA device (this check compares gsplat on a GPU with the CPU path)", file=sys.stderr
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # parity in float32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    return 0 if run_all("cuda", quick=args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
