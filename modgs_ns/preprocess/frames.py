"""Frames from a video file, an image folder or an `ns-process-data` output, with the original frame
index, a timestamp and (for ns-process-data) the pose.

Video frames are decoded one by one in order, never resampled to a frame rate (phone videos have
irregular timestamps); the timestamp is the container's. Time is normalized to [0, 1] over the kept
frames' timestamps, so uneven spacing is preserved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from modgs_ns.scene.errors import PreprocessError
from modgs_ns.scene.files import read_rgb

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class FrameSet:
    images: list = field(default_factory=list)  # RGB uint8 [H,W,3], after resizing
    source_index: list = field(default_factory=list)  # index of the frame in its source
    timestamps: list = field(default_factory=list)  # seconds
    source_size: tuple = (0, 0)  # (width, height) before resizing
    source_names: list = field(default_factory=list)  # file names for image inputs
    poses: Optional[list] = None  # 4x4 camera-to-world (nerfstudio convention), ns-process-data only
    intrinsics: Optional[dict] = None  # fl_x, fl_y, cx, cy at the source size, ns-process-data only

    def times(self) -> np.ndarray:
        ts = np.asarray(self.timestamps, dtype=np.float64)
        span = ts[-1] - ts[0] if len(ts) > 1 else 0.0
        return (ts - ts[0]) / span if span > 0 else np.zeros_like(ts)


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Keep the aspect ratio, longest side at most max_side (0 = unchanged), even sizes."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def read_video(
    path: Path, stride: int = 1, max_frames: int = 0, max_side: int = 480, progress: Optional[Callable] = None
) -> FrameSet:
    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PreprocessError(f"cannot open video {path} (not a video OpenCV can decode)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    out = FrameSet()
    stamps, i = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if i % stride == 0:
                if not out.images:
                    out.source_size = (frame.shape[1], frame.shape[0])
                    size = target_size(frame.shape[1], frame.shape[0], max_side)
                out.images.append(_resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size))
                out.source_index.append(i)
                stamps.append(stamp)
                if progress:
                    progress()
                if max_frames and len(out.images) >= max_frames:
                    break
            i += 1
    finally:
        cap.release()
    if not out.images:
        raise PreprocessError(f"no frames could be decoded from {path}")
    stamps = np.asarray(stamps)
    # Containers without usable timestamps report 0 or non-increasing values: fall back to index / fps.
    if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
        stamps = np.asarray(out.source_index, dtype=np.float64) / (fps if fps > 0 else 30.0)
    out.timestamps = stamps.tolist()
    return out


def _read_image(path: Path) -> np.ndarray:
    img = read_rgb(path)
    if img is None:
        raise PreprocessError(f"cannot read image {path}")
    return img


def read_image_folder(
    path: Path,
    stride: int = 1,
    max_frames: int = 0,
    max_side: int = 480,
    fps: float = 30.0,
    progress: Optional[Callable] = None,
) -> FrameSet:
    path = Path(path)
    if not path.is_dir():
        raise PreprocessError(f"image folder {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise PreprocessError(f"no images ({', '.join(IMAGE_EXTS)}) in {path}")
    return _frames_from_files(files, stride, max_frames, max_side, fps, progress)


def _frames_from_files(files, stride, max_frames, max_side, fps, progress) -> FrameSet:
    out = FrameSet()
    for i, f in enumerate(files):
        if i % stride:
            continue
        img = _read_image(f)
        if not out.images:
            out.source_size = (img.shape[1], img.shape[0])
            size = target_size(img.shape[1], img.shape[0], max_side)
        elif (img.shape[1], img.shape[0]) != out.source_size:
            raise PreprocessError(
                f"{f} is {img.shape[1]}x{img.shape[0]}, the first image is {out.source_size[0]}x{out.source_size[1]}"
            )
        out.images.append(_resize(img, size))
        out.source_index.append(i)
        out.source_names.append(f.name)
        out.timestamps.append(i / fps)
        if progress:
            progress()
        if max_frames and len(out.images) >= max_frames:
            break
    return out


def read_nerfstudio_data(
    path: Path,
    stride: int = 1,
    max_frames: int = 0,
    max_side: int = 480,
    fps: float = 30.0,
    progress: Optional[Callable] = None,
) -> FrameSet:
    """An `ns-process-data` output (transforms.json + images): its poses and intrinsics are kept;
    frames are ordered by file name (ns-process-data video names them frame_00001.png, ...)."""
    path = Path(path)
    tf = path / "transforms.json"
    if not tf.is_file():
        raise PreprocessError(f"no transforms.json in {path} (expected an ns-process-data output)")
    try:
        meta = json.loads(tf.read_text())
    except json.JSONDecodeError as err:
        raise PreprocessError(f"{tf} is not valid JSON ({err})") from None
    frames = sorted(meta.get("frames", []), key=lambda f: f["file_path"])
    if not frames:
        raise PreprocessError(f"{tf} lists no frames")
    files = [path / f["file_path"] for f in frames]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise PreprocessError(f"{tf} lists {missing[0]}, which does not exist")
    out = _frames_from_files(files, stride, max_frames, max_side, fps, progress)
    by_name = {Path(f["file_path"]).name: f for f in frames}
    out.poses = [np.array(by_name[n]["transform_matrix"], dtype=np.float64) for n in out.source_names]
    first = frames[0]
    get = lambda k: first.get(k, meta.get(k))  # noqa: E731  (per-frame or shared intrinsics)
    if get("fl_x") is None:
        raise PreprocessError(f"{tf} has no intrinsics (fl_x, fl_y, cx, cy)")
    out.intrinsics = {k: float(get(k)) for k in ("fl_x", "fl_y", "cx", "cy")}
    return out
