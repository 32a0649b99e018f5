"""modgs-preprocess's steps: frames -> depth prior -> caches (flow, alignment, 3D pairs) -> diagnostics.

Each step's result is recorded in `preprocess_state.json` under a key of its inputs and parameters;
a re-run skips a step whose key matches and whose files are all there (`force` recomputes). Steps
write into a temporary folder that replaces the old one only when complete, and the state file is
written (atomically) last, so an interrupted run never leaves output that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modgs_ns.data.scene_format import write_ply_points
from modgs_ns.preprocess.align import unproject
from modgs_ns.preprocess.depth import FolderDepth, TransformersDepth
from modgs_ns.preprocess.frames import (IMAGE_EXTS, FrameSet, PreprocessError, read_image_folder, read_nerfstudio_data,
                                       read_video)
from modgs_ns.preprocess.pairs import DEPTH_CACHE, PAIRS_CACHE, PairParams, build_caches, caches_valid

STATE = "preprocess_state.json"
CONSOLE = Console(stderr=True, soft_wrap=True)  # messages stay one line


@dataclass
class PreprocessConfig:
    output_dir: Path
    video: Optional[Path] = None
    images: Optional[Path] = None
    nerfstudio_data: Optional[Path] = None
    stride: int = 1
    max_frames: int = 0
    max_side: int = 480
    fps: float = 30.0
    fov_deg: float = 60.0
    fx: Optional[float] = None
    fy: Optional[float] = None
    cx: Optional[float] = None
    cy: Optional[float] = None
    poses: Optional[Literal["static", "given", "colmap", "rotation"]] = None
    """Camera poses. static: identity (a tripod video, the released MoDGS setting); given: the input's
    transforms.json (--nerfstudio-data); colmap: structure from motion with pycolmap (a moving camera);
    rotation: rotations from feature matches between neighbouring frames (a camera that only turns).
    Default: given for --nerfstudio-data, static otherwise."""
    pose_fallback: bool = True
    """When structure from motion fails (little parallax), fall back to rotation-only poses (with a
    warning) instead of stopping."""
    dynamic_masks: Optional[Path] = None
    """Folder of masks, one per source frame in name order, non-zero where things move: kept out of
    feature matching for the poses."""
    depth_model: Optional[Path] = None
    depth_dir: Optional[Path] = None
    depth_scale: float = 1.0
    depth_kind: Literal["relative", "metric"] = "relative"
    disparity_offset: float = 0.05
    pairs: PairParams = field(default_factory=PairParams)
    eval_every: int = 8
    seed_points: int = 20000
    diagnostics: bool = True
    force: bool = False


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_key(path: Path) -> list:
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [str(p.resolve())] + sorted([q.name, q.stat().st_size, q.stat().st_mtime_ns] for q in p.iterdir() if q.is_file())
    return [str(p)]


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=CONSOLE)


def _check_writable(out: Path) -> bool:
    """Creates out if needed; returns whether it was created. One-line error if it cannot be written."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PreprocessError(f"cannot write to output folder {out} ({err.strerror or err})") from None
    return created


def run(cfg: PreprocessConfig) -> dict:
    sources = [s for s in (cfg.video, cfg.images, cfg.nerfstudio_data) if s is not None]
    if len(sources) != 1:
        raise PreprocessError("give exactly one input: --video FILE, --images FOLDER or --nerfstudio-data FOLDER")
    if (cfg.depth_model is None) == (cfg.depth_dir is None):
        raise PreprocessError(
            "give exactly one depth prior: --depth-model DIR (a transformers depth model, e.g. Depth Anything V2, "
            "downloaded beforehand) or --depth-dir DIR (precomputed or sensor depth)"
        )
    if cfg.stride < 1:
        raise PreprocessError("--stride must be >= 1")
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise PreprocessError(f"output {out} exists and is not a folder")
    created = _check_writable(out)
    try:
        return _run(cfg, out)
    except BaseException:
        # Nothing half-written: a folder this run created goes entirely; in an existing folder the
        # temporary step folders go and the state file still describes the last complete steps.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for p in out.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise


