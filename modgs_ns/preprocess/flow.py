"""Dense optical flow between frames (OpenCV DIS by default, no weights needed) and the
forward-backward cycle check that keeps only trustworthy correspondences."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2, "fine": 2}


class DISFlow:
    """OpenCV's DIS optical flow. MoDGS uses RAFT; DIS is the weight-free default (documented)."""

    def __init__(self, preset: str = "medium"):
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS["medium" if preset == "fine" else preset])
        if preset == "fine":
            # Refine down to full resolution (OpenCV's presets stop a pyramid level or more above it):
            # on the hard-motion scene's moving objects the median error falls from 2.6 to 1.8 px.
            self.dis.setFinestScale(0)

    def __call__(self, img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
        """Flow [H,W,2] (x, y in pixels) taking pixel p of a to p + flow(p) in b."""
        ga = cv2.cvtColor(img_a, cv2.COLOR_RGB2GRAY) if img_a.ndim == 3 else img_a
        gb = cv2.cvtColor(img_b, cv2.COLOR_RGB2GRAY) if img_b.ndim == 3 else img_b
        return self.dis.calc(ga, gb, None)


class RAFTFlow:
    """torchvision's RAFT (the flow MoDGS uses) from a local checkpoint: its weights cannot be
    downloaded here, so `checkpoint` must be a state-dict file such as torchvision's
    raft_small_C_T_V2-01064c6d.pth or raft_large_C_T_SKHT_V2-ff5fadd5.pth. CPU cost: ~0.2-0.3 s
    per pair at 480x270 (raft_small, 12 iterations), about 20x DIS."""

    def __init__(self, checkpoint: str, size: str = "small", iterations: int = 12):
        import torch
        from torchvision.models.optical_flow import raft_large, raft_small

        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(
                f"RAFT checkpoint {checkpoint!r} not found: download torchvision's raft_{size} weights on a "
                "machine with internet and pass the .pth file (--pairs.raft-checkpoint)"
            )
        self.model = (raft_small if size == "small" else raft_large)(weights=None, progress=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        self.model.eval()
        self.iterations = iterations

    def __call__(self, img_a: np.ndarray, img_b: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        def prep(img):
            x = torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)[None]
            return x / 127.5 - 1.0  # RAFT's input range [-1, 1]

        a, b = prep(img_a), prep(img_b)
        h, w = a.shape[-2:]
        # RAFT needs sizes divisible by 8 and at least 128 (its correlation pyramid).
        ph, pw = max((-h) % 8, 128 - h), max((-w) % 8, 128 - w)
        ph, pw = ph + (-(h + ph)) % 8, pw + (-(w + pw)) % 8
        a = F.pad(a, (0, pw, 0, ph), mode="replicate")
        b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        with torch.no_grad():
            flow = self.model(a, b, num_flow_updates=self.iterations)[-1]
        return flow[0, :, :h, :w].permute(1, 2, 0).numpy().astype(np.float32)


SCENE_FLOW_GROUP = "modgs_ns.scene_flow"
"""Entry-point group of flows a scene defines itself: name -> f(meta, t_i, t_j, c2w_i, c2w_j, K, W, H) ->
(flow [H,W,2], visible [H,W] bool). modgs-synth registers `gt`, its analytic flow (pyproject.toml)."""


def scene_flow_provider(name: str) -> Optional[Callable]:
    """The registered scene flow of that name, or None (then `name` is an image-flow method)."""
    for ep in importlib.metadata.entry_points(group=SCENE_FLOW_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def make_flow(name: str, raft_checkpoint: str = ""):
    """ "dis-ultrafast|fast|medium|fine" (no weights) or "raft-small|large" (needs a checkpoint)."""
    kind, _, variant = name.partition("-")
    if kind == "dis" and variant in DIS_PRESETS:
        return DISFlow(variant)
    if kind == "raft" and variant in ("small", "large"):
        return RAFTFlow(raft_checkpoint, variant)
    raise ValueError(
        f"unknown flow method {name!r}: use dis-ultrafast, dis-fast, dis-medium, dis-fine, raft-small, raft-large (or gt on a generated scene)"
    )


def sample_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img [H,W,C] at float pixel-index coordinates (x, y); border-clamped."""
    return cv2.remap(img, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cycle_consistent(flow_ab: np.ndarray, flow_ba: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """Mask [H,W] of pixels p with |F_ab(p) + F_ba(p + F_ab(p))| < threshold and p + F_ab(p) in view.

    MoDGS/OmniMotion use a 3 px cycle threshold on exhaustive RAFT flows.
    """
    h, w = flow_ab.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    qx, qy = xs + flow_ab[..., 0], ys + flow_ab[..., 1]
    inside = (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
    back = sample_bilinear(flow_ba, qx, qy)
    err = np.linalg.norm(flow_ab + back, axis=-1)
    return inside & (err < threshold)


def chain_flows(step_flows: list[np.ndarray], step_ok: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Long-range flow by following consecutive flows: from frame i, the flow to i+k is the sum of the
    k links i->i+1->...->i+k, each read (bilinearly) where the previous link landed. A pixel stays valid
    while every link it uses is trustworthy there (all four bilinear neighbours pass `step_ok`, the
    link's cycle check) and it stays in view. MoDGS/OmniMotion chain flow the same way; fast motion
    defeats direct long-range flow, while the links stay short.

    step_flows[k], step_ok[k]: the flow [H,W,2] and its validity [H,W] from frame i+k to i+k+1.
    Returns [(flow [H,W,2], valid [H,W])] for targets i+1 .. i+len(step_flows).
    """
    h, w = step_flows[0].shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    qx, qy = xs.copy(), ys.copy()
    ok = np.ones((h, w), dtype=bool)
    out = []
    for flow, valid in zip(step_flows, step_ok):
        ok &= sample_bilinear(valid.astype(np.float32)[..., None], qx, qy).reshape(h, w) > 1 - 1e-5
        f = sample_bilinear(flow, qx, qy)
        qx, qy = qx + f[..., 0], qy + f[..., 1]
        ok &= (qx >= 0) & (qx <= w - 1) & (qy >= 0) & (qy <= h - 1)
        out.append((np.stack([qx - xs, qy - ys], -1), ok.copy()))
    return out
