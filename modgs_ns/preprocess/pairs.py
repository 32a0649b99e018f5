"""3D correspondence caches for stage 1 (method reference §2.8), built once per scene.

Instead of MoDGS's O(T^2 N) pickle of 3D point pairs, two small files:
- `caches/depth.npz`: the aligned depth of every training frame, its valid (prior-valid and
  non-edge) mask, the static mask, per-frame scale/shift, times, intrinsics and poses;
- `caches/pairs.npz`: for each frame a fixed random subset of valid source pixels and, for
  each target frame within +-window, where those pixels land (int16, 1/16 px; -32768 = no
  valid correspondence) after the cycle check and the target validity check, plus per-pair
  valid counts for sampling. 3D points are re-created from the depth when sampled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from rich.progress import Progress

from modgs_ns.data.scene_format import load_depth_prior, training_frames
from modgs_ns.preprocess.align import (align_chain, align_priors, align_to_anchors, nonedge_mask, static_mask,
                                      static_mask_moving, triangulate_flow, unproject)
from modgs_ns.preprocess.flow import chain_flows, cycle_consistent, make_flow, sample_bilinear

UV_SCALE = 16.0
UV_INVALID = -32768
DEPTH_CACHE = "caches/depth.npz"
PAIRS_CACHE = "caches/pairs.npz"


@dataclass
class PairParams:
    window: int = 16
    """Targets within +-window frames of the source. Deviation: MoDGS uses 8; chained flow makes a longer
    window cheap, and the canonical space then stays consistent over longer spans (hard-motion scene,
    2000 stage-1 steps: moving points warped 16 frames ahead land 6.4 px from the truth instead of 8.9)."""
    cycle_threshold: float = 3.0
    """Forward-backward flow consistency, pixels (MoDGS/OmniMotion: 3)."""
    static_threshold: float = 0.8
    """Static mask: neighbour flow, minus the flow the camera's own motion gives, below this, pixels
    (MoDGS, static camera: flow magnitude below 0.8)."""
    camera_motion: Literal["auto", "static", "rotation", "moving"] = "auto"
    """How depth is aligned across frames: static (pixel-to-pixel against a reference frame, MoDGS);
    rotation (chained through flow and the rotations); moving (fitted to static points triangulated
    from flow and the poses, in the poses' units). auto: from the poses (identical, same centre, or not)."""
    edge_quantile: float = 0.9
    """Pixels above this quantile of 3D gradient are depth edges and dropped (MoDGS: 0.9)."""
    points_per_frame: int = 10000
    """Source pixels stored per frame (0 = every valid pixel)."""
    flow: str = "dis-fine"
    """dis-ultrafast / dis-fast / dis-medium / dis-fine (OpenCV, no weights; dis-fine is dis-medium refined
    down to full resolution) or raft-small / raft-large (torchvision RAFT, MoDGS's choice; needs
    raft_checkpoint). gt: the generated scene's analytic flow (an oracle for benchmarks; modgs-synth scenes only)."""
    long_range: Literal["chain", "direct"] = "chain"
    """Flow to targets beyond +-1 frame. chain: follow consecutive-frame flows, every link cycle-checked
    (MoDGS/OmniMotion chain flow; fast motion defeats direct long-range flow: on the hard-motion scene,
    direct DIS flow 4-8 frames apart passes the cycle check on 50-70% of moving pixels while off by 30-50 px).
    direct: flow computed between the two frames themselves, cycle-checked (MoDGS's exhaustive RAFT)."""
    raft_checkpoint: str = ""
    """Local RAFT state-dict file (no download here)."""
    reference_frame: int = -1
    """Frame the others are aligned to; -1 = the middle frame."""
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cache_masks(root: Path, key: str) -> tuple[list[str], np.ndarray]:
    """(image names, mask [T,H,W] bool) stored bit-packed in the depth cache under `key`."""
    with np.load(Path(root) / DEPTH_CACHE) as z:
        W = int(z["shape"][2])
        return [str(n) for n in z["names"]], np.unpackbits(z[key], axis=-1, count=W).astype(bool)


def load_valid_masks(root: Path) -> tuple[list[str], np.ndarray]:
    """(image names, valid [T,H,W] bool) of the depth cache: prior-valid and non-edge pixels."""
    return load_cache_masks(root, "valid")


def caches_valid(root: Path, params: PairParams) -> bool:
    """Both caches exist and were built with these parameters (a half-written file never has a key)."""
    for rel in (DEPTH_CACHE, PAIRS_CACHE):
        p = root / rel
        if not p.is_file():
            return False
        try:
            with np.load(p) as z:
                if str(z["params_key"]) != params.key():
                    return False
        except Exception:  # truncated or foreign file (BadZipFile, EOFError, KeyError, ...)
            return False
    return True


def _load_frames(root: Path, meta: dict):
    frames = sorted(training_frames(meta), key=lambda f: (float(f["time"]), f["file_path"]))
    imgs, priors, valid, c2ws = [], [], [], []
    for f in frames:
        img = cv2.imread(str(root / f["file_path"]), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read image {root / f['file_path']}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        d, v = load_depth_prior(root / f["depth_prior_path"], img.shape[0], img.shape[1])
        imgs.append(img)
        priors.append(d)
        valid.append(v)
        c2ws.append(np.array(f["transform_matrix"], dtype=np.float64))
    K = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]], dtype=np.float64)
    times = np.array([float(f["time"]) for f in frames])
    names = [Path(f["file_path"]).name for f in frames]
    return np.stack(imgs), np.stack(priors), np.stack(valid), np.stack(c2ws), K, times, names


