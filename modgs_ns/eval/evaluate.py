"""Render every held-out camera at its time and score it (the core of `modgs-eval`).

Tensors in, numbers and images out; the CLI (modgs_ns/scripts/eval.py) only loads the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from rich.progress import Progress

from modgs_ns.eval.metrics import LPIPS, image_metrics, mean_metrics
from modgs_ns.scene.caches import DepthCache
from modgs_ns.scene.format import training_frame_at, training_frames
from modgs_ns.scene.geometry import project, unproject


def covisibility_mask(
    depth_test: np.ndarray,
    K_test: np.ndarray,
    c2w_test: np.ndarray,
    depth_train: np.ndarray,
    K_train: np.ndarray,
    c2w_train: np.ndarray,
    rel_tol: float = 0.03,
) -> np.ndarray:
    """Test pixels whose surface point (from metric depth) the training camera also sees at that
    time: it projects inside the training image, in front of it, and within rel_tol of the
    training depth there (not occluded). Poses are the scene's own (OpenGL c2w), same units."""
    z = depth_test
    with np.errstate(invalid="ignore"):
        uv, zt = project(unproject(z, K_test, c2w_test).astype(np.float64), K_train, c2w_train)
    pu, pv = uv[..., 0] + 0.5, uv[..., 1] + 0.5  # K coordinates: pixel j covers [j, j + 1)
    Ht, Wt = depth_train.shape
    inside = np.isfinite(z) & (zt > 1e-6) & (pu >= 0) & (pu < Wt) & (pv >= 0) & (pv < Ht)
    iu = np.clip(np.floor(np.nan_to_num(pu)).astype(int), 0, Wt - 1)
    iv = np.clip(np.floor(np.nan_to_num(pv)).astype(int), 0, Ht - 1)
    seen = depth_train[iv, iu]
    return inside & np.isfinite(seen) & (np.abs(seen - zt) <= rel_tol * zt)


