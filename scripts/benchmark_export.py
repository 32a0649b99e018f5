#!/usr/bin/env python
"""Time to export N Gaussians at T times as 3DGS PLY files: modgs-export's vectorised writer vs
nerfstudio's own `ExportGaussianSplat.write_ply` (a per-element Python loop), same arrays, same run.

The Gaussians are random; the deformation is the real one at the `modgs-cpu` size (its time is
reported apart, as it is the same for both writers). Files are written to a temporary folder.

    .venv/bin/python scripts/benchmark_export.py [--gaussians 100000 --times 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussians", type=int, default=100_000)
    ap.add_argument("--times", type=int, default=30)
    args = ap.parse_args()
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    from modgs_ns.export.splat_ply import gaussians_at_time, write_splat_ply
    from modgs_ns.model.deformation import Deformation

    n = args.gaussians
    g = torch.Generator().manual_seed(0)
    deform = Deformation(feature_dims=64, proj_dims=64, hidden=(64, 64), gabor_hidden=64).eval()
    means = torch.randn(n, 3, generator=g)
    deform.set_normalization(means)
    model = SimpleNamespace(
        means=means,
        features_dc=torch.randn(n, 3, generator=g),
        features_rest=torch.zeros(n, 0, 3),
        opacities=torch.randn(n, 1, generator=g),
        scales=torch.randn(n, 3, generator=g) - 3,
        quats=torch.randn(n, 4, generator=g),
        config=SimpleNamespace(sh_degree=0),
    )
    # Every Gaussian alive at every time (no lifespans): the export's worst case.
    model.gaussians_at = lambda t: (
        torch.arange(n),
        deform.from_canonical(model.means, t),
        torch.sigmoid(model.opacities.reshape(-1)),
    )
    times = [k / max(args.times - 1, 1) for k in range(args.times)]
    t_deform = t_ours = t_ns = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, t in enumerate(times):
            t0 = time.perf_counter()
            arrays = gaussians_at_time(model, t, min_opacity=0.0)
            t1 = time.perf_counter()
            write_splat_ply(Path(tmp) / f"ours_{k}.ply", arrays)
            t2 = time.perf_counter()
            cols = OrderedDict()
            for i, c in enumerate("xyz"):
                cols[c] = arrays["means"][:, i]
            for c in ("nx", "ny", "nz"):
                cols[c] = np.zeros(n, np.float32)
            for i in range(3):
                cols[f"f_dc_{i}"] = arrays["f_dc"][:, i]
            cols["opacity"] = arrays["opacities"]
            for i in range(3):
                cols[f"scale_{i}"] = arrays["scales"][:, i]
            for i in range(4):
                cols[f"rot_{i}"] = arrays["quats"][:, i]
            ExportGaussianSplat.write_ply(str(Path(tmp) / f"ns_{k}.ply"), n, cols)
            t3 = time.perf_counter()
            t_deform, t_ours, t_ns = t_deform + t1 - t0, t_ours + t2 - t1, t_ns + t3 - t2
        size = (Path(tmp) / "ours_0.ply").stat().st_size
    print(f"{n} Gaussians x {args.times} times ({size / 1e6:.1f} MB per file):")
    print(f"  deformation to each time: {t_deform:.2f} s")
    print(f"  modgs-export writer:      {t_ours:.2f} s  ({t_ours / args.times * 1000:.0f} ms per file)")
    print(f"  nerfstudio write_ply:     {t_ns:.2f} s  ({t_ns / args.times * 1000:.0f} ms per file)")
    print(f"  writer speed-up: {t_ns / t_ours:.0f}x; whole export {t_deform + t_ours:.1f} s vs {t_deform + t_ns:.1f} s")


if __name__ == "__main__":
    main()
