"""Real sample sequences that ship in Debian packages, fetched once with `apt-get download` into
~/.cache/modgs_ns/test-data (no root needed, nothing installed):

- `vtest.avi` (opencv-doc): a static-camera street clip with walkers;
- `castel` (visp-images-data): 30 frames from a handheld Intel RealSense SR300 around a tabletop
  castle, 640x480 grey images and raw depth, with both cameras' intrinsics and the depth-to-colour
  extrinsic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VISP_CASTEL = "./usr/share/visp-images-data/ViSP-images/mbt-depth/castel"


class SampleUnavailable(RuntimeError):
    """The package could not be fetched (offline, not Debian)."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modgs_ns" / "test-data"


def fetch_from_deb(package: str, member: str, target: Path) -> Path:
    """Extract `member` (a file or folder inside the .deb) to `target`, downloading the package once."""
    if target.exists():
        return target
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SampleUnavailable(f"{package} needs apt-get and dpkg-deb (Debian)")
    work = target.parent / f".download-{package}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        r = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900)
            r = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True, timeout=900)
        debs = list(work.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not debs:
            raise SampleUnavailable(f"could not apt-get download {package}: {r.stderr.strip()[-200:]}")
        # dpkg-deb | tar as two processes: no shell, so paths are never parsed as commands.
        deb = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", str(work), member], stdin=deb.stdout, capture_output=True, text=True)
        deb.stdout.close()
        deb.wait()
        src = work / member
        if tar.returncode != 0 or not src.exists():
            raise SampleUnavailable(f"{package} has no {member}: {tar.stderr.strip()[-200:]}")
        os.replace(src, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def vtest_video() -> Path:
    return fetch_from_deb("opencv-doc", "./usr/share/doc/opencv-doc/examples/data/vtest.avi", cache_dir() / "vtest.avi")


@dataclass
class CastelSequence:
    images: list  # paths to the grey frames, in order
    depth: list  # paths to the raw depth files, in order
    K_color: np.ndarray
    K_depth: np.ndarray
    color_from_depth: np.ndarray  # 4x4, OpenCV axes
    depth_scale: float = 0.000124986647  # metres per raw unit (the SR300's, as ViSP's castel example uses)

    PNG_DEPTH_SCALE = 1e-4  # metres per unit of the depth PNGs `write_folders` writes (0.1 mm)

    def write_folders(self, images: Path, depth: Path) -> None:
        """The frames, and the sensor depth registered into the colour camera as 16-bit PNG, one
        per frame: the inputs of `modgs-preprocess --images ... --depth-dir ... --depth-kind metric
        --depth-scale 0.0001`."""
        from modgs_ns.preprocess.depth import register_depth

        images.mkdir(parents=True, exist_ok=True)
        depth.mkdir(parents=True, exist_ok=True)
        for k, (im, dp) in enumerate(zip(self.images, self.depth)):
            shutil.copy(im, images / f"image_{k:04d}{im.suffix}")
            d = read_visp_depth(dp).astype(np.float64) * self.depth_scale
            reg = register_depth(d, self.K_depth, self.K_color, self.color_from_depth, (640, 480))
            cv2.imwrite(str(depth / f"depth_{k:04d}.png"), np.round(reg / self.PNG_DEPTH_SCALE).astype(np.uint16))


def castel() -> CastelSequence:
    root = fetch_from_deb("visp-images-data", VISP_CASTEL, cache_dir() / "visp-castel")
    frames = root / "castel"

    def camera(xml: Path) -> np.ndarray:
        text = xml.read_text()
        val = {k: float(text.split(f"<{k}>")[1].split(f"</{k}>")[0]) for k in ("px", "py", "u0", "v0")}
        return np.array([[val["px"], 0, val["u0"]], [0, val["py"], val["v0"]], [0, 0, 1]])

    depth_M_color = np.loadtxt(root / "depth_M_color.txt")  # colour-camera points -> depth-camera points
    return CastelSequence(
        images=sorted(frames.glob("image_*.p[gn]m")) + sorted(frames.glob("image_*.png")),
        depth=sorted(frames.glob("depth_image_*.bin")),
        K_color=camera(root / "chateau.xml"),
        K_depth=camera(root / "chateau_depth.xml"),
        color_from_depth=np.linalg.inv(depth_M_color),
    )


def read_visp_depth(path: Path) -> np.ndarray:
    """ViSP's raw depth file: uint32 LE height, uint32 LE width, then uint16 LE values row by row."""
    b = Path(path).read_bytes()
    h, w = np.frombuffer(b[:8], "<u4")
    return np.frombuffer(b[8 : 8 + 2 * int(h) * int(w)], "<u2").reshape(int(h), int(w))
