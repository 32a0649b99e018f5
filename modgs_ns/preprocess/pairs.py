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

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.progress import Progress

from modgs_ns.preprocess.align import (
    align_chain,
    align_priors,
    align_to_anchors,
    disparity_shift_from_planes,
    disparity_to_depth,
    moving_mask,
    nonedge_mask,
    static_mask,
    static_mask_moving,
    triangulate_flow,
)
from modgs_ns.preprocess.flow import chain_flows, cycle_consistent, make_flow, sample_bilinear, scene_flow_provider
from modgs_ns.scene.caches import (
    DEPTH_CACHE,
    PAIRS_CACHE,
    UV_INVALID,
    UV_SCALE,
    DepthCache,
    PairParams,
    PairsCache,
    cache_key,
    cache_state,
    pair_params_of,
)
from modgs_ns.scene.errors import SceneFormatError
from modgs_ns.scene.files import read_rgb
from modgs_ns.scene.format import load_depth_prior, load_scene_meta, prior_kind, training_frames, validate_scene
from modgs_ns.scene.geometry import unproject


def _load_frames(root: Path, meta: dict):
    frames = sorted(training_frames(meta), key=lambda f: (float(f["time"]), f["file_path"]))
    imgs, priors, valid, c2ws = [], [], [], []
    for f in frames:
        img = read_rgb(root / f["file_path"])
        if img is None:
            raise SceneFormatError(f"cannot read image {root / f['file_path']}")
        d, v = load_depth_prior(root / f["depth_prior_path"], img.shape[0], img.shape[1], prior_kind(meta))
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


