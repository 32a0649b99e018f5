"""The Gaussians of a modgs model at a time, as standard 3DGS PLY files.

MoDGS keeps one set of *canonical* Gaussians (the model's parameters, what `ns-export
gaussian-splat` writes) and a deformation that moves their centres to any time t; rotations,
scales and colours do not change with time; opacities only through a Gaussian's lifespan (moving
content, when the run uses lifespans). `gaussians_at_time` applies both;
`write_splat_ply` writes the layout 3DGS viewers read (x y z, nx ny nz, f_dc_*, f_rest_*, opacity
as a logit, scale_* as logs, rot_* as a wxyz quaternion), all float32, from one structured numpy
array in one write: no per-element Python loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from modgs_ns.scene.files import atomic_write

SH_C0 = 0.28209479177387814


@torch.no_grad()
def gaussians_at_time(model, t: Optional[float], min_opacity: float = 1.0 / 255.0) -> Dict[str, np.ndarray]:
    """Arrays of the model's Gaussians at time t (None: canonical, all of them at their own opacity),
    finite and above min_opacity."""
    if t is None:
        ids, means, opacity = slice(None), model.means, torch.sigmoid(model.opacities.reshape(-1))
    else:
        ids, means, opacity = model.gaussians_at(float(t))
    # The stored logit where the lifespan leaves the opacity as it is (exact), else the logit of the product.
    raw = model.opacities.reshape(-1)[ids]
    opacity_logits = torch.where(opacity == torch.sigmoid(raw), raw, torch.logit(opacity.clamp(1e-7, 1 - 1e-7)))
    if model.config.sh_degree > 0:
        f_dc = model.features_dc[ids]
        f_rest = model.features_rest[ids]  # [N, K-1, 3]
    else:
        # sh_degree 0 stores colour logits (splatfacto's convention); viewers want SH DC coefficients.
        f_dc = (torch.sigmoid(model.features_dc[ids]) - 0.5) / SH_C0
        f_rest = f_dc.new_zeros(f_dc.shape[0], 0, 3)
    out = {
        "means": means.float().cpu().numpy(),
        "f_dc": f_dc.reshape(-1, 3).float().cpu().numpy(),
        "f_rest": f_rest.transpose(1, 2).reshape(f_rest.shape[0], -1).float().cpu().numpy(),  # channel-major, as 3DGS
        "opacities": opacity_logits.float().cpu().numpy(),
        "scales": model.scales[ids].float().cpu().numpy(),
        "quats": torch.nn.functional.normalize(model.quats[ids], dim=-1).float().cpu().numpy(),
    }
    keep = np.ones(len(out["means"]), bool)
    for v in out.values():
        keep &= np.isfinite(v.reshape(len(v), -1)).all(1)
    keep &= 1.0 / (1.0 + np.exp(-out["opacities"])) >= min_opacity
    return {k: v[keep] for k, v in out.items()}


def write_splat_ply(path: Path, g: Dict[str, np.ndarray]) -> None:
    """Binary little-endian 3DGS PLY, written atomically."""
    n = len(g["means"])
    names = ["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
    names += [f"f_rest_{i}" for i in range(g["f_rest"].shape[1])] + ["opacity"]
    names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    cols = np.concatenate(
        [
            g["means"],
            np.zeros((n, 3), np.float32),
            g["f_dc"],
            g["f_rest"],
            g["opacities"][:, None],
            g["scales"],
            g["quats"],
        ],
        1,
    ).astype("<f4")
    header = f"ply\nformat binary_little_endian 1.0\ncomment modgs-ns\nelement vertex {n}\n"
    header += "".join(f"property float {c}\n" for c in names) + "end_header\n"
    path = Path(path)
    body = header.encode("ascii") + np.ascontiguousarray(cols).tobytes()
    atomic_write(path, lambda tmp: tmp.write_bytes(body))


def export_sequence(
    model, output_dir: Path, times: list[float], min_opacity: float = 1.0 / 255.0, progress=None
) -> Path:
    """One PLY per time plus manifest.json ({"frames": [{"time", "file", "num_gaussians"}]})."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for k, t in enumerate(times):
        name = f"gaussians_{k:04d}_t{t:.4f}.ply"
        g = gaussians_at_time(model, t, min_opacity)
        write_splat_ply(output_dir / name, g)
        frames.append({"time": float(t), "file": name, "num_gaussians": int(len(g["means"]))})
        if progress:
            progress()
    manifest = output_dir / "manifest.json"
    manifest.write_text(json.dumps({"format": "3dgs-ply", "frames": frames}, indent=1))
    return manifest
