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
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modgs_ns.preprocess import steps as S
from modgs_ns.preprocess.config import PreprocessConfig
from modgs_ns.preprocess.depth import FolderDepth, TransformersDepth
from modgs_ns.preprocess.frames import FrameSet, read_image_folder, read_nerfstudio_data, read_video
from modgs_ns.preprocess.pairs import build_caches
from modgs_ns.preprocess.steps import CONSOLE
from modgs_ns.scene.caches import DEPTH_CACHE, PAIRS_CACHE, cache_key, cache_state
from modgs_ns.scene.errors import PreprocessError
from modgs_ns.scene.format import writable_dir_problem, write_json_atomic, write_scene

STATE = "preprocess_state.json"
STAGE = ".staging"


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_key(path: Path) -> list:
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [str(p.resolve())] + sorted(
            [q.name, q.stat().st_size, q.stat().st_mtime_ns] for q in p.iterdir() if q.is_file()
        )
    return [str(p)]


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=CONSOLE
    )


SCENE_ENTRIES = ("images", "depth_prior", "caches", "transforms.json", "points3d.ply", "diagnostics.png", STATE)


class PreprocessInterrupted(KeyboardInterrupt):
    """Ctrl-C during preprocessing; `kept` names the finished steps, kept for the next run."""

    def __init__(self, kept: list[str]):
        super().__init__(", ".join(kept))
        self.kept = kept


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _clean_stale(folder: Path) -> None:
    """What a killed run left: temporary step folders and files, half-written caches, old swapped-out folders."""
    for pattern in (".tmp-*", ".old-*", ".probe.*", f".{STATE}.*", ".transforms.json.*", "caches/.*.npz"):
        for p in folder.glob(pattern):
            _remove(p)


def _link_scene(out: Path, stage: Path) -> None:
    """Stage = the current scene's files, hard-linked (copied where links fail): steps whose inputs are
    unchanged are reused from it, the others replace their files in the stage only."""
    stage.mkdir(parents=True, exist_ok=True)
    for name in SCENE_ENTRIES:
        src = out / name
        files = sorted(src.iterdir()) if src.is_dir() else [src] if src.is_file() else []
        for f in files:
            dst = stage / f.relative_to(out)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dst)
            except OSError:
                shutil.copy2(f, dst)


def _commit(stage: Path, out: Path) -> None:
    """Move the staged scene into place: folders by rename, files by atomic replace, the state file last,
    so the scene's frames, priors, transforms.json and caches change together."""
    for name in SCENE_ENTRIES[:-1]:
        new, dst = stage / name, out / name
        if dst.is_dir():
            os.rename(dst, out / f".old-{name}")
        if new.exists():
            os.replace(new, dst)
        elif dst.is_file():
            dst.unlink()
    os.replace(stage / STATE, out / STATE)
    _clean_stale(out)
    shutil.rmtree(stage, ignore_errors=True)


def _completed_steps(stage: Path) -> list[str]:
    state_path = stage / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    labels = {"frames": "frames", "poses": "camera poses", "depth": "depth prior", "caches": "caches"}
    return [labels[k] for k in labels if k in state]


def _check_writable(out: Path) -> bool:
    """Creates out if needed; returns whether it was created. One-line error if it cannot be written."""
    created = not out.exists()
    problem = writable_dir_problem(out, "output folder")
    if problem:
        raise PreprocessError(problem)
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
    cfg.validate()
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise PreprocessError(f"output {out} exists and is not a folder")
    created = _check_writable(out)
    # Every step works in out/.staging; the scene in `out` changes only when all of them are done
    # (_commit), so a failure or a kill never leaves its files mutually inconsistent, and finished steps
    # stay in the stage for the next run with the same inputs.
    stage = out / STAGE
    _clean_stale(out)
    if not (stage / STATE).is_file():
        shutil.rmtree(stage, ignore_errors=True)
        _link_scene(out, stage)
    _clean_stale(stage)
    try:
        result = _run(cfg, stage)
        _commit(stage, out)
        return result
    except BaseException as err:
        # An interrupt keeps the finished steps (in a new folder too); a failure in a folder this run
        # created removes it (nothing half-written), in an existing scene it keeps them for the re-run.
        _clean_stale(stage)
        kept = _completed_steps(stage)
        interrupted = isinstance(err, KeyboardInterrupt)
        if not kept or (created and not interrupted):
            shutil.rmtree(out if created else stage, ignore_errors=True)
        if interrupted and not isinstance(err, PreprocessInterrupted):
            raise PreprocessInterrupted(kept) from None
        raise


