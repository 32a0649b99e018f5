#!/usr/bin/env python
"""The viewer as a person sees it: ns-viewer in headless Chromium, the Time slider moved, screenshots.

Starts `ns-viewer --load-config CONFIG` on 127.0.0.1, opens it in Debian's Chromium through
Playwright (isolated: fresh profile, no network services, no GPU), presses the plugin's "View from the
training camera" button, sets the Time slider to each requested time with the keyboard, and saves
one screenshot per time. Exits non-zero when the viewer, the browser or the slider is missing.

    .venv/bin/python scripts/viewer_screenshots.py --load-config outputs/.../config.yml --output-dir docs/
Needs: apt-get install chromium; pip install playwright (no browser download: the system one is used).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"ns-viewer exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"ns-viewer did not open port {port} within {timeout:.0f} s")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    raise SystemExit("no Chromium found: apt-get install chromium")


def set_time(page, value: float) -> None:
    """Types the time into the number box of the "Time" row (arrow keys would also reach viser's
    keyboard camera controls and move the view), then checks that the slider followed."""
    label = page.get_by_text("Time", exact=True).last
    label.wait_for(timeout=60_000)
    slider = label.locator("xpath=following::*[@role='slider'][1]")
    box = label.locator("xpath=following::input[not(@type='hidden')][1]")
    if slider.count() == 0 or box.count() == 0:
        raise SystemExit("no Time slider in the viewer (is this a dynamic modgs run?)")
    box.fill(f"{value:g}")
    box.press("Enter")
    page.wait_for_timeout(500)
    shown = slider.get_attribute("aria-valuenow")
    if shown is not None and abs(float(shown) - value) > 1e-6:
        raise SystemExit(f"the Time slider shows {shown}, not {value:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load-config", type=Path, required=True)
    ap.add_argument("--output-dir", type=Path, default=Path("docs"))
    ap.add_argument("--times", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--settle", type=float, default=12.0, help="seconds to let the CPU render finish after a change")
    ap.add_argument("--prefix", default="viewer")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, TORCH_COMPILE_DISABLE="1", HF_HUB_OFFLINE="1")
    viewer = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ns-viewer"),
            "--load-config",
            str(args.load_config),
            "--viewer.websocket-host",
            "127.0.0.1",
            "--viewer.websocket-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    profile = Path(tempfile.mkdtemp(prefix="modgs-chromium-"))
    shots = []
    try:
        wait_port(port, viewer, 180)
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(profile),
                executable_path=chromium_path(),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 800},
            )
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded")
            page.get_by_text("Time", exact=True).first.wait_for(timeout=120_000)
            # The training frames' frustums carry the frames as textures, and every frame of a static
            # camera sits at the viewpoint: hide them, or the screenshot shows a training image.
            hide = page.get_by_role("button", name="Hide Train Cams")
            if hide.count():
                hide.first.click()
            button = page.get_by_role("button", name="View from the training camera")
            if button.count():
                button.first.click()
            time.sleep(args.settle)
            args.output_dir.mkdir(parents=True, exist_ok=True)
            for t in args.times:
                set_time(page, t)
                if button.count():  # the same viewpoint for every time
                    button.first.click()
                time.sleep(args.settle)
                path = args.output_dir / f"{args.prefix}_t{t:.2f}.png"
                if path in shots:  # the same time twice (a repeatability check): keep both
                    path = path.with_name(f"{path.stem}_{len(shots)}.png")
                page.screenshot(path=str(path))
                shots.append(path)
                print(f"saved {path}")
            ctx.close()
    finally:
        viewer.terminate()
        try:
            viewer.wait(20)
        except subprocess.TimeoutExpired:
            viewer.kill()
        shutil.rmtree(profile, ignore_errors=True)
    if len(shots) >= 2:
        import cv2

        a, b = (cv2.imread(str(s)).astype(np.float32) for s in shots[:2])
        changed = (np.abs(a - b).max(-1) > 30).mean()
        print(f"pixels that changed between the first two times: {100 * changed:.2f}%")


if __name__ == "__main__":
    main()
