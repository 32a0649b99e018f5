"""The scene's file primitives: the one atomic writer and the one image reader."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then a rename: a reader (or a kill mid-write) never
    sees half a file, and a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rgb(path: Path) -> Optional[np.ndarray]:
    """[H,W,3] uint8 RGB image, or None when it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
