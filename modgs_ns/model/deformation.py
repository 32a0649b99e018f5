"""MoDGS's time-conditioned, exactly invertible deformation (method reference §3.1).

- `GaborNet`: a multiplicative filter network encoding time t into a 128-d feature.
- `NVPCoupling`: a 4-layer RealNVP-style affine coupling network on 3D points, conditioned on
  that feature. Each layer moves one coordinate by a scale and shift computed from the other two
  and the time feature, so the map is a bijection for every t and its inverse is exact.
- `Deformation`: both, plus a fixed normalization of world coordinates into the network's
  [-1, 1] working box (MoDGS normalizes the scene instead, §2.9; we keep nerfstudio's world and
  normalize inside the module). API: `to_canonical(x, t)` and `from_canonical(x, t)`.

Deviation (documented): the last layer of each coupling MLP starts at zero, so the untrained
deformation is the identity; MoDGS initializes it randomly and always pre-trains it in stage 1.
With stage-1 steps = 0 (the ablation "without 3D-aware initialization") this gives the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor, nn


@dataclass
class DeformationConfig:
    """Sizes of the deformation network (defaults: MoDGS's configs)."""

    layers: int = 4
    """RealNVP coupling layers."""
    feature_dims: int = 128
    """Time feature size of the GaborNet encoder."""
    proj_dims: int = 256
    """Projection size inside each coupling layer."""
    hidden: Tuple[int, ...] = (256, 256, 256)
    """Hidden layer sizes of each coupling layer's MLP."""
    gabor_hidden: int = 256
    """Hidden size of the GaborNet time encoder."""
    seed: int = 1234
    """Seed of the initialization and coupling permutations (also of stage-1 sampling and the canonical draw)."""


class GaborLayer(nn.Module):
    """g(t) = sin(W t + b) * exp(-0.5 * gamma * |t - mu|^2)  (multiplicative filter network)."""

    def __init__(self, in_features: int, out_features: int, weight_scale: float, alpha: float, beta: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)  # weights U(-1/sqrt(in), 1/sqrt(in))
        self.mu = nn.Parameter(2 * torch.rand(out_features, in_features) - 1)
        self.gamma = nn.Parameter(torch.distributions.Gamma(alpha, beta).sample((out_features,)))
        with torch.no_grad():
            self.linear.weight.mul_(weight_scale * torch.sqrt(self.gamma[:, None]))
            self.linear.bias.uniform_(-math.pi, math.pi)

    def forward(self, t: Tensor) -> Tensor:
        d2 = (t**2).sum(-1, keepdim=True) + (self.mu**2).sum(-1)[None] - 2 * t @ self.mu.T
        return torch.sin(self.linear(t)) * torch.exp(-0.5 * d2 * self.gamma[None])


class GaborNet(nn.Module):
    """Time encoder: in 1, hidden 256, 2 multiplicative layers, out 128 (MoDGS configs)."""

    def __init__(
        self,
        hidden: int = 256,
        out: int = 128,
        n_layers: int = 2,
        input_scale: float = 256.0,
        weight_scale: float = 1.0,
        alpha: float = 4.5,
        beta: float = 1.0,
    ):
        super().__init__()
        self.filters = nn.ModuleList(
            GaborLayer(1, hidden, input_scale / math.sqrt(n_layers + 1), alpha / (n_layers + 1), beta)
            for _ in range(n_layers + 1)
        )
        self.linear = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers))
        bound = math.sqrt(weight_scale / hidden)
        with torch.no_grad():
            for lin in self.linear:
                lin.weight.uniform_(-bound, bound)
        self.output = nn.Linear(hidden, out)

    def forward(self, t: Tensor) -> Tensor:
        z = self.filters[0](t)
        for filt, lin in zip(self.filters[1:], self.linear):
            z = filt(t) * lin(z)
        return self.output(z)


def _coord_encoding(ab: Tensor, freqs: Tensor) -> Tensor:
    """[a, b, sin(a f), cos(a f), sin(b f), cos(b f)] with f = pi 2^k (MoDGS's exact order)."""
    a, b = ab[..., 0:1], ab[..., 1:2]
    return torch.cat([a, b, torch.sin(a * freqs), torch.cos(a * freqs), torch.sin(b * freqs), torch.cos(b * freqs)], -1)


