"""Time-conditioned deformation of canonical Gaussian means.

The walking skeleton uses a small offset MLP, x_t = x + f(gamma(x), gamma(t)), whose last layer
starts at zero so training begins from the identity. The MoDGS deformation (Gabor time encoder
and an invertible RealNVP coupling network) replaces it behind the same `from_canonical` API.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """[..., D] -> [..., D * (1 + 2 * num_freqs)]: x, sin(2^k pi x), cos(2^k pi x)."""
    freqs = (2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x[..., None] * freqs  # [..., D, F]
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class OffsetDeformation(nn.Module):
    """Canonical means -> means at time t, by a learned offset field."""

    def __init__(self, hidden: int = 64, layers: int = 3, pos_freqs: int = 4, time_freqs: int = 4):
        super().__init__()
        self.pos_freqs, self.time_freqs = pos_freqs, time_freqs
        d_in = 3 * (1 + 2 * pos_freqs) + (1 + 2 * time_freqs)
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
        self.trunk = nn.Sequential(*mods)
        self.head = nn.Linear(hidden, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def from_canonical(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(1, 1).expand(len(x), 1)
        feat = torch.cat([positional_encoding(x, self.pos_freqs), positional_encoding(t, self.time_freqs)], -1)
        return x + self.head(self.trunk(feat))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.from_canonical(x, t)