def _run(cfg: PreprocessConfig, out: Path) -> dict:
    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() and not cfg.force else {}
    timings: dict[str, float] = {}
    source = cfg.video or cfg.images or cfg.nerfstudio_data

    # 1. frames -------------------------------------------------------------------------------
    frames_key = _key(
        "frames",
        _source_key(source),
        cfg.stride,
        cfg.max_frames,
        cfg.max_side,
        cfg.fps,
        "video" if cfg.video else "images" if cfg.images else "nerfstudio",
    )
    t0 = time.time()
    fs: Optional[FrameSet] = None
    meta_frames = state.get("frames", {})
    if meta_frames.get("key") == frames_key and all(
        (out / "images" / n).is_file() for n in meta_frames.get("names", [])
    ):
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
            "key": frames_key,
            "names": names,
            "source_index": fs.source_index,
            "timestamps": fs.timestamps,
            "times": fs.times().tolist(),
            "size": [fs.images[0].shape[1], fs.images[0].shape[0]],
            "source_size": list(fs.source_size),
            "poses": None if fs.poses is None else [p.tolist() for p in fs.poses],
            "intrinsics": fs.intrinsics,
            "source": str(source),
        }
        state = {"frames": meta_frames}  # later steps depend on the frames: recompute them
        write_json_atomic(state_path, state)
    timings["frames"] = time.time() - t0
    W, H = meta_frames["size"]

    # 2. camera poses --------------------------------------------------------------------------
    pose_mode = cfg.poses or ("given" if cfg.nerfstudio_data else "static")
    if pose_mode == "given" and not meta_frames.get("poses"):
        raise PreprocessError(
            "--poses given needs an input with poses (--nerfstudio-data FOLDER with a transforms.json)"
        )
    poses_key = _key(
        "poses",
        frames_key,
        pose_mode,
        cfg.pose_fallback,
        _source_key(cfg.dynamic_masks) if cfg.dynamic_masks else None,
        cfg.fov_deg,
        cfg.fx,
        cfg.fy,
        cfg.cx,
        cfg.cy,
    )
    t0 = time.time()
    if state.get("poses", {}).get("key") == poses_key:
        CONSOLE.print(f"modgs-preprocess: poses up to date ({state['poses']['method']}), skipped")
    else:
        K = S.intrinsics(cfg, meta_frames, W, H)
        c2w, method = S.estimate_poses(cfg, pose_mode, out, names, fs, meta_frames, K)
        # The depth prior does not depend on the poses (it stays valid); the caches do.
        state = {k: v for k, v in state.items() if k in ("frames", "depth")}
        state["poses"] = {"key": poses_key, "method": method, "c2w": c2w.tolist()}
        write_json_atomic(state_path, state)
    timings["poses"] = time.time() - t0
    poses_state = state["poses"]

    # 3. depth prior ----------------------------------------------------------------------------
    if cfg.depth_model is not None:
        dsrc = ["model", _source_key(Path(cfg.depth_model) / "config.json")]
    else:
        dsrc = ["folder", _source_key(cfg.depth_dir), cfg.depth_scale, cfg.depth_kind]
    depth_key = _key("depth", frames_key, dsrc)
    t0 = time.time()
    if state.get("depth", {}).get("key") == depth_key and all(
        (out / "depth_prior" / n.replace(".png", ".npy")).is_file() for n in names
    ):
        CONSOLE.print("modgs-preprocess: depth prior up to date, skipped")
        depth_kind = state["depth"]["kind"]
    else:
        if cfg.depth_model is not None:
            backend = TransformersDepth(cfg.depth_model)
        else:
            backend = FolderDepth(
                cfg.depth_dir,
                meta_frames["source_index"],
                S.count_source(cfg, meta_frames),
                (W, H),
                tuple(meta_frames["source_size"]),
                cfg.depth_scale,
                {"relative": "relative_depth", "metric": "metric_depth"}.get(cfg.depth_kind, cfg.depth_kind),
            )
        depth_kind = backend.kind
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-depth-"))
        with _progress() as bar:
            task = bar.add_task(f"depth prior ({'model' if cfg.depth_model else 'folder'})", total=len(names))
            for k, n in enumerate(names):
                rgb = fs.images[k] if fs is not None else S.read_frame(out, n)
                np.save(tmp / n.replace(".png", ".npy"), backend(rgb, k).astype(np.float32))
                bar.advance(task)
        _replace_dir(tmp, out / "depth_prior")
        state = {"frames": meta_frames, "poses": poses_state, "depth": {"key": depth_key, "kind": depth_kind}}
        write_json_atomic(state_path, state)
    timings["depth"] = time.time() - t0

    # 4. scene file, seed points and caches ----------------------------------------------------------
    meta = S.scene_meta(cfg, meta_frames, poses_state, depth_kind, W, H)
    write_scene(out, meta)
    t0 = time.time()
    caches_key = cache_key(out, meta, cfg.pairs)
    if state.get("caches", {}).get("key") == caches_key and not cache_state(out, caches_key):
        CONSOLE.print("modgs-preprocess: flow / alignment / 3D-pair caches up to date, skipped")
        stats = state["caches"].get("stats", {})
    else:
        for rel in (DEPTH_CACHE, PAIRS_CACHE):
            (out / rel).unlink(missing_ok=True)
        stats = build_caches(out, meta, cfg.pairs)
        S.write_seed_points(out, meta, cfg.seed_points)
        state["caches"] = {"key": caches_key, "stats": stats}
        write_json_atomic(state_path, state)
    timings["caches"] = time.time() - t0

    # 5. diagnostics ------------------------------------------------------------------------------
    t0 = time.time()
    if cfg.diagnostics:
        from modgs_ns.preprocess.diagnostics import write_diagnostics

        write_diagnostics(out, out / "diagnostics.png", cfg.pairs)
    timings["diagnostics"] = time.time() - t0
    meta["modgs"]["preprocess"]["timings_s"] = timings
    meta["modgs"]["preprocess"]["caches"] = stats
    write_scene(out, meta)
    return {
        "frames": len(names),
        "size": (W, H),
        "timings": timings,
        "caches": stats,
        "depth_kind": depth_kind,
        "poses": poses_state["method"],
    }
