"""The flow / alignment / 3D-pair caches: their files, parameters, validity key and typed loaders.

modgs-preprocess (modgs_ns/preprocess/pairs.py) is their only writer, through `DepthCache.save` and
`PairsCache.save`; every reader loads them through `DepthCache.load` / `PairsCache.load`. A cache is valid when its
stored key equals `cache_key(root, meta, params)`: the pair parameters and a content fingerprint of
every input (training images, depth priors, poses, times, intrinsics), so replaced priors or another
scene's caches are never trusted; a truncated or corrupted file fails its zip CRC check on load.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import numpy as np

from modgs_ns.scene.errors import CacheError
from modgs_ns.scene.files import atomic_write
from modgs_ns.scene.format import training_frames
from modgs_ns.scene.geometry import unproject

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
    moving_offsets: tuple[int, ...] = (2, 4, 8)
    """Moving pixels (their own lifespans; their share of stage-1 pairs) are those whose flow to a neighbour
    frame departs from the camera's own by static_threshold, or whose cycle-consistent flow this many frames
    away departs by static_threshold * sqrt(offset): motion under 0.8 px per frame (an object turning in
    place, a textureless interior) shows over several frames. On the generated scenes +-1 alone flagged
    64-70% of the moving pixels, with (2, 4, 8) 89-97%; () = +-1 only. Deviation (MoDGS has no moving mask)."""
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
    disparity_shift: Optional[float] = None
    """Disparity priors, static or turning camera: the global shift s in depth = 1 / (aligned disparity + s),
    in the reference frame's disparity units. None: estimated by making the two dominant planes orthogonal,
    applied only when that estimate is confident (else 0: plain inverse disparity)."""
    disparity_far_ratio: float = 50.0
    """Disparity priors: pixels farther than this many times the frame's median depth (sky, far background)
    are invalid instead of clamped."""
    reference_frame: int = -1
    """Frame the others are aligned to; -1 = the middle frame."""
    seed: int = 0
    """Seed of the source-pixel subsets and of the plane fits."""


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def pair_param_problems(p: PairParams, prefix: str = "--pairs.") -> list[str]:
    """One message per pair parameter that cannot work, naming its flag."""
    checks = [
        ("window", p.window >= 1, "at least 1"),
        ("moving-offsets", all(o >= 2 for o in p.moving_offsets), "frame offsets of at least 2"),
        ("cycle-threshold", _finite(p.cycle_threshold) and p.cycle_threshold > 0, "a positive number of pixels"),
        ("static-threshold", _finite(p.static_threshold) and p.static_threshold > 0, "a positive number of pixels"),
        ("edge-quantile", _finite(p.edge_quantile) and 0 < p.edge_quantile <= 1, "in (0, 1]"),
        ("points-per-frame", p.points_per_frame >= 0, ">= 0 (0 = every valid pixel)"),
        ("disparity-shift", p.disparity_shift is None or _finite(p.disparity_shift), "a finite number"),
        ("disparity-far-ratio", _finite(p.disparity_far_ratio) and p.disparity_far_ratio > 1, "a number above 1"),
        ("reference-frame", p.reference_frame >= -1, "a frame index, or -1 for the middle frame"),
    ]
    return [
        f"{prefix}{name} must be {what} (got {getattr(p, name.replace('-', '_'))!r})"
        for name, ok, what in checks
        if not ok
    ]


def _savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


@dataclass
class DepthCache:
    """`caches/depth.npz`: the aligned depth of every training frame and its masks (sorted by time)."""

    params_key: str
    """`cache_key` of the inputs and parameters it was built from."""
    depth: np.ndarray
    """[T,H,W] float32 aligned depth, in the reconstruction's units."""
    valid: np.ndarray
    """[T,H,W] bool: prior-valid and not a depth edge."""
    static: np.ndarray
    """[H,W] (static camera) or [T,H,W] bool: pixels the alignment treats as static."""
    moving: np.ndarray
    """[T,H,W] bool: pixels that move in their frame."""
    scales: np.ndarray
    """[T] per-frame scale of the alignment."""
    shifts: np.ndarray
    """[T] per-frame shift of the alignment."""
    reference: int
    """Frame the others are aligned to."""
    disparity_shift: dict
    """The static-camera disparity shift's estimate and statistics ({} when none was needed)."""
    times: np.ndarray
    """[T] frame times."""
    names: List[str]
    """[T] image file names."""
    K: np.ndarray
    """[3,3] intrinsics."""
    c2w: np.ndarray
    """[T,4,4] OpenCV camera-to-world poses."""

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(v) for v in self.depth.shape)  # type: ignore[return-value]

    def save(self, root: Path) -> None:
        T, H, W = self.shape
        _savez(
            Path(root) / DEPTH_CACHE,
            params_key=np.array(self.params_key),
            depth=self.depth,
            valid=np.packbits(self.valid, axis=-1),
            static=self.static,
            moving=np.packbits(self.moving, axis=-1),
            scales=self.scales,
            shifts=self.shifts,
            reference=np.array(self.reference),
            disparity_shift=np.array(json.dumps(self.disparity_shift)),
            times=self.times,
            names=np.array(self.names),
            K=self.K,
            c2w=self.c2w,
            shape=np.array([T, H, W]),
        )

    @classmethod
    def load(cls, root: Path) -> "DepthCache":
        with np.load(Path(root) / DEPTH_CACHE) as z:
            W = int(z["shape"][2])
            return cls(
                params_key=str(z["params_key"]),
                depth=z["depth"],
                valid=np.unpackbits(z["valid"], axis=-1, count=W).astype(bool),
                static=z["static"],
                moving=np.unpackbits(z["moving"], axis=-1, count=W).astype(bool),
                scales=z["scales"],
                shifts=z["shifts"],
                reference=int(z["reference"]),
                disparity_shift=json.loads(str(z["disparity_shift"])) if "disparity_shift" in z.files else {},
                times=z["times"],
                names=[str(n) for n in z["names"]],
                K=z["K"],
                c2w=z["c2w"],
            )

    def points(self, i: int) -> np.ndarray:
        """[H,W,3] world points of frame i's aligned depth."""
        return unproject(self.depth[i], self.K, self.c2w[i])

    def bounds(self) -> np.ndarray:
        """[2,3] min and max of the valid aligned-depth points of every frame (world units)."""
        pts = np.concatenate([self.points(i)[self.valid[i]] for i in range(len(self.depth))])
        return np.stack([pts.min(0), pts.max(0)])


