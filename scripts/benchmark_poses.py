#!/usr/bin/env python
"""A moving camera end to end: estimated poses against ground-truth poses, and a real RGB-D sequence.

Part 1, the orbiting generated scene (its training camera orbits 8 degrees about the scene):
1. modgs-synth --scene.camera-motion orbit makes a scene S with GT poses, depth and masks.
2. Its training frames and depth prior go through modgs-preprocess twice, identically except for the
   poses: (gt) as an ns-process-data style folder with S's poses (`--poses given`), and (colmap) as
   a plain image folder with `--poses colmap` (pycolmap, no masks, S's focal length given).
3. Pose error of the colmap trajectory: ATE after a similarity alignment and mean rotation error
   (also with S's moving-object masks given to the feature extractor, for reference).
4. S's held-out cameras are added to both (relative to each one's training camera at that time) and
   both are trained and scored identically (`ns-train modgs-cpu`, `modgs-eval`).

Part 2, castel (Debian visp-images-data): 30 frames of a handheld RealSense SR300 around a tabletop
castle. The sensor depth is registered into the colour camera and written as 16-bit PNG (0.1 mm);
`modgs-preprocess --poses colmap --depth-dir ... --depth-kind metric` recovers the poses and aligns the
sensor depth to them: the per-frame scale should then be one number (COLMAP units per metre) and the
shift about zero, which checks poses and sensor-depth path against each other.

    .venv/bin/python scripts/benchmark_poses.py [--stage1-steps 600 --stage2-steps 600] [--skip-training]
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from bench_common import BIN, add_held_out, bench_parser, fresh_work_dir, print_table, sh, train_and_eval

from modgs_ns.preprocess import poses as P

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # sample data and trajectory errors
from samples import SampleUnavailable  # noqa: E402
from samples import castel as castel_sample  # noqa: E402
from trajectory import trajectory_errors  # noqa: E402


def orbit(args, w: Path, env) -> None:
    S = w / "synth"
    sh(
        [
            BIN / "modgs-synth",
            "--output-dir",
            S,
            "--scene.camera-motion",
            "orbit",
            "--scene.num-frames",
            "32",
            "--scene.width",
            "240",
            "--scene.height",
            "180",
        ],
        w / "synth.log",
        env,
    )
    ms = json.loads((S / "transforms.json").read_text())
    train = sorted((f for f in ms["frames"] if f["camera"] == "train"), key=lambda f: f["time"])
    gt = np.array([f["transform_matrix"] for f in train])
    ns, frames, prior = w / "ns_gt", w / "frames", w / "prior"
    for d in (ns / "images", frames, prior):
        d.mkdir(parents=True)
    ns_frames = []
    for k, f in enumerate(train):
        name = f"frame_{k:05d}.png"
        shutil.copy(S / f["file_path"], ns / "images" / name)
        shutil.copy(S / f["file_path"], frames / name)
        shutil.copy(S / f["depth_prior_path"], prior / name.replace(".png", ".npy"))
        ns_frames.append({"file_path": f"images/{name}", "transform_matrix": f["transform_matrix"]})
    (ns / "transforms.json").write_text(
        json.dumps({k: ms[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")} | {"frames": ns_frames})
    )
    common = ["--depth-dir", prior, "--max-side", "0", "--fps", "10"]
    P_gt, P_est = w / "scene_gt", w / "scene_colmap"
    t_gt = sh(
        [BIN / "modgs-preprocess", "--nerfstudio-data", ns, "--output-dir", P_gt, *common], w / "preprocess_gt.log", env
    )
    t_est = sh(
        [
            BIN / "modgs-preprocess",
            "--images",
            frames,
            "--output-dir",
            P_est,
            "--poses",
            "colmap",
            "--no-pose-fallback",
            "--fx",
            ms["fl_x"],
            "--fy",
            ms["fl_y"],
            *common,
        ],
        w / "preprocess_colmap.log",
        env,
    )
    me = json.loads((P_est / "transforms.json").read_text())
    est = np.array([f["transform_matrix"] for f in sorted(me["frames"], key=lambda f: f["time"])])
    err = trajectory_errors(est, gt)

    K = np.array([[ms["fl_x"], 0, ms["cx"]], [0, ms["fl_y"], ms["cy"]], [0, 0, 1]])
    imgs = [cv2.cvtColor(cv2.imread(str(S / f["file_path"])), cv2.COLOR_BGR2RGB) for f in train]
    masks = [cv2.imread(str(S / f["dynamic_mask_path"]), 0) > 0 for f in train]
    err_masked = trajectory_errors(P.colmap_poses(imgs, K, masks), gt)
    print(f"orbit scene, 32 frames 240x180, camera path {err['path_length']:.3f} m over 8 degrees")
    print(f"  preprocess: GT poses {t_gt:.1f} s, colmap poses {t_est:.1f} s")
    for name, e in (("colmap (as run: no masks)", err), ("colmap (GT moving-object masks, one pass)", err_masked)):
        print(
            f"  {name}: ATE {1000 * e['ate']:.1f} mm ({100 * e['ate'] / e['path_length']:.2f}% of the path), "
            f"rotation error {e['rotation_deg']:.3f} deg"
        )
    for tag, scene in (("gt", P_gt), ("colmap", P_est)):
        stats = json.loads((scene / "transforms.json").read_text())["modgs"]["preprocess"]["caches"]
        with np.load(scene / "caches" / "depth.npz") as z:
            aligned, static = z["depth"], z["static"]
        metric = np.stack([np.load(S / f["gt_depth_path"]) for f in train])
        dyn = np.stack(masks)
        m = np.isfinite(metric) & ~dyn
        s = np.median(aligned[m] / metric[m])
        rel = np.median(np.abs(aligned / s - metric)[m] / metric[m])
        print(
            f"  {tag}: camera motion {stats['camera_motion']}; aligned depth vs GT after one global scale: median "
            f"{100 * rel:.2f}%; static mask keeps {100 * static[m].mean():.1f}% of the background and "
            f"{100 * static[dyn].mean():.1f}% of the moving objects"
        )
    if args.skip_training:
        return
    rows = {}
    for tag, scene in (("GT poses", P_gt), ("colmap poses", P_est)):
        add_held_out(S, scene)
        rows[tag] = train_and_eval(scene, scene.name, w, args.stage1_steps, args.stage2_steps, env)
    print_table(rows, "poses")
    a, b = (r[0]["psnr"] for r in rows.values())
    print(f"difference (colmap - GT): {b - a:+.2f} dB (acceptance: within 1 dB)")


def castel(w: Path, env) -> None:
    from modgs_ns.scene.caches import DepthCache

    try:
        seq = castel_sample()
    except SampleUnavailable as err:
        print(f"castel: skipped ({err})")
        return
    imgs, depth = w / "castel_images", w / "castel_depth"
    seq.write_folders(imgs, depth)
    K = seq.K_color
    out = w / "castel_scene"
    t = sh(
        [
            BIN / "modgs-preprocess",
            "--images",
            imgs,
            "--output-dir",
            out,
            "--poses",
            "colmap",
            "--no-pose-fallback",
            "--fx",
            K[0, 0],
            "--fy",
            K[1, 1],
            "--cx",
            K[0, 2],
            "--cy",
            K[1, 2],
            "--depth-dir",
            depth,
            "--depth-kind",
            "metric",
            "--depth-scale",
            seq.PNG_DEPTH_SCALE,
            "--fps",
            "30",
        ],
        w / "castel_preprocess.log",
        env,
    )
    meta = json.loads((out / "transforms.json").read_text())
    cache = DepthCache.load(out)
    valid, a, aligned = cache.valid, cache.scales, cache.depth
    static = np.broadcast_to(cache.static, valid.shape)
    c2w = np.array([f["transform_matrix"] for f in sorted(meta["frames"], key=lambda f: f["time"])])
    path = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()
    med = float(np.median(aligned[aligned > 0]))
    print(
        f"castel (RealSense SR300, 30 frames 640x480 -> {meta['w']}x{meta['h']}): modgs-preprocess {t:.1f} s, "
        f"{len(c2w)}/30 frames posed ({meta['modgs']['preprocess']['camera']}), camera motion "
        f"{meta['modgs']['preprocess']['caches']['camera_motion']}"
    )
    print(
        f"  sensor depth -> pose units (metric depth: scale only): {np.median(a):.3f} units/m; per-frame fits spread "
        f"{100 * a.std() / a.mean():.2f}% (std/mean), range {a.min():.2f}-{a.max():.2f}"
    )
    print(
        f"  camera path {path / np.median(a) * 100:.1f} cm (poses in metres through the depth scale); median depth "
        f"{med / np.median(a) * 100:.1f} cm; static mask: {100 * static[valid].mean():.1f}% of the pixels with depth "
        "(the scene is static)"
    )


def main() -> None:
    ap = bench_parser(__doc__, "poses")
    ap.add_argument("--skip-training", action="store_true", help="poses, masks and alignment only")
    ap.add_argument("--parts", nargs="+", choices=["castel", "orbit"], default=["castel", "orbit"])
    args = ap.parse_args()
    w, env = fresh_work_dir(args.work_dir)
    t0 = time.time()
    if "castel" in args.parts:
        castel(w, env)
    if "orbit" in args.parts:
        orbit(args, w, env)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
