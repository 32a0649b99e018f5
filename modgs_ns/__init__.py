"""modgs-ns: MoDGS as a nerfstudio plugin.

Every ns-* command imports this package (through the plugin entry points) before it loads a
checkpoint, so the torch>=2.6 `weights_only` shim lives here: nerfstudio 1.1.5 checkpoints hold
numpy scalars (scheduler state) that the safe unpickler rejects (nerfstudio issue #3683).
"""

import numpy as _np
import torch as _torch


def _allow_numpy_in_checkpoints() -> None:
    add = getattr(_torch.serialization, "add_safe_globals", None)
    if add is None:
        return
    safe = [_np.dtype, type(_np.dtype(_np.float64)), type(_np.dtype(_np.float32)), type(_np.dtype(_np.int64))]
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
            safe.append(mod.scalar)
        except (ImportError, AttributeError):
            pass
    add(safe)


_allow_numpy_in_checkpoints()


def _provide_ffmpeg() -> None:
    """nerfstudio's ns-render (mediapy) needs an `ffmpeg` on PATH. When the system has none, use the
    static binary of the imageio-ffmpeg wheel (a dependency), linked as `ffmpeg` in a cache folder."""
    import os
    import shutil
    from pathlib import Path

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


_provide_ffmpeg()