def _run(cfg: PreprocessConfig, out: Path) -> dict:
    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() and not cfg.force else {}
    timings: dict[str, float] = {}
    source = cfg.video or cfg.images or cfg.nerfstudio_data

    # 1. frames -------------------------------------------------------------------------------
    frames_key = _key("frames", _source_key(source), cfg.stride, cfg.max_frames, cfg.max_side, cfg.fps,
                      "video" if cfg.video else "images" if cfg.images else "nerfstudio")
    t0 = time.time()
    fs: Optional[FrameSet] = None
    meta_frames = state.get("frames", {})
    if meta_frames.get("key") == frames_key and all((out / "images" / n).is_file() for n in meta_frames.get("names", [])):
        CONSOLE.print(f"modgs-preprocess: frames up to date ({len(meta_frames['names'])}), skipped")
        names = meta_frames["names"]
    else:
        with _progress() as bar:
            task = bar.add_task("decoding frames", total=cfg.max_frames or None)
            tick = lambda: bar.advance(task)  # noqa: E731
            if cfg.video:
                fs = read_video(cfg.video, cfg.stride, cfg.max_frames, cfg.max_side, tick)
            elif cfg.images:
                fs = read_image_folder(cfg.images, cfg.stride, cfg.max_frames, cfg.max_side, cfg.fps, tick)
            else:
                fs = read_nerfstudio_data(cfg.nerfstudio_data, cfg.stride, cfg.max_frames, cfg.max_side, cfg.fps, tick)
        if len(fs.images) < 2:
            raise PreprocessError(f"only {len(fs.images)} frame(s) from {source}: a video needs at least 2")
        names = [f"frame_{k:05d}.png" for k in range(len(fs.images))]
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-images-"))
        for n, img in zip(names, fs.images):
            cv2.imwrite(str(tmp / n), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        _replace_dir(tmp, out / "images")
        meta_frames = {
            "key": frames_key, "names": names, "source_index": fs.source_index, "timestamps": fs.timestamps,
            "times": fs.times().tolist(), "size": [fs.images[0].shape[1], fs.images[0].shape[0]],
            "source_size": list(fs.source_size), "poses": None if fs.poses is None else [p.tolist() for p in fs.poses],
            "intrinsics": fs.intrinsics, "source": str(source),
        }
        state = {"frames": meta_frames}  # later steps depend on the frames: recompute them
        _write_json_atomic(state_path, state)
    timings["frames"] = time.time() - t0
    W, H = meta_frames["size"]

    # 2. camera poses --------------------------------------------------------------------------
    pose_mode = cfg.poses or ("given" if cfg.nerfstudio_data else "static")
    if pose_mode == "given" and not meta_frames.get("poses"):
        raise PreprocessError("--poses given needs an input with poses (--nerfstudio-data FOLDER with a transforms.json)")
    poses_key = _key("poses", frames_key, pose_mode, cfg.pose_fallback, _source_key(cfg.dynamic_masks) if cfg.dynamic_masks else None,
                     cfg.fov_deg, cfg.fx, cfg.fy, cfg.cx, cfg.cy)
    t0 = time.time()
    if state.get("poses", {}).get("key") == poses_key:
        CONSOLE.print(f"modgs-preprocess: poses up to date ({state['poses']['method']}), skipped")
    else:
        K = _intrinsics(cfg, meta_frames, W, H)
        c2w, method = _estimate_poses(cfg, pose_mode, out, names, fs, meta_frames, K)
        # The depth prior does not depend on the poses (it stays valid); the caches do.
        state = {k: v for k, v in state.items() if k in ("frames", "depth")}
        state["poses"] = {"key": poses_key, "method": method, "c2w": c2w.tolist()}
        _write_json_atomic(state_path, state)
    timings["poses"] = time.time() - t0
    poses_state = state["poses"]

    # 3. depth prior ----------------------------------------------------------------------------
    if cfg.depth_model is not None:
        dsrc = ["model", _source_key(Path(cfg.depth_model) / "config.json"), cfg.disparity_offset]
    else:
        dsrc = ["folder", _source_key(cfg.depth_dir), cfg.depth_scale, cfg.depth_kind]
    depth_key = _key("depth", frames_key, dsrc)
    t0 = time.time()
    if state.get("depth", {}).get("key") == depth_key and all((out / "depth_prior" / n.replace(".png", ".npy")).is_file() for n in names):
        CONSOLE.print("modgs-preprocess: depth prior up to date, skipped")
        depth_kind = state["depth"]["kind"]
    else:
        if cfg.depth_model is not None:
            backend = TransformersDepth(cfg.depth_model, disparity_offset=cfg.disparity_offset)
        else:
            backend = FolderDepth(
                cfg.depth_dir, meta_frames["source_index"], _count_source(cfg, meta_frames), (W, H),
                tuple(meta_frames["source_size"]), cfg.depth_scale, f"{cfg.depth_kind}_depth",
            )
        depth_kind = backend.kind
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-depth-"))
        with _progress() as bar:
            task = bar.add_task(f"depth prior ({'model' if cfg.depth_model else 'folder'})", total=len(names))
            for k, n in enumerate(names):
                rgb = fs.images[k] if fs is not None else _read_frame(out, n)
                np.save(tmp / n.replace(".png", ".npy"), backend(rgb, k).astype(np.float32))
                bar.advance(task)
        _replace_dir(tmp, out / "depth_prior")
        state = {"frames": meta_frames, "poses": poses_state, "depth": {"key": depth_key, "kind": depth_kind}}
        _write_json_atomic(state_path, state)
    timings["depth"] = time.time() - t0

    # 4. scene file, seed points and caches ----------------------------------------------------------
    meta = _scene_meta(cfg, meta_frames, poses_state, depth_kind, W, H)
    _write_json_atomic(out / "transforms.json", meta)
    t0 = time.time()
    caches_key = _key("caches", depth_key, poses_key, cfg.pairs.key())
    if state.get("caches", {}).get("key") == caches_key and caches_valid(out, cfg.pairs):
        CONSOLE.print("modgs-preprocess: flow / alignment / 3D-pair caches up to date, skipped")
        stats = state["caches"].get("stats", {})
    else:
        for rel in (DEPTH_CACHE, PAIRS_CACHE):
            (out / rel).unlink(missing_ok=True)
        stats = build_caches(out, meta, cfg.pairs)
        _write_seed_points(out, meta, cfg.seed_points)
        state["caches"] = {"key": caches_key, "stats": stats}
        _write_json_atomic(state_path, state)
    timings["caches"] = time.time() - t0

    # 5. diagnostics ------------------------------------------------------------------------------
    t0 = time.time()
    if cfg.diagnostics:
        from modgs_ns.preprocess.diagnostics import write_diagnostics

        write_diagnostics(out, out / "diagnostics.png", cfg.pairs)
    timings["diagnostics"] = time.time() - t0
    meta["modgs"]["preprocess"]["timings_s"] = timings
    meta["modgs"]["preprocess"]["caches"] = stats
    _write_json_atomic(out / "transforms.json", meta)
    return {"frames": len(names), "size": (W, H), "timings": timings, "caches": stats, "depth_kind": depth_kind,
            "poses": poses_state["method"]}


def _read_frame(out: Path, name: str) -> np.ndarray:
    """A frame written by the frames step (RGB), when that step was skipped on a re-run."""
    return cv2.cvtColor(cv2.imread(str(out / "images" / name)), cv2.COLOR_BGR2RGB)


def _count_source(cfg: PreprocessConfig, meta_frames: dict) -> Optional[int]:
    """Frames in the source (to match a depth folder holding one file per source frame)."""
    if cfg.video:
        cap = cv2.VideoCapture(str(cfg.video))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return n if n > 0 else None
    src = Path(cfg.images or cfg.nerfstudio_data)
    if cfg.images:
        return sum(1 for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return len(json.loads((src / "transforms.json").read_text()).get("frames", []))


def _intrinsics(cfg: PreprocessConfig, mf: dict, W: int, H: int) -> np.ndarray:
    """K of the written (resized) frames: from the input's transforms.json, or --fx/--fy/--cx/--cy
    (source pixels), or --fov-deg."""
    sw, sh = mf["source_size"]
    if mf.get("intrinsics"):
        k = mf["intrinsics"]
        fx, fy, cx, cy = k["fl_x"] * W / sw, k["fl_y"] * H / sh, k["cx"] * W / sw, k["cy"] * H / sh
    else:
        f = 0.5 * W / np.tan(np.radians(cfg.fov_deg) / 2)
        fx = cfg.fx * W / sw if cfg.fx else f
        fy = cfg.fy * H / sh if cfg.fy else fx
        cx = cfg.cx * W / sw if cfg.cx is not None else W / 2
        cy = cfg.cy * H / sh if cfg.cy is not None else H / 2
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _estimate_poses(cfg: PreprocessConfig, mode: str, out: Path, names: list, fs: Optional[FrameSet], mf: dict,
                    K: np.ndarray) -> tuple[np.ndarray, str]:
    T = len(names)
    if mode == "static":
        return np.tile(np.eye(4), (T, 1, 1)), "static (identity poses)"
    if mode == "given":
        return np.array(mf["poses"], dtype=np.float64), "given (input transforms.json)"
    from modgs_ns.preprocess import poses as P

    images = fs.images if fs is not None else [_read_frame(out, n) for n in names]
    masks = _read_dynamic_masks(cfg.dynamic_masks, mf, images[0].shape[1], images[0].shape[0]) if cfg.dynamic_masks else None
    if mode == "colmap":
        CONSOLE.print(f"modgs-preprocess: structure from motion (pycolmap, CPU) on {T} frames")
        try:
            return P.colmap_poses(images, K, masks, workdir=out), "colmap (pycolmap)"
        except P.PoseError as err:
            if not cfg.pose_fallback:
                raise
            CONSOLE.print(f"modgs-preprocess: warning: {err}; falling back to rotation-only poses")
            reason = f"rotation-only fallback ({err})"
    else:
        reason = "rotation-only"
    static = None if masks is None else [~m for m in masks]
    return P.rotation_poses(images, K, static, reference=T // 2), reason


def _read_dynamic_masks(folder: Path, mf: dict, W: int, H: int) -> list:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (*IMAGE_EXTS, ".npy"))
    need = max(mf["source_index"]) + 1
    if len(files) < need:
        raise PreprocessError(f"--dynamic-masks {folder} has {len(files)} masks; the frames need {need} (one per source frame)")
    out = []
    for k in mf["source_index"]:
        p = files[k]
        m = np.load(p) if p.suffix == ".npy" else cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise PreprocessError(f"cannot read mask {p}")
        out.append(cv2.resize((m > 0).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool))
    return out


def _scene_meta(cfg: PreprocessConfig, mf: dict, poses: dict, depth_kind: str, W: int, H: int) -> dict:
    K = _intrinsics(cfg, mf, W, H)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    frames = []
    for k, n in enumerate(mf["names"]):
        pose = poses["c2w"][k]
        frames.append({
            "file_path": f"images/{n}", "depth_prior_path": f"depth_prior/{n.replace('.png', '.npy')}",
            "time": mf["times"][k], "frame_index": k, "source_frame_index": mf["source_index"][k],
            "timestamp": mf["timestamps"][k], "camera": "train", "transform_matrix": pose,
        })
    # A monocular video has no held-out camera: val/test are every eval_every-th training view.
    held = [f"images/{n}" for n in mf["names"][:: max(1, cfg.eval_every)]]
    return {
        "camera_model": "OPENCV", "w": W, "h": H, "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": frames,
        "train_filenames": [f"images/{n}" for n in mf["names"]], "val_filenames": held, "test_filenames": held,
        "ply_file_path": "points3d.ply",
        "modgs": {
            "format_version": 1, "source": "modgs-preprocess", "num_frames": len(frames),
            "depth_prior": {"dir": "depth_prior", "format": "npy", "kind": depth_kind},
            "seed_points": "points3d.ply", "caches": {},
            "preprocess": {"input": mf["source"], "stride": cfg.stride, "max_side": cfg.max_side,
                           "camera": poses["method"],
                           "pairs": asdict(cfg.pairs)},
        },
    }


def _write_seed_points(out: Path, meta: dict, n: int) -> None:
    """Seed Gaussians from the aligned depth of the first frame (replaced at the canonical init)."""
    with np.load(out / DEPTH_CACHE) as z:
        depth, K, c2w, names = z["depth"][0], z["K"], z["c2w"][0], [str(x) for x in z["names"]]
    img = cv2.cvtColor(cv2.imread(str(out / "images" / names[0])), cv2.COLOR_BGR2RGB)
    pts = unproject(depth, K, c2w).reshape(-1, 3)
    ok = np.flatnonzero(np.isfinite(pts).all(-1) & (depth.reshape(-1) > 0))
    pick = np.random.default_rng(0).choice(ok, size=min(n, len(ok)), replace=False)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".tmp-points-", suffix=".ply")
    os.close(fd)
    write_ply_points(Path(tmp), pts[pick], img.reshape(-1, 3)[pick])
    os.replace(tmp, out / "points3d.ply")