class CouplingLayer(nn.Module):
    """Moves coordinate `k` by (s, t) computed from the other two and the time feature."""

    def __init__(self, k: int, feature_dims: int, proj_dims: int, hidden: tuple[int, ...], pe_freqs: int):
        super().__init__()
        self.k = k
        self.keep = [i for i in range(3) if i != k]
        act = nn.LeakyReLU(0.01)
        self.code_proj = nn.Sequential(
            nn.Linear(feature_dims, feature_dims), act, nn.Linear(feature_dims, feature_dims)
        )
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(pe_freqs, dtype=torch.float32), persistent=False)
        self.pos_proj = nn.Sequential(nn.Linear(2 + 4 * pe_freqs, proj_dims), act)
        layers: list[nn.Module] = []
        d = feature_dims + proj_dims
        for h in hidden:
            layers += [nn.Linear(d, h), act]
            d = h
        last = nn.Linear(d, 2)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.map_st = nn.Sequential(*layers, last)

    def scale_shift(self, x: Tensor, feat: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat(
            [self.code_proj(feat).expand(len(x), -1), self.pos_proj(_coord_encoding(x[:, self.keep], self.freqs))], -1
        )
        st = self.map_st(h)
        return st[:, 0:1].clamp(-8.0, 8.0), st[:, 1:2]

    def to_canonical(self, y: Tensor, feat: Tensor) -> Tensor:
        s, t = self.scale_shift(y, feat)
        xk = (y[:, self.k : self.k + 1] - t) * torch.exp(-s)
        return torch.cat([y[:, : self.k], xk, y[:, self.k + 1 :]], -1)

    def from_canonical(self, x: Tensor, feat: Tensor) -> Tensor:
        s, t = self.scale_shift(x, feat)
        yk = x[:, self.k : self.k + 1] * torch.exp(s) + t
        return torch.cat([x[:, : self.k], yk, x[:, self.k + 1 :]], -1)


class Deformation(nn.Module):
    """x_t <-> x_canonical, exactly invertible for every t, in world coordinates."""

    def __init__(
        self,
        n_layers: int = 4,
        feature_dims: int = 128,
        proj_dims: int = 256,
        hidden: tuple[int, ...] = (256, 256, 256),
        pe_freqs: int = 5,
        gabor_hidden: int = 256,
        seed: int = 1234,
    ):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # deterministic per seed, global RNG untouched
            torch.manual_seed(seed)
            # Masks: two random permutations of (x, y, z) concatenated; layer i moves coordinate perm[i].
            # Beyond 6 layers, more permutations (drawn only then, so smaller networks are unchanged).
            perm = torch.cat([torch.randperm(3) for _ in range(max(2, -(-n_layers // 3)))]).tolist()
            self.time_encoder = GaborNet(hidden=gabor_hidden, out=feature_dims)
            self.layers = nn.ModuleList(
                CouplingLayer(k, feature_dims, proj_dims, hidden, pe_freqs) for k in perm[:n_layers]
            )
        self.register_buffer("coords", torch.tensor(perm[:n_layers]))
        # World -> working box: x_n = (x - center) * scale. Set from the scene's points (set_normalization).
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("scale", torch.ones(()))

    @classmethod
    def from_config(cls, c: DeformationConfig) -> "Deformation":
        return cls(
            n_layers=c.layers,
            feature_dims=c.feature_dims,
            proj_dims=c.proj_dims,
            hidden=tuple(c.hidden),
            gabor_hidden=c.gabor_hidden,
            seed=c.seed,
        )

    @torch.no_grad()
    def set_normalization(self, points: Tensor) -> None:
        """Largest axis of the points' bounding box mapped to [-1, 1] (MoDGS §2.9)."""
        lo, hi = points.min(0).values, points.max(0).values
        self.center.copy_((lo + hi) / 2)
        self.scale.copy_(2.0 / (hi - lo).max().clamp_min(1e-8))

    def time_feature(self, t: Tensor | float, like: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(1, 1)
        return self.time_encoder(t)

    def to_canonical(self, x: Tensor, t: Tensor | float) -> Tensor:
        feat = self.time_feature(t, x)
        y = (x - self.center) * self.scale
        for layer in self.layers:
            y = layer.to_canonical(y, feat)
        return y / self.scale + self.center

    def from_canonical(self, x: Tensor, t: Tensor | float) -> Tensor:
        feat = self.time_feature(t, x)
        y = (x - self.center) * self.scale
        for layer in reversed(self.layers):
            y = layer.from_canonical(y, feat)
        return y / self.scale + self.center

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.from_canonical(x, t)