def error_heatmap(pred: np.ndarray, gt: np.ndarray, vmax: float = 0.5) -> np.ndarray:
    err = np.clip(np.abs(pred - gt).mean(-1) / vmax, 0, 1)
    return cv2.applyColorMap((err * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1] / 255.0


def depth_colormap(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    ok = alpha > 0.5
    d = depth.copy()
    lo, hi = (np.percentile(d[ok], 2), np.percentile(d[ok], 98)) if ok.any() else (0.0, 1.0)
    x = np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1)
    img = cv2.applyColorMap(((1 - x) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1] / 255.0
    return img * ok[..., None]


def write_grid(path: Path, gt: np.ndarray, pred: np.ndarray, depth: np.ndarray, alpha: np.ndarray, label: str) -> None:
    """One row: GT | render | |error| | depth, with a caption."""
    row = np.concatenate([gt, pred, error_heatmap(pred, gt), depth_colormap(depth, alpha)], 1)
    img = (np.clip(row, 0, 1) * 255).astype(np.uint8)[..., ::-1].copy()
    for i, name in enumerate(["GT", "render", "|error|", "depth"]):
        cv2.putText(
            img, name, (i * gt.shape[1] + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
        )
    cv2.putText(img, label, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def _read_image(path, width: int, height: int) -> Optional[torch.Tensor]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)


def _moving_masks(root: Path) -> dict[str, np.ndarray]:
    """Per training image name: the pixels that move in that frame, from the depth cache (when built)."""
    try:
        cache = DepthCache.load(root)
    except (OSError, KeyError, ValueError):
        return {}
    return dict(zip(cache.names, cache.moving))


@torch.no_grad()
def evaluate_training_views(pipeline, output_dir: Optional[Path] = None, grid_every: int = 0) -> dict:
    """PSNR of every training view at its own time, inside the moving region (the scene's dynamic masks
    where it has them, else the cache's per-frame moving pixels) and outside it (the background).
    With output_dir and grid_every > 0, a GT | render | error | depth grid of every N-th training view
    (grids/train-view_<name>.png)."""
    model, dataset = pipeline.model, pipeline.datamanager.train_dataset
    model.eval()
    meta = dataset.metadata
    root = meta["modgs_scene"].root
    dyn_files = meta.get("dynamic_mask_filenames") or [None] * len(dataset)
    cached = None
    rows = []
    with Progress() as progress:
        task = progress.add_task("rendering and scoring training views", total=len(dataset))
        for i in range(len(dataset)):
            name = Path(dataset.image_filenames[i]).name
            mask = _read_mask(dyn_files[i])
            source = "dynamic mask"
            if mask is None:
                cached = _moving_masks(root) if cached is None else cached
                mask, source = cached.get(name), "moving pixels (cache)"
            out = model.get_outputs_for_camera(dataset.cameras[i : i + 1])
            pred = out["rgb"].float().cpu()
            gt = dataset.get_image_float32(i)[..., :3].cpu()
            masks = {} if mask is None else {"moving": torch.from_numpy(mask), "background": torch.from_numpy(~mask)}
            rows.append(
                {
                    "image": name,
                    "mask_source": source if mask is not None else None,
                    **image_metrics(pred, gt, masks, []),
                }
            )
            if output_dir is not None and grid_every > 0 and i % grid_every == 0:
                t = dataset.cameras.times[i, 0] if dataset.cameras.times is not None else float("nan")
                write_grid(
                    Path(output_dir) / "grids" / f"train-view_{Path(name).stem}.png",
                    gt.numpy(),
                    pred.numpy(),
                    out["depth"][..., 0].float().cpu().numpy(),
                    out["accumulation"][..., 0].float().cpu().numpy(),
                    f"training view {name}  t={float(t):.3f}  PSNR {rows[-1]['psnr']:.2f}",
                )
            progress.advance(task)
    return {"mean": mean_metrics(rows), "images": rows}


def _read_mask(path) -> Optional[np.ndarray]:
    if path is None or not Path(path).is_file():
        return None
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return None if m is None else m > 127


@torch.no_grad()
def evaluate_pipeline(
    pipeline,
    output_dir: Path,
    lpips_nets: tuple[str, ...] = ("alex", "vgg"),
    lpips_weights: Optional[Path] = None,
    modgs_protocol: bool = False,
    grid_every: int = 8,
    masks: tuple[str, ...] = ("dynamic", "covisible"),
) -> dict:
    """Scores every image of the pipeline's eval dataset; writes metrics.json and grids/ under output_dir."""
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    model.eval()
    meta = dataset.metadata
    root = meta["modgs_scene"].root
    parser_meta = json.loads((root / "transforms.json").read_text())
    frames_by_name = {Path(f["file_path"]).name: f for f in parser_meta["frames"]}
    train = training_frames(parser_meta)
    lpips = [LPIPS(n, lpips_weights) for n in lpips_nets]
    notes = [lp.reason for lp in lpips if not lp.available]
    lpips = [lp for lp in lpips if lp.available]
    K_all = dataset.cameras.get_intrinsics_matrices().numpy()
    rows = []
    n = len(dataset)
    with Progress() as progress:
        task = progress.add_task("rendering and scoring held-out views", total=n)
        for i in range(n):
            name = Path(dataset.image_filenames[i]).name
            frame = frames_by_name.get(name, {})
            camera = dataset.cameras[i : i + 1]
            out = model.get_outputs_for_camera(camera)
            pred = out["rgb"].float().cpu()
            alpha = out["accumulation"][..., 0].float().cpu()
            depth = out["depth"][..., 0].float().cpu()
            gt = dataset.get_image_float32(i)[..., :3].cpu()
            image_masks = {}
            if "dynamic" in masks:
                dyn = _read_mask(meta["dynamic_mask_filenames"][i]) if meta.get("dynamic_mask_filenames") else None
                if dyn is not None:
                    image_masks["dynamic"] = torch.from_numpy(dyn)
            if "covisible" in masks and frame.get("gt_depth_path"):
                ref = training_frame_at(train, frame["time"])
                if ref.get("gt_depth_path"):
                    cov = covisibility_mask(
                        np.load(root / frame["gt_depth_path"]),
                        K_all[i],
                        np.array(frame["transform_matrix"]),
                        np.load(root / ref["gt_depth_path"]),
                        K_all[i],
                        np.array(ref["transform_matrix"]),
                    )
                    image_masks["covisible"] = torch.from_numpy(cov)
            m = image_metrics(pred, gt, image_masks, lpips, alpha=alpha, modgs_protocol=modgs_protocol)
            # The copy floor: the training frame of the same time shown as this view (doing nothing).
            if frame.get("camera", "train") != "train":
                ref = training_frame_at(train, frame["time"])
                copy = _read_image(root / ref["file_path"], gt.shape[1], gt.shape[0])
                if copy is not None:
                    cm = image_metrics(copy, gt, image_masks, [], alpha=alpha, modgs_protocol=modgs_protocol)
                    m.update({f"copy_{k}": v for k, v in cm.items() if not k.startswith("fraction")})
            rows.append(
                {
                    "image": name,
                    "camera": frame.get("camera"),
                    "time": float(camera.times[0, 0]) if camera.times is not None else None,
                    **m,
                }
            )
            if grid_every > 0 and i % grid_every == 0:
                write_grid(
                    output_dir / "grids" / f"{Path(name).stem}.png",
                    gt.numpy(),
                    pred.numpy(),
                    depth.numpy(),
                    alpha.numpy(),
                    f"{name}  t={rows[-1]['time']:.3f}  PSNR {m['psnr']:.2f}",
                )
            progress.advance(task)
    by_camera = {}
    for cam in sorted({r["camera"] for r in rows if r["camera"]}):
        by_camera[cam] = mean_metrics([r for r in rows if r["camera"] == cam])
    return {
        "mean": mean_metrics(rows),
        "per_camera": by_camera,
        "images": rows,
        "notes": notes,
        "protocol": "modgs-alpha-masked" if modgs_protocol else "full",
    }