def camera_motion(c2ws: np.ndarray, tol: float = 1e-6) -> str:
    """static (all poses equal), rotation (one centre, orientations differ) or moving."""
    spread = np.abs(c2ws[:, :3, 3] - c2ws[:1, :3, 3]).max()
    scale = 1.0 + np.abs(c2ws[:, :3, 3]).max()
    if spread > tol * scale:
        return "moving"
    return "rotation" if np.abs(c2ws[:, :3, :3] - c2ws[:1, :3, :3]).max() > tol else "static"


def compute_flows(imgs: np.ndarray, win: int, params: PairParams, meta: dict, c2ws: np.ndarray, K: np.ndarray,
                  times: np.ndarray, progress: bool = True) -> tuple[dict, dict]:
    """Flow and its validity for every ordered frame pair (i, j) with 0 < |i - j| <= win:
    ({(i, j): flow [H,W,2]}, {(i, j): valid [H,W] bool}). Valid = cycle-consistent (direct), every link
    cycle-consistent (chained), or visible in frame j (the analytic flow)."""
    T, H, W = imgs.shape[:3]
    pairs = [(i, j) for i in range(T) for j in range(max(0, i - win), min(T, i + win + 1)) if j != i]
    flows: dict[tuple[int, int], np.ndarray] = {}
    ok: dict[tuple[int, int], np.ndarray] = {}
    if params.flow == "gt":
        from modgs_ns.synth.flow_gt import ground_truth_flow
        from modgs_ns.synth.scene import SceneParams

        synth = meta.get("modgs", {}).get("synth")
        if not synth:
            raise ValueError("--pairs.flow gt needs a scene generated by modgs-synth (its analytic flow)")
        scene = SceneParams(motion_amplitude=synth["motion_amplitude"], seed=synth["seed"], objects=synth["objects"])
        with Progress(disable=not progress) as bar:
            task = bar.add_task("modgs: analytic flow (oracle)", total=len(pairs))
            for i, j in pairs:
                f, vis = ground_truth_flow(scene, float(times[i]), float(times[j]), c2ws[i], c2ws[j], K, W, H)
                flows[(i, j)], ok[(i, j)] = np.where(vis[..., None], f, 0.0).astype(np.float32), vis
                bar.advance(task)
        return flows, ok
    flow_fn = make_flow(params.flow, params.raft_checkpoint)
    todo = pairs if params.long_range == "direct" else [(i, j) for i, j in pairs if abs(i - j) == 1]
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"modgs: optical flow ({params.flow})", total=len(todo))
        for i, j in todo:
            flows[(i, j)] = flow_fn(imgs[i], imgs[j])
            bar.advance(task)
    for i, j in todo:
        ok[(i, j)] = cycle_consistent(flows[(i, j)], flows[(j, i)], params.cycle_threshold)
    if params.long_range == "chain":
        for i in range(T):
            for step in (1, -1):
                links = [(a, a + step) for a in range(i, i + step * win, step) if 0 <= a + step < T]
                if len(links) < 2:
                    continue
                chained = chain_flows([flows[link] for link in links], [ok[link] for link in links])
                for (_, j), (f, v) in zip(links[1:], chained[1:]):
                    flows[(i, j)], ok[(i, j)] = f, v
    return flows, ok


