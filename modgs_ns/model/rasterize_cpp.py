"""The compiled CPU compositor: a C++ kernel (csrc/composite_cpu.cpp) with an analytic backward.

Projection and the sorted tile lists are shared with the PyTorch path (rasterize_torch.py); only
the per-pixel compositing, where the time goes, is compiled. The extension is built with the system
C++ compiler through torch.utils.cpp_extension on first use (or by `python -m
modgs_ns.model.rasterize_cpp`, which scripts/setup.sh runs) and cached per source and torch version.
When it cannot be built, `available()` is False and callers fall back to the PyTorch path with a
one-line warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from modgs_ns.model.rasterize_torch import TILE

SOURCE = Path(__file__).parent / "csrc" / "composite_cpu.cpp"
_ext = None
_error: Optional[str] = None
_warned = False


def compiler_flags() -> list[str]:
    # AVX2/FMA only where torch itself found them on this CPU (the build is cached per machine).
    simd = ["-mavx2", "-mfma"] if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else []
    return ["-O3", "-fno-math-errno", "-fopenmp", *simd]


def build_directory() -> Path:
    """Per source, flags and torch version, so an edited kernel or a new torch never loads a stale build."""
    key = hashlib.sha1(
        SOURCE.read_bytes() + " ".join(compiler_flags()).encode() + torch.__version__.encode()
    ).hexdigest()[:12]
    root = (
        os.environ.get("MODGS_EXTENSIONS_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modgs_ns"
    )
    return Path(root) / f"composite_cpu_{key}"


def load(verbose: bool = False):
    """The compiled module, building it if needed; None (and the reason in `_error`) if impossible."""
    global _ext, _error
    if _ext is not None or _error is not None:
        return _ext
    try:
        # Importing cpp_extension on a machine without CUDA logs a warning about CUDA_HOME that
        # does not concern a CPU-only extension.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load as load_extension

        build_dir = build_directory()
        build_dir.mkdir(parents=True, exist_ok=True)
        _ext = load_extension(
            name="modgs_composite_cpu",
            sources=[str(SOURCE)],
            extra_cflags=compiler_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    except Exception as e:  # no compiler, no ninja, unwritable cache, ...
        _error = " ".join(str(e).split())[:300] or type(e).__name__
        _ext = None
    return _ext


def available() -> bool:
    return load() is not None


def warn_unavailable() -> None:
    global _warned
    if not _warned:
        _warned = True
        print(
            f"modgs: warning: compiled CPU rasterizer unavailable ({_error}); using the PyTorch path", file=sys.stderr
        )


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, offsets, ids, tiles_x, tiles_y, width, height):
        out, T, last = _ext.composite_forward(
            means2d, conics, opacities, features, offsets, ids, tiles_x, tiles_y, width, height
        )
        ctx.save_for_backward(means2d, conics, opacities, features, offsets, ids, T, last)
        ctx.dims = (tiles_x, tiles_y, width, height)
        ctx.mark_non_differentiable(last)
        return out, T, last

    @staticmethod
    def backward(ctx, g_out, g_T, _g_last):
        means2d, conics, opacities, features, offsets, ids, T, last = ctx.saved_tensors
        g_out = features.new_zeros(T.shape + (features.shape[1],)) if g_out is None else g_out
        g_T = torch.zeros_like(T) if g_T is None else g_T
        g_m, g_c, g_o, g_f = _ext.composite_backward(
            means2d, conics, opacities, features, offsets, ids, *ctx.dims, T, last, g_out, g_T
        )
        return g_m, g_c, g_o, g_f, None, None, None, None, None, None


def rasterize_image_cpp(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
):
    """Same contract as rasterize_torch.rasterize_image: (features [H,W,D], alpha [H,W,1])."""
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    with torch.no_grad():
        order = torch.argsort(depths.detach(), stable=True)
        offsets, gauss_id = _ext.tile_lists(
            means2d.detach().contiguous(), radii.int().contiguous(), order, tiles_x, tiles_y
        )
    dtype = features.dtype
    out, T, _ = _Composite.apply(
        means2d.to(dtype).contiguous(),
        conics.to(dtype).contiguous(),
        opacities.to(dtype).contiguous(),
        features.contiguous(),
        offsets,
        gauss_id,
        tiles_x,
        tiles_y,
        width,
        height,
    )
    return out, (1.0 - T)[..., None]


if __name__ == "__main__":
    # scripts/setup.sh builds the kernel here so the first training run does not wait for it.
    if load(verbose="-v" in sys.argv) is None:
        print(
            f"modgs: warning: compiled CPU rasterizer not built ({_error}); the PyTorch path will be used",
            file=sys.stderr,
        )
    else:
        print(f"modgs: compiled CPU rasterizer ready ({build_directory()})")
