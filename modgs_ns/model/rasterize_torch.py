"""Differentiable 3D Gaussian rasterization in plain PyTorch (the CPU path).

Follows gsplat 1.4.0's rules so both paths give the same images:
- projection: EWA splatting with a 0.3 px low-pass, radius = ceil(3 sigma_max), near/far culling,
  Jacobian evaluated with the mean clamped to 1.3x the frustum (`_persp_proj` in gsplat);
- tiles of 16x16 px; a Gaussian touches the tiles its radius box covers; per tile front-to-back
  by camera depth;
- per pixel (centre at +0.5): sigma = 0.5 (a dx^2 + c dy^2) + b dx dy (clamped at 0: gsplat skips
  sigma < 0, which only rounding at a Gaussian's centre produces);
  alpha = min(0.999, opacity exp(-sigma)), skipped if < 1/255; compositing stops *before* the
  Gaussian that would bring transmittance to <= 1e-4.
Backward is autograd. Tiles are processed in batches padded to the batch's longest list and
Gaussians in chunks, so memory stays bounded by the number of tile-Gaussian intersections.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EPS2D = 0.3
SIGMA_CLAMP = 30.0  # exp(-30) * 1 < 1/255; clamping avoids slow denormals in exp

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Real spherical harmonics up to degree 3 (3DGS/gsplat constants). coeffs [..., K, 3]."""
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = SH_C0 * coeffs[..., 0, :]
    if degree >= 1:
        out = out - SH_C1 * y * coeffs[..., 1, :] + SH_C1 * z * coeffs[..., 2, :] - SH_C1 * x * coeffs[..., 3, :]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out = (
            out
            + SH_C2[0] * xy * coeffs[..., 4, :]
            + SH_C2[1] * yz * coeffs[..., 5, :]
            + SH_C2[2] * (2.0 * zz - xx - yy) * coeffs[..., 6, :]
            + SH_C2[3] * xz * coeffs[..., 7, :]
            + SH_C2[4] * (xx - yy) * coeffs[..., 8, :]
        )
    if degree >= 3:
        out = (
            out
            + SH_C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :]
            + SH_C3[1] * xy * z * coeffs[..., 10, :]
            + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
            + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :]
            + SH_C3[5] * z * (xx - yy) * coeffs[..., 14, :]
            + SH_C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :]
        )
    return out


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances R S S R^T from wxyz quaternions (normalized here) and scales."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)
    M = R * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project(
    means: Tensor, covars: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int, near: float, far: float
):
    """One camera: (means2d [N,2], conics [N,3], depths [N], radii [N] int32) as gsplat computes them."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t
    cc = R @ covars @ R.T
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    # The Jacobian is evaluated at the mean clamped to the (enlarged) frustum.
    txc = tz * torch.clamp(tx / tz, min=-lim_x_neg, max=lim_x_pos)
    tyc = tz * torch.clamp(ty / tz, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * txc / tz**2, zero, fy / tz, -fy * tyc / tz**2], -1).reshape(-1, 2, 3)
    cov2d = J @ cc @ J.transpose(-1, -2)
    cov2d = cov2d + EPS2D * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    a, b, c = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)
    with torch.no_grad():
        half = 0.5 * (a + c)
        v1 = half + torch.sqrt((half * half - det).clamp_min(0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        valid = (tz > near) & (tz < far)  # det is clamped positive, as in gsplat
        inside = (
            (means2d[:, 0] + radius > 0)
            & (means2d[:, 0] - radius < width)
            & (means2d[:, 1] + radius > 0)
            & (means2d[:, 1] - radius < height)
        )
        radii = torch.where(valid & inside, radius, torch.zeros_like(radius)).int()
    return means2d, conics, tz, radii


def tile_intersections(means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int):
    """Sorted (tile_id, gaussian_id) pairs: by tile, then front to back; plus per-tile counts."""
    with torch.no_grad():
        ids = torch.nonzero(radii > 0).squeeze(-1)
        m = means2d[ids].detach() / TILE
        r = radii[ids].to(m.dtype)[:, None] / TILE
        lo = torch.floor(m - r).long()
        hi = torch.ceil(m + r).long()
        lo[:, 0].clamp_(0, tiles_x), hi[:, 0].clamp_(0, tiles_x)
        lo[:, 1].clamp_(0, tiles_y), hi[:, 1].clamp_(0, tiles_y)
        nx, ny = hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]
        n = nx * ny
        keep = n > 0
        ids, lo, nx, n = ids[keep], lo[keep], nx[keep], n[keep]
        # Sort Gaussians by depth first; a stable sort by tile then keeps depth order per tile.
        order = torch.argsort(depths[ids].detach(), stable=True)
        ids, lo, nx, n = ids[order], lo[order], nx[order], n[order]
        owner = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), n)
        start = torch.cumsum(n, 0) - n
        local = torch.arange(len(owner), device=ids.device) - start[owner]
        tx = lo[owner, 0] + local % nx[owner]
        ty = lo[owner, 1] + local // nx[owner]
        tile_id = ty * tiles_x + tx
        s = torch.argsort(tile_id, stable=True)
        tile_id, gauss_id = tile_id[s], ids[owner[s]]
        counts = torch.bincount(tile_id, minlength=tiles_x * tiles_y)
    return tile_id, gauss_id, counts


def _composite_batch(pix, coef, feat, chunk):
    """Front-to-back alpha compositing of one tile batch.

    pix [B,P,6] pixel monomials (x^2, y^2, xy, x, y, 1) in tile-local coordinates; coef [B,K,6]
    per-Gaussian quadratic-form coefficients with -log(opacity) folded into the constant, so
    that sigma - log(opacity) = pix @ coef^T is one batched matmul; feat [B,K,D].
    Returns accumulated features [B,P,D] and final transmittance [B,P].
    """
    B, P, _ = pix.shape
    K = coef.shape[1]
    acc = pix.new_zeros(B, P, feat.shape[-1])
    T = pix.new_ones(B, P)
    done = torch.zeros(B, P, dtype=torch.bool, device=pix.device)
    for k0 in range(0, K, chunk):
        sl = slice(k0, min(K, k0 + chunk))
        # exp(-(sigma - log o)) = o * exp(-sigma). sigma >= 0 for the positive definite conics
        # gsplat produces; gsplat skips sigma < 0 (rounding at a Gaussian's centre), we clamp.
        s = torch.bmm(pix, coef[:, sl].transpose(1, 2))
        alpha = torch.clamp(torch.exp(-s.clamp(min=0.0, max=SIGMA_CLAMP)), max=ALPHA_MAX)
        alpha = torch.where(alpha < ALPHA_MIN, torch.zeros_like(alpha), alpha)
        with torch.no_grad():
            next_T = T[..., None] * torch.cumprod(1.0 - alpha, -1)
            use = (next_T > T_MIN) & ~done[..., None]
            done = done | (next_T <= T_MIN).any(-1)
        alpha = alpha * use
        trans = torch.cumprod(1.0 - alpha, -1)
        T_excl = T[..., None] * torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], -1)
        acc = acc + torch.bmm(alpha * T_excl, feat[:, sl])
        T = T * trans[..., -1]
        if bool(done.all()):
            break
    return acc, T


def _quadratic_coefficients(m, con, opa, valid):
    """Per (tile, Gaussian): sigma - log(opacity) as a quadratic in tile-local pixel (x, y).

    m [B,K,2] tile-local means; con [B,K,3] conics (a, b, c); opa [B,K]; valid [B,K].
    sigma = 0.5 a dx^2 + 0.5 c dy^2 + b dx dy with d = m - p, expanded in the monomials of p.
    """
    a, b, c = con.unbind(-1)
    mx, my = m.unbind(-1)
    const = 0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my - torch.log(opa.clamp_min(1e-12))
    coef = torch.stack([0.5 * a, 0.5 * c, b, -(a * mx + b * my), -(c * my + b * mx), const], -1)
    pad = torch.zeros_like(coef)
    pad[..., 5] = 1e4  # padding entries: alpha = 0
    return torch.where(valid[..., None], coef, pad)


def rasterize_image(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    budget: int = 1 << 22,
    chunk: int = 128,
):
    """Composite one camera's projected Gaussians: (features [H,W,D], alpha [H,W,1])."""
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_tiles = tiles_x * tiles_y
    D = features.shape[-1]
    tile_id, gauss_id, counts = tile_intersections(means2d, radii, depths, tiles_x, tiles_y)
    offsets = torch.cumsum(counts, 0) - counts
    out = features.new_zeros(n_tiles, TILE * TILE, D)
    T_out = features.new_ones(n_tiles, TILE * TILE)
    ar = torch.arange(TILE, device=features.device, dtype=features.dtype) + 0.5
    py, px = torch.meshgrid(ar, ar, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    local_mono = torch.stack([px * px, py * py, px * py, px, py, torch.ones_like(px)], -1)[None]  # [1,P,6]
    busy = torch.nonzero(counts > 0).squeeze(-1)
    if len(busy):
        # Longest lists first, grouped so that B * Kmax * P stays within the budget.
        busy = busy[torch.argsort(counts[busy], descending=True)]
        cnt = counts[busy].tolist()
        results, done_ids = [], []
        i = 0
        while i < len(busy):
            kmax = cnt[i]
            nb = max(1, min(len(busy) - i, budget // (TILE * TILE * min(kmax, chunk))))
            tiles = busy[i : i + nb]
            i += nb
            kk = torch.arange(kmax, device=features.device)
            valid = kk[None] < counts[tiles][:, None]
            idx = gauss_id[(offsets[tiles][:, None] + kk[None]).clamp(max=len(gauss_id) - 1)]
            origin = torch.stack([tiles % tiles_x, tiles // tiles_x], -1).to(features.dtype) * TILE
            coef = _quadratic_coefficients(means2d[idx] - origin[:, None, :], conics[idx], opacities[idx], valid)
            acc, T = _composite_batch(local_mono.expand(len(tiles), -1, -1), coef, features[idx], chunk)
            results.append((acc, T))
            done_ids.append(tiles)
        ids = torch.cat(done_ids)
        out = out.index_copy(0, ids, torch.cat([r[0] for r in results]))
        T_out = T_out.index_copy(0, ids, torch.cat([r[1] for r in results]))
    img = out.reshape(tiles_y, tiles_x, TILE, TILE, D).permute(0, 2, 1, 3, 4).reshape(tiles_y * TILE, tiles_x * TILE, D)
    T_img = T_out.reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3).reshape(tiles_y * TILE, tiles_x * TILE)
    return img[:height, :width], (1.0 - T_img[:height, :width])[..., None]


def rasterization_torch(
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
    composite: Callable = rasterize_image,
):
    """gsplat-compatible outputs: render [C,H,W,D], alpha [C,H,W,1], info (what DefaultStrategy reads).

    `composite` does the per-pixel work for one camera (this module's `rasterize_image` or the
    compiled `rasterize_cpp.rasterize_image_cpp`); projection and everything else is shared.
    """
    assert render_mode in ("RGB", "D", "ED", "RGB+D", "RGB+ED"), render_mode
    C = viewmats.shape[0]
    covars = quat_scale_to_covar(quats, scales)
    m2d_all, con_all, dep_all, rad_all = [], [], [], []
    for ci in range(C):
        m2d, con, dep, rad = project(means, covars, viewmats[ci], Ks[ci], width, height, near_plane, far_plane)
        m2d_all.append(m2d), con_all.append(con), dep_all.append(dep), rad_all.append(rad)
    means2d = torch.stack(m2d_all)  # [C,N,2]; DefaultStrategy reads its .grad
    conics, depths, radii = torch.stack(con_all), torch.stack(dep_all), torch.stack(rad_all)
    renders, alphas = [], []
    for ci in range(C):
        if sh_degree is None:
            col = colors if colors.dim() == 2 else colors[ci]
        else:
            campos = -viewmats[ci, :3, :3].T @ viewmats[ci, :3, 3]
            col = torch.clamp_min(eval_sh(sh_degree, means - campos, colors) + 0.5, 0.0)
        d = depths[ci][:, None]
        feats = {"RGB": [col], "D": [d], "ED": [d], "RGB+D": [col, d], "RGB+ED": [col, d]}[render_mode]
        img, alpha = composite(
            means2d[ci], conics[ci], opacities, torch.cat(feats, -1), depths[ci], radii[ci], width, height
        )
        if render_mode in ("ED", "RGB+ED"):
            img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp_min(1e-10)], -1)
        if backgrounds is not None:
            bg = backgrounds[ci]
            if img.shape[-1] > bg.shape[-1]:
                bg = torch.cat([bg, bg.new_zeros(img.shape[-1] - bg.shape[-1])])
            img = img + (1.0 - alpha) * bg
        renders.append(img)
        alphas.append(alpha)
    info = {
        "means2d": means2d,
        "radii": radii,
        "depths": depths,
        "conics": conics,
        "width": width,
        "height": height,
        "tile_size": TILE,
        "n_cameras": C,
        "gaussian_ids": None,
    }
    return torch.stack(renders), torch.stack(alphas), info
