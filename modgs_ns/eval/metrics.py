"""Image metrics for held-out views: PSNR, SSIM and LPIPS, full-image and masked.

Images are float tensors [H,W,3] in [0,1]; masks are bool [H,W]. Masked PSNR and SSIM average
only over the mask's pixels (SSIM: the per-pixel SSIM map, 11x11 Gaussian window, sigma 1.5, as in
3DGS). LPIPS has no per-pixel map, so its masked variant compares the images with everything
outside the mask set to black, as MoDGS's own protocol does. `modgs_protocol` reproduces MoDGS's
evaluation (method reference §7.3): both images multiplied by the method's own alpha > 0.5, then
full-image metrics.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> float:
    se = (pred - gt).square()
    mse = se.mean() if mask is None else se[mask].mean()
    if mask is not None and not bool(mask.any()):
        return float("nan")
    return float("inf") if float(mse) == 0 else float(-10.0 * torch.log10(mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> Tensor:
    x = torch.arange(size, dtype=dtype) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)


def ssim_map(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-pixel SSIM [H,W] (mean over channels), zero-padded 11x11 Gaussian window as in 3DGS."""
    w = _gaussian_window(dtype=pred.dtype).to(pred.device)
    a, b = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
    mu_a, mu_b = F.conv2d(a, w, padding=5, groups=3), F.conv2d(b, w, padding=5, groups=3)
    s_aa = F.conv2d(a * a, w, padding=5, groups=3) - mu_a**2
    s_bb = F.conv2d(b * b, w, padding=5, groups=3) - mu_b**2
    s_ab = F.conv2d(a * b, w, padding=5, groups=3) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m[0].mean(0)


def ssim(pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> float:
    m = ssim_map(pred, gt)
    if mask is not None and not bool(mask.any()):
        return float("nan")
    return float(m.mean() if mask is None else m[mask].mean())


class LPIPS:
    """LPIPS (torchmetrics' implementation, its bundled linear layers) with AlexNet or VGG backbones.

    The backbone weights are torchvision's ImageNet checkpoints, which cannot be downloaded here:
    they are looked up in `weights_dir` (a folder holding alexnet-owt-7be5be79.pth /
    vgg16-397923af.pth, or a TORCH_HOME with hub/checkpoints/) and TORCH_HOME. When absent,
    `available` is False and `reason` says how to supply them."""

    FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

    def __init__(self, net: str = "alex", weights_dir: Optional[Path] = None):
        self.net, self.model, self.reason = net, None, ""
        found = self._find(weights_dir)
        if found is None:
            self.reason = (
                f"LPIPS-{net} skipped: {self.FILES[net]} not found offline; put it in a folder and pass "
                f"--lpips-weights FOLDER (or in $TORCH_HOME/hub/checkpoints)"
            )
            return
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            os.environ["TORCH_HOME"] = str(found)
            self.model = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).eval()
        except Exception as err:  # a corrupt or wrong checkpoint
            self.reason = f"LPIPS-{net} skipped: {' '.join(str(err).split())[:200]}"

    def _find(self, weights_dir: Optional[Path]) -> Optional[Path]:
        """A TORCH_HOME under which hub/checkpoints/<file> exists (a plain folder is linked into one)."""
        name = self.FILES[self.net]
        candidates = []
        if weights_dir is not None:
            candidates += [Path(weights_dir), Path(weights_dir) / "hub" / "checkpoints"]
        if os.environ.get("TORCH_HOME"):
            candidates.append(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints")
        for c in candidates:
            if (c / name).is_file():
                if c.name == "checkpoints" and c.parent.name == "hub":
                    return c.parent.parent
                import tempfile

                home = Path(tempfile.mkdtemp(prefix="modgs-lpips-"))
                (home / "hub" / "checkpoints").mkdir(parents=True)
                (home / "hub" / "checkpoints" / name).symlink_to((c / name).resolve())
                return home
        return None

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> Optional[float]:
        if self.model is None:
            return None
        if mask is not None:
            pred, gt = pred * mask[..., None], gt * mask[..., None]
        a = pred.permute(2, 0, 1)[None].float().clamp(0, 1).cpu()
        b = gt.permute(2, 0, 1)[None].float().clamp(0, 1).cpu()
        return float(self.model(a, b))


def image_metrics(
    pred: Tensor,
    gt: Tensor,
    masks: dict[str, Tensor],
    lpips: list[LPIPS],
    alpha: Optional[Tensor] = None,
    modgs_protocol: bool = False,
) -> dict[str, Optional[float]]:
    """All metrics of one image: `psnr`, `ssim`, `lpips_<net>` full-image, and `<metric>_<mask>` per mask.

    With modgs_protocol, the full-image metrics are computed on both images multiplied by
    (alpha > 0.5), MoDGS's evaluate_metric.py protocol."""
    if modgs_protocol:
        if alpha is None:
            raise ValueError("the MoDGS protocol needs the rendered alpha")
        m = (alpha > 0.5).to(pred.dtype)[..., None]
        pred, gt = pred * m, gt * m
    out: dict[str, Optional[float]] = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt)}
    for lp in lpips:
        out[f"lpips_{lp.net}"] = lp(pred, gt)
    for name, mask in masks.items():
        out[f"psnr_{name}"] = psnr(pred, gt, mask)
        out[f"ssim_{name}"] = ssim(pred, gt, mask)
        for lp in lpips:
            out[f"lpips_{lp.net}_{name}"] = lp(pred, gt, mask)
        out[f"fraction_{name}"] = float(mask.float().mean())
    return out


def mean_metrics(rows: list[dict]) -> dict[str, Optional[float]]:
    """Mean of every numeric metric over images, ignoring NaN (an empty mask) and None (skipped)."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], (float, int)) or rows[0][k] is None] if rows else []
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (float, int)) and math.isfinite(r[k])]
        out[k] = sum(vals) / len(vals) if vals else None
    return out
