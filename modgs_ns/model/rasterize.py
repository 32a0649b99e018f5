"""One rasterization entry point for the plugin: gsplat on CUDA tensors, our PyTorch path on CPU.

The subset of gsplat's `rasterization()` signature that modgs uses; outputs are the same on both
paths: render [C,H,W,D], alpha [C,H,W,1] and an `info` dict that gsplat's DefaultStrategy reads
(means2d with its gradient in pixel units, radii [C,N] as gsplat 1.4.0 shapes them, width,
height, n_cameras). gsplat is imported only on the CUDA branch: importing its CUDA backend on a
machine with nvcc but no GPU starts a half-hour JIT build.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from modgs_ns.model import rasterize_cpp
from modgs_ns.model.rasterize_torch import rasterization_torch, rasterize_image

CPU_BACKENDS = ("auto", "cpp", "torch")


def cpu_compositor(backend: Optional[str] = None):
    """The per-pixel compositor for CPU tensors: the compiled kernel when it builds ("auto", the
    default), or the PyTorch one."""
    backend = backend or "auto"
    if backend not in CPU_BACKENDS:
        raise ValueError(f"unknown CPU rasterizer {backend!r}; choose one of {', '.join(CPU_BACKENDS)}")
    if backend == "torch":
        return rasterize_image
    if rasterize_cpp.available():
        return rasterize_cpp.rasterize_image_cpp
    if backend == "cpp":
        raise RuntimeError(f"compiled CPU rasterizer unavailable: {rasterize_cpp._error}")
    rasterize_cpp.warn_unavailable()
    return rasterize_image


def rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    packed: bool = False,
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    cpu_backend: Optional[str] = None,
):
    if means.is_cuda:
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            colors=colors,
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            near_plane=near_plane,
            far_plane=far_plane,
            sh_degree=sh_degree,
            backgrounds=backgrounds,
            render_mode=render_mode,
            packed=packed,
            absgrad=absgrad,
            rasterize_mode=rasterize_mode,
        )
    if packed or absgrad or rasterize_mode != "classic":
        raise ValueError("the CPU rasterizer supports packed=False, absgrad=False, rasterize_mode='classic' only")
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
        composite=cpu_compositor(cpu_backend),
    )
