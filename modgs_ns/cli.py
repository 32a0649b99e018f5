"""What only command edges do: turn modgs's typed errors into one line and an exit code, and provide
an ffmpeg to the command that writes video.

Used by the modgs-* entry points and by the two objects through which nerfstudio's ns-* commands
enter modgs (ModgsTrainer for ns-train, ModgsPipeline for every command that builds a run)."""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from modgs_ns.scene.errors import ModgsError


@contextmanager
def one_line_errors(prog: str, also: tuple[type[BaseException], ...] = ()):
    """Run the body; a ModgsError (or one of `also`) prints `prog: error: message` and exits with 1."""
    try:
        yield
    except (ModgsError, *also) as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


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
