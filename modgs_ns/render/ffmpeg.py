"""An `ffmpeg` for nerfstudio's video writer, for the commands that write video (ns-render)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def provide_ffmpeg() -> None:
    """nerfstudio's ns-render (mediapy) needs an `ffmpeg` on PATH. When the system has none, use the
    static binary of the imageio-ffmpeg wheel (a dependency), linked as `ffmpeg` in a cache folder."""
    if shutil.which("ffmpeg") is not None:
        return
    try:
        import imageio_ffmpeg

        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
        bin_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modgs_ns" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        link = bin_dir / "ffmpeg"
        if not link.exists() or link.resolve() != exe.resolve():
            tmp = bin_dir / f".ffmpeg.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(exe)
            os.replace(tmp, link)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    except Exception:  # no wheel, read-only home: ns-render will say ffmpeg is missing, as before
        pass
