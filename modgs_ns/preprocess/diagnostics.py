"""One PNG to check a preprocessed scene at a glance.

Rows for up to 6 frames spread over the video: frame | depth prior | aligned depth (shared colour
scale, so temporal consistency shows) | static mask (green) and dropped pixels (red: invalid prior
or depth edge) | flow to the next frame (hue = direction, brightness = magnitude). Below: valid
3D-pair counts per frame, summed over its window, as bars.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from modgs_ns.preprocess.flow import make_flow
from modgs_ns.scene.caches import DepthCache, PairParams, PairsCache
from modgs_ns.scene.files import read_rgb
from modgs_ns.scene.format import load_depth_prior, load_scene_meta, prior_kind, training_frames


def _colormap(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = np.clip((x - lo) / max(hi - lo, 1e-9), 0, 1)
    return cv2.applyColorMap(((1 - v) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)


def flow_to_bgr(flow: np.ndarray, max_mag: float = 0.0) -> np.ndarray:
    mag, ang = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    max_mag = max_mag or max(float(np.percentile(mag, 99)), 1e-3)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = (np.clip(mag / max_mag, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_diagnostics(root: Path, path: Path, params: PairParams, rows: int = 6) -> None:
    root, meta = load_scene_meta(root)
    frames = {Path(f["file_path"]).name: f for f in training_frames(meta)}
    cache = DepthCache.load(root)
    names, valid, aligned, shift = cache.names, cache.valid, cache.depth, cache.disparity_shift
    kind = prior_kind(meta)
    static = np.broadcast_to(cache.static, aligned.shape)  # one mask (static camera) or one per frame
    counts = PairsCache.load(root).counts
    T, H, W = aligned.shape
    flow = make_flow(params.flow, params.raft_checkpoint)
    lo, hi = np.percentile(aligned[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    picks = sorted(set(np.linspace(0, T - 1, min(rows, T)).round().astype(int).tolist()))
    out_rows = []
    for i in picks:
        f = frames[names[i]]
        img = read_rgb(root / f["file_path"])
        prior, pv = load_depth_prior(root / f["depth_prior_path"], H, W, kind)
        plo, phi = np.percentile(prior[pv], [2, 98]) if pv.any() else (0.0, 1.0)
        masks = np.zeros((H, W, 3), np.uint8)
        masks[static[i] & valid[i]] = (60, 200, 60)
        masks[~valid[i]] = (40, 40, 220)
        j = i + 1 if i + 1 < T else i - 1
        nxt = read_rgb(root / frames[names[j]]["file_path"])
        fl = flow(img, nxt)
        cells = [
            _label(np.ascontiguousarray(img[..., ::-1]), f"frame {i} t={float(f['time']):.2f}"),  # BGR, as the sheet
            _label(
                _colormap(
                    -prior if kind == "disparity" else prior, *((-phi, -plo) if kind == "disparity" else (plo, phi))
                ),
                f"prior ({kind})",
            ),
            _label(_colormap(aligned[i], lo, hi), "aligned depth"),
            _label(
                masks, f"static {100 * (static[i] & valid[i]).mean():.0f}%  dropped {100 * (~valid[i]).mean():.0f}%"
            ),
            _label(flow_to_bgr(fl), f"flow -> {j}"),
        ]
        out_rows.append(np.concatenate(cells, 1))
    sheet = np.concatenate(out_rows, 0)
    # Valid-pair counts per frame (sum over its targets) as a bar chart under the sheet.
    per = counts.sum(1).astype(np.float64)
    chart = np.full((110, sheet.shape[1], 3), 255, np.uint8)
    bw = sheet.shape[1] / max(T, 1)
    top = per.max() if per.max() > 0 else 1.0
    for i, c in enumerate(per):
        h = int(80 * c / top)
        cv2.rectangle(chart, (int(i * bw) + 1, 100 - h), (int((i + 1) * bw) - 1, 100), (180, 120, 40), -1)
    cv2.putText(
        chart,
        f"valid 3D pairs per frame (max {int(top)}, min {int(per.min())})"
        + (
            f"   disparity shift applied {shift['applied']:.4g} ({shift['source']}; estimate {shift['estimate']:.4g}, "
            + (
                f"{100 * shift['estimate_relative']:.0f}% of the median disparity)"
                if shift.get("estimate_relative") is not None
                else "median disparity 0)"
            )
            if shift
            else ""
        ),
        (6, 14),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    cv2.imwrite(str(tmp), np.concatenate([sheet, chart], 0))
    tmp.replace(path)