def _align_moving(flows: dict, flow_ok: dict, priors, prior_valid, K, c2ws, params: PairParams, win: int, metric: bool):
    """Depth of a translating camera fitted to static points triangulated from flow and the poses
    (ValueError when no frame has enough of them)."""
    T = len(priors)
    anchors = []
    for i in range(T):
        j = i + win if i + win < T else max(i - win, 0)
        ok = flow_ok[(i, j)] & prior_valid[i]
        anchors.append(triangulate_flow(flows[(i, j)], ok, K, c2ws[i], c2ws[j]))
    depth, _, _, _ = align_to_anchors(priors, prior_valid, anchors, metric=metric)
    # Moving objects' points triangulate wrongly: refit on the anchors the residual test calls static.
    static = static_mask_moving(flows, depth, K, c2ws, params.static_threshold)
    anchors = [(idx[static[i].reshape(-1)[idx]], z[static[i].reshape(-1)[idx]]) for i, (idx, z) in enumerate(anchors)]
    depth, scales, shifts, _ = align_to_anchors(priors, prior_valid, anchors, metric=metric)
    return depth, scales, shifts


def build_caches(root: Path, meta: dict, params: PairParams, progress: bool = True) -> dict:
    """Compute flows, alignment and pairs; write both caches atomically. Returns timings/sizes."""
    imgs, priors, prior_valid, c2ws, K, times, names = _load_frames(root, meta)
    T, H, W = priors.shape
    win = max(1, min(params.window, T - 1))
    offsets = np.array([o for o in range(-win, win + 1) if o != 0])
    flows, flow_ok = compute_flows(imgs, win, params, meta, c2ws, K, times, progress)

    ref = T // 2 if params.reference_frame < 0 else min(params.reference_frame, T - 1)
    motion = camera_motion(c2ws) if params.camera_motion == "auto" else params.camera_motion
    depth = None
    if motion == "moving":
        metric = meta.get("modgs", {}).get("depth_prior", {}).get("kind") == "metric_depth"
        try:
            # Triangulation baseline: 8 frames (MoDGS's window), whatever the pair window; a flow chained
            # over 16 links drifts enough to bias a frame's fitted scale by 10%.
            depth, scales, shifts = _align_moving(flows, flow_ok, priors, prior_valid, K, c2ws, params, min(win, 8), metric)
        except ValueError as err:
            # Too little parallax to triangulate: treat the motion as a rotation for the alignment.
            print(f"modgs: warning: {err}; depth aligned through flow as for a turning camera", file=sys.stderr, flush=True)
            motion = "moving (aligned as rotation: too little parallax)"
    if motion == "static":
        neighbour = [flows[(i, i + 1)] for i in range(T - 1)] + [flows[(i + 1, i)] for i in range(T - 1)]
        static = static_mask(neighbour, params.static_threshold)
        depth, scales, shifts = align_priors(priors, prior_valid, static, ref)
    else:
        if depth is None:  # a rotation, or a translation too small to triangulate
            # The flow a rotation gives does not depend on depth: any positive depth serves.
            static = static_mask_moving(flows, np.ones_like(priors), K, c2ws, params.static_threshold)
            depth, scales, shifts = align_chain(priors, prior_valid, static, flows, K, c2ws, ref)
        if motion != "rotation":  # a translating camera's flow depends on depth: the final mask uses the aligned one
            static = static_mask_moving(flows, depth, K, c2ws, params.static_threshold)
    # Per-frame moving pixels (flow to a neighbour frame beyond what the camera's motion explains):
    # stage 1 gives them their share of each step's pairs.
    moving = ~static_mask_moving(flows, depth, K, c2ws, params.static_threshold)
    points = np.stack([unproject(depth[i], K, c2ws[i]) for i in range(T)])
    valid = np.stack([prior_valid[i] & nonedge_mask(points[i], params.edge_quantile) for i in range(T)])

    uv_scale = min(UV_SCALE, float(2 ** int(np.floor(np.log2(32000 / max(H, W))))))
    rng = np.random.default_rng(params.seed)
    M = params.points_per_frame
    n_src = [int(v.sum()) for v in valid]
    M = min(n_src) if M <= 0 else min(M, min(n_src))
    src = np.zeros((T, M), dtype=np.int32)
    tgt = np.full((T, len(offsets), M, 2), UV_INVALID, dtype=np.int16)
    counts = np.zeros((T, T), dtype=np.int64)
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    with Progress(disable=not progress) as bar:
        task = bar.add_task("modgs: 3D correspondence pairs", total=T)
        for i in range(T):
            idx = np.flatnonzero(valid[i].reshape(-1))
            src[i] = np.sort(rng.choice(idx, size=M, replace=False))
            for k, o in enumerate(offsets):
                j = i + o
                if not 0 <= j < T:
                    continue
                f = flows[(i, j)]
                ok = flow_ok[(i, j)] & valid[i]
                qx, qy = xs + f[..., 0], ys + f[..., 1]
                # All four bilinear neighbours of the target must be valid (rejects occlusion
                # boundaries, depth edges and holes), as MoDGS's `> 1 - 1e-5` test does.
                tv = sample_bilinear(valid[j].astype(np.float32)[..., None], qx, qy)
                ok &= tv.reshape(H, W) > 1 - 1e-5
                counts[i, j] = int(ok.sum())
                sel = ok.reshape(-1)[src[i]]
                uv = np.stack([qx.reshape(-1)[src[i]], qy.reshape(-1)[src[i]]], -1)
                tgt[i, k][sel] = np.round(uv[sel] * uv_scale).astype(np.int16)
            bar.advance(task)

    key = np.array(params.key())
    _atomic_savez(
        root / DEPTH_CACHE,
        params_key=key,
        depth=depth,
        valid=np.packbits(valid, axis=-1),
        static=static,
        moving=np.packbits(moving, axis=-1),
        scales=scales,
        shifts=shifts,
        reference=np.array(ref),
        times=times,
        names=np.array(names),
        K=K,
        c2w=c2ws,
        shape=np.array([T, H, W]),
    )
    _atomic_savez(root / PAIRS_CACHE, params_key=key, src=src, tgt=tgt, offsets=offsets, counts=counts, uv_scale=np.array(uv_scale),
                  params=np.array(json.dumps(asdict(params))))
    return {
        "depth_bytes": (root / DEPTH_CACHE).stat().st_size,
        "pairs_bytes": (root / PAIRS_CACHE).stat().st_size,
        "static_fraction": float(static.mean()),
        "camera_motion": motion,
        "valid_pairs_mean": float(counts[counts > 0].mean()) if (counts > 0).any() else 0.0,
    }