@dataclass
class PairsCache:
    """`caches/pairs.npz`: stage 1's 2D correspondences from a fixed subset of source pixels per frame."""

    params_key: str
    """`cache_key` of the inputs and parameters it was built from."""
    src: np.ndarray
    """[T,M] int32 flat pixel index of each frame's source pixels."""
    tgt: np.ndarray
    """[T,O,M,2] int16 target pixel (x, y) x uv_scale in frame i + offsets[o]; UV_INVALID where none."""
    offsets: np.ndarray
    """[O] frame offsets of the targets."""
    counts: np.ndarray
    """[T,T] valid pairs per (source, target) frame."""
    uv_scale: float
    """Fixed-point scale of `tgt`."""
    params: dict
    """The pair parameters (PairParams as a dict)."""

    def save(self, root: Path) -> None:
        _savez(
            Path(root) / PAIRS_CACHE,
            params_key=np.array(self.params_key),
            src=self.src,
            tgt=self.tgt,
            offsets=self.offsets,
            counts=self.counts,
            uv_scale=np.array(self.uv_scale),
            params=np.array(json.dumps(self.params)),
        )

    @classmethod
    def load(cls, root: Path) -> "PairsCache":
        with np.load(Path(root) / PAIRS_CACHE) as z:
            return cls(
                params_key=str(z["params_key"]),
                src=z["src"],
                tgt=z["tgt"],
                offsets=z["offsets"],
                counts=z["counts"],
                uv_scale=float(z["uv_scale"]),
                params=json.loads(str(z["params"])),
            )


def pair_params_of(meta: dict) -> PairParams:
    """The pair parameters recorded in the scene (`modgs.pairs`), defaults for those it leaves out."""
    recorded = meta.get("modgs", {}).get("pairs") or {}
    known = {f.name for f in fields(PairParams)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise CacheError(f"transforms.json modgs.pairs has unknown parameters {unknown}")
    params = PairParams(**recorded)
    problems = pair_param_problems(params, prefix="transforms.json modgs.pairs: ")
    if problems:
        raise CacheError(problems[0])
    return params


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(root: Path, meta: dict, params: PairParams) -> str:
    """Key of everything the caches are computed from: parameters, intrinsics, and per training frame
    its name, time, pose and the content of its image and depth prior."""
    root = Path(root)
    parts: list = [asdict(params), [meta.get(k) for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")]]
    for f in sorted(training_frames(meta), key=lambda f: (float(f["time"]), f["file_path"])):
        files = [root / f["file_path"]] + ([root / f["depth_prior_path"]] if f.get("depth_prior_path") else [])
        digests = [_file_digest(p) if p.is_file() else None for p in files]
        parts.append([f["file_path"], float(f["time"]), f.get("transform_matrix"), digests])
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def caches_valid(root: Path, meta: dict, params: PairParams) -> bool:
    return not cache_state(root, cache_key(root, meta, params))


def cache_state(root: Path, key: str) -> str:
    """'' when both caches hold `key` and read back intact; else why not (one phrase)."""
    for rel in (DEPTH_CACHE, PAIRS_CACHE):
        p = Path(root) / rel
        if not p.is_file():
            return f"{rel} is missing"
        try:
            with np.load(p) as z:
                if str(z["params_key"]) != key:
                    return f"{rel} was built from other inputs or parameters"
                for name in z.files:  # reading every member checks its CRC
                    z[name]
        except Exception:  # truncated, corrupted or foreign (BadZipFile, EOFError, KeyError, ValueError, ...)
            return f"{rel} is unreadable"
    return ""
