#!/usr/bin/env python
"""CPU rasterizer benchmark: dense reference vs the tiled PyTorch path vs the compiled kernel.

Each (backend, scene) runs in its own subprocess so its peak memory (RSS above the process's
baseline after setup) is its own. Scenes: random Gaussians in the view frustum, 2 to 6 units
away, each 1 to 16 px across (log-uniform), random orientations, opacities 0.1-1, RGB+D output,
loss = sum(render * random weights) + sum(alpha). Medians over --repeats after one warm-up.

    .venv/bin/python scripts/benchmark_rasterizer.py            # the issue's table
    .venv/bin/python scripts/benchmark_rasterizer.py --quick    # small sizes only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")


def make_scene(n: int, width: int, height: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    f = float(width)
    z = torch.rand(n, generator=g) * 4 + 2
    x = (torch.rand(n, generator=g) - 0.5) * width / f * z * 1.1
    y = (torch.rand(n, generator=g) - 0.5) * height / f * z * 1.1
    means = torch.stack([x, y, z], -1)
    px = torch.exp(torch.rand(n, 1, generator=g) * torch.log(torch.tensor(16.0)))  # 1..16 px
    scales = px * z[:, None] / f / 3.0 * (0.5 + torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = torch.rand(n, generator=g) * 0.9 + 0.1
    colors = torch.rand(n, 3, generator=g)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])[None]
    return means, quats, scales, opac, colors, torch.eye(4)[None], K


def dense_rasterize(means, quats, scales, opac, colors, viewmat, K, width, height):
    """Every pixel composites every Gaussian (depth-sorted), chunked over pixels: the baseline a
    naive differentiable implementation gives."""
    import torch

    from modgs_ns.model.rasterize_torch import project, quat_scale_to_covar

    m2d, con, depth, radii = project(
        means, quat_scale_to_covar(quats, scales), viewmat[0], K[0], width, height, 0.01, 1e10
    )
    keep = radii > 0
    order = torch.argsort(depth[keep])
    m2d, con, o = m2d[keep][order], con[keep][order], opac[keep][order]
    feat = torch.cat([colors[keep][order], depth[keep][order, None]], -1)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    outs, alphas = [], []
    for p in pix.split(4096):
        d = m2d[None] - p[:, None]
        sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
        a = torch.clamp(o * torch.exp(-sigma.clamp(0, 30)), max=0.999)
        a = torch.where(a < 1 / 255, torch.zeros_like(a), a)
        T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
        outs.append((a * T) @ feat)
        alphas.append(1 - T[:, -1] * (1 - a[:, -1]))
    return torch.cat(outs).reshape(height, width, -1)[None], torch.cat(alphas).reshape(1, height, width, 1)


def run_one(backend: str, n: int, width: int, height: int, repeats: int) -> dict:
    import torch

    from modgs_ns.model.rasterize import rasterization

    scene = make_scene(n, width, height)
    w = torch.randn(1, height, width, 4, generator=torch.Generator().manual_seed(1))
    params = [t.clone().requires_grad_(True) for t in scene[:5]]

    def forward():
        if backend == "dense":
            return dense_rasterize(*params, scene[5], scene[6], width, height)
        render, alpha, _ = rasterization(
            *params, scene[5], scene[6], width, height, render_mode="RGB+D", cpu_backend=backend
        )
        return render, alpha

    def fwd_bwd():
        render, alpha = forward()
        ((render * w).sum() + alpha.sum()).backward()
        for p in params:
            p.grad = None

    with torch.no_grad():
        forward()  # warm-up (and the kernel build/load for "cpp")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_fwd, t_all = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            forward()
        t_fwd.append(time.perf_counter() - t0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        fwd_bwd()
        t_all.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "backend": backend,
        "n": n,
        "width": width,
        "height": height,
        "fwd_s": statistics.median(t_fwd),
        "fwd_bwd_s": statistics.median(t_all),
        "peak_mb": max(0.0, (peak - base) / 1024.0),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 10k Gaussians at 256x256 (plus the dense check)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # backend,n,width,height: run in this process
    args = ap.parse_args()
    if args.one:
        b, n, w, h = args.one.split(",")
        print(json.dumps(run_one(b, int(n), int(w), int(h), args.repeats)))
        return

    sizes = [(256, 256), (480, 270)]
    counts = [10_000] if args.quick else [10_000, 50_000, 200_000]
    jobs = [("dense", 2_000, 128, 128), ("torch", 2_000, 128, 128), ("cpp", 2_000, 128, 128)]
    # The dense reference keeps a pixels x Gaussians graph for autograd: at 10k Gaussians and
    # 256x256 that is > 24 GB, so it runs at the small size only.
    for w, h in sizes if not args.quick else sizes[:1]:
        for n in counts:
            jobs += [("torch", n, w, h), ("cpp", n, w, h)]
    rows = []
    print(f"{'backend':7} {'gaussians':>9} {'size':>9} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>8}", flush=True)
    for b, n, w, h in jobs:
        reps = args.repeats
        out = subprocess.run(
            [sys.executable, __file__, "--one", f"{b},{n},{w},{h}", "--repeats", str(reps)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            why = "killed (out of memory?)" if out.returncode < 0 else (out.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{b:7} {n:9d} {w}x{h}: failed: {why}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{b:7} {n:9d} {w:>4}x{h:<4} {r['fwd_s']:8.3f} {r['fwd_bwd_s']:10.3f} {r['peak_mb']:8.0f}", flush=True)
    print("\nspeed-up of the compiled kernel over the PyTorch path (fwd / fwd+bwd), and over dense:")
    by = {(r["backend"], r["n"], r["width"], r["height"]): r for r in rows}
    for (b, n, w, h), r in by.items():
        if b != "cpp":
            continue
        t = by.get(("torch", n, w, h))
        d = by.get(("dense", n, w, h))
        line = f"  {n:>7} Gaussians {w}x{h}:"
        if t:
            line += f" {t['fwd_s'] / r['fwd_s']:5.1f}x / {t['fwd_bwd_s'] / r['fwd_bwd_s']:5.1f}x vs torch"
        if d:
            line += f"; {d['fwd_bwd_s'] / r['fwd_bwd_s']:7.0f}x vs dense"
        print(line)
    for (b, n, w, h), d in by.items():
        if b == "dense" and ("cpp", n, w, h) not in by:
            print(f"  dense at {n} Gaussians {w}x{h}: fwd {d['fwd_s']:.2f} s, fwd+bwd {d['fwd_bwd_s']:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