def compute_flows(
    imgs: np.ndarray,
    win: int,
    params: PairParams,
    meta: dict,
    c2ws: np.ndarray,
    K: np.ndarray,
    times: np.ndarray,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Flow and its validity for every ordered frame pair (i, j) with 0 < |i - j| <= win:
    ({(i, j): flow [H,W,2]}, {(i, j): valid [H,W] bool}). Valid = cycle-consistent (direct), every link
    cycle-consistent (chained), or visible in frame j (the analytic flow)."""
    T, H, W = imgs.shape[:3]
    pairs = [(i, j) for i in range(T) for j in range(max(0, i - win), min(T, i + win + 1)) if j != i]
    flows: dict[tuple[int, int], np.ndarray] = {}
    ok: dict[tuple[int, int], np.ndarray] = {}
    provider = scene_flow_provider(params.flow)
    if provider is not None:  # a flow the scene itself defines (modgs-synth's analytic flow: an oracle)
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"modgs: scene flow ({params.flow})", total=len(pairs))
            for i, j in pairs:
                f, vis = provider(meta, float(times[i]), float(times[j]), c2ws[i], c2ws[j], K, W, H)
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


def _align_moving(flows: dict, flow_ok: dict, priors, prior_valid, K, c2ws, params: PairParams, win: int, kind: str):
    """(depth, scales, shifts, valid) of a translating camera, fitted to static points triangulated from
    flow and the poses (ValueError when no frame has enough of them). Disparity priors are fitted to
    the anchors' inverse depth, then inverted."""
    T = len(priors)
    anchors = []
    for i in range(T):
        j = i + win if i + win < T else max(i - win, 0)
        ok = flow_ok[(i, j)] & prior_valid[i]
        anchors.append(triangulate_flow(flows[(i, j)], ok, K, c2ws[i], c2ws[j]))

    def fit(anchors):
        if kind == "disparity":
            disp, a, b, _ = align_to_anchors(priors, prior_valid, [(idx, 1.0 / z) for idx, z in anchors])
            return (*disparity_to_depth(disp, prior_valid, params.disparity_far_ratio), a, b)
        depth, a, b, _ = align_to_anchors(priors, prior_valid, anchors, metric=kind == "metric_depth")
        return depth, prior_valid, a, b

    depth, _, _, _ = fit(anchors)
    # Moving objects' points triangulate wrongly: refit on the anchors the residual test calls static.
    static = static_mask_moving(flows, depth, K, c2ws, params.static_threshold)
    anchors = [(idx[static[i].reshape(-1)[idx]], z[static[i].reshape(-1)[idx]]) for i, (idx, z) in enumerate(anchors)]
    depth, valid, scales, shifts = fit(anchors)
    return depth, scales, shifts, valid


def _invert_with_shift(disp, valid, static, K, ref: int, params: PairParams, frames: int = 12):
    """Aligned disparity -> depth 1 / (disparity + s) with the global shift s given (params) or estimated
    from the dominant planes of up to `frames` frames (all in the reference's disparity units): the median
    of the per-frame estimates, applied only when its standard error is below 5% of the median disparity
    (a prior's warp bends planes differently in each frame, so one frame alone is not enough)."""
    median = float(np.median(disp[ref][valid[ref]])) if valid[ref].any() else 1.0
    ests = []
    for i in np.unique(np.linspace(0, len(disp) - 1, min(frames, len(disp))).round().astype(int)):
        # Depth edges off: the prior blurs disparity across them, and those pixels lie on no plane (with
        # them, the plane fits tilt and the estimate scatters: 5.4% standard error instead of 3.9% on the
        # non-rigid benchmark scene, and 55% off the true shift instead of 26%).
        depth_i, ok_i = disparity_to_depth(disp[i], valid[i], params.disparity_far_ratio)
        planar = ok_i & nonedge_mask(unproject(depth_i, K, np.eye(4)), params.edge_quantile)
        e = disparity_shift_from_planes(
            disp[i], planar & (static if static.ndim == 2 else static[i]), K, seed=params.seed
        )
        if e.confident:
            ests.append(e.shift)
    if len(ests) >= 3:
        est = float(np.median(ests))
        stderr = 1.4826 * float(np.median(np.abs(np.array(ests) - est))) / np.sqrt(len(ests))
        # A median disparity of 0 (a prior that is mostly zero, e.g. a ReLU head's) gives no scale: never confident.
        confident = bool(stderr < 0.05 * abs(median))
        relative = f"{100 * stderr / abs(median):.1f}% of the median disparity" if median != 0 else "median disparity 0"
        detail = f"median of {len(ests)} frames' plane estimates, standard error {relative}"
    else:
        est, confident, detail = 0.0, False, f"dominant orthogonal planes found in {len(ests)} frame(s); 3 needed"
    s = params.disparity_shift if params.disparity_shift is not None else (est if confident else 0.0)
    depth, valid = disparity_to_depth(disp + s, valid, params.disparity_far_ratio)
    source = "given" if params.disparity_shift is not None else ("estimated" if confident else "none (not confident)")
    stats = {
        "estimate": est,
        "estimate_relative": est / median if median != 0 else None,
        "confident": confident,
        "detail": detail,
        "applied": float(s),
        "source": source,
    }
    return depth, valid, stats


def ensure_caches(root: Path, progress: bool = True) -> dict:
    """Rebuild the scene's caches, with the pair parameters recorded in it, unless they are valid for
    its current inputs; says why in one line. Returns build_caches' summary ({} when up to date)."""
    root, meta = load_scene_meta(root)
    validate_scene(root, meta)
    params = pair_params_of(meta)
    why = cache_state(root, cache_key(root, meta, params))
    if not why:
        return {}
    print(
        f"modgs: building flow / depth-alignment / 3D-pair caches in {root / 'caches'} ({why})",
        file=sys.stderr,
        flush=True,
    )
    return build_caches(root, meta, params, progress)


def build_caches(root: Path, meta: dict, params: PairParams, progress: bool = True) -> dict:
    """Compute flows, alignment and pairs; write both caches atomically, keyed on their inputs
    (scene/caches.py). Returns sizes and statistics."""
    imgs, priors, prior_valid, c2ws, K, times, names = _load_frames(root, meta)
    T, H, W = priors.shape
    win = max(1, min(params.window, T - 1))
    offsets = np.array([o for o in range(-win, win + 1) if o != 0])
    flows, flow_ok = compute_flows(imgs, win, params, meta, c2ws, K, times, progress)

    ref = T // 2 if params.reference_frame < 0 else min(params.reference_frame, T - 1)
    motion = camera_motion(c2ws) if params.camera_motion == "auto" else params.camera_motion
    kind = prior_kind(meta)
    depth, shift_stats = None, {}
    if motion == "moving":
        try:
            # Triangulation baseline: 8 frames (MoDGS's window), whatever the pair window; a flow chained
            # over 16 links drifts enough to bias a frame's fitted scale by 10%.
            depth, scales, shifts, prior_valid = _align_moving(
                flows, flow_ok, priors, prior_valid, K, c2ws, params, min(win, 8), kind
            )
        except ValueError as err:
            # Too little parallax to triangulate: treat the motion as a rotation for the alignment.
            print(
                f"modgs: warning: {err}; depth aligned through flow as for a turning camera",
                file=sys.stderr,
                flush=True,
            )
            motion = "moving (aligned as rotation: too little parallax)"
    anchored = depth is not None  # in the poses' units; disparity priors are already inverted
    if motion == "static":
        neighbour = [flows[(i, i + 1)] for i in range(T - 1)] + [flows[(i + 1, i)] for i in range(T - 1)]
        static = static_mask(neighbour, params.static_threshold)
        depth, scales, shifts = align_priors(priors, prior_valid, static, ref)
    elif depth is None:  # a rotation, or a translation too small to triangulate
        # The flow a rotation gives does not depend on depth: any positive depth serves.
        static = static_mask_moving(flows, np.ones_like(priors), K, c2ws, params.static_threshold)
        depth, scales, shifts = align_chain(priors, prior_valid, static, flows, K, c2ws, ref, kind == "disparity")
    if kind == "disparity" and not anchored:
        # Aligned in disparity space to the reference frame; one global shift stays unknown (static camera).
        depth, prior_valid, shift_stats = _invert_with_shift(depth, prior_valid, static, K, ref, params)
    if motion != "static":
        if motion != "rotation":  # a translating camera's flow depends on depth: the final mask uses the aligned one
            static = static_mask_moving(flows, depth, K, c2ws, params.static_threshold)
    # Per-frame moving pixels (flow to a neighbour frame beyond what the camera's motion explains):
    # stage 1 gives them their share of each step's pairs.
    moving = moving_mask(flows, flow_ok, depth, K, c2ws, params.static_threshold, params.moving_offsets)
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

    key = cache_key(root, meta, params)
    DepthCache(
        params_key=key,
        depth=depth,
        valid=valid,
        static=static,
        moving=moving,
        scales=scales,
        shifts=shifts,
        reference=int(ref),
        disparity_shift=shift_stats,
        times=times,
        names=list(names),
        K=K,
        c2w=c2ws,
    ).save(root)
    PairsCache(
        params_key=key, src=src, tgt=tgt, offsets=offsets, counts=counts, uv_scale=uv_scale, params=asdict(params)
    ).save(root)
    return {
        "depth_bytes": (root / DEPTH_CACHE).stat().st_size,
        "pairs_bytes": (root / PAIRS_CACHE).stat().st_size,
        "static_fraction": float(static.mean()),
        "camera_motion": motion,
        "valid_pairs_mean": float(counts[counts > 0].mean()) if (counts > 0).any() else 0.0,
        "prior_kind": kind,
        **({"disparity_shift": shift_stats} if shift_stats else {}),
    }
