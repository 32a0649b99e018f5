#!/usr/bin/env python
"""modgs-preprocess against the generator's own scene: same video, same prior, same training.

1. modgs-synth makes a scene S (its own caches, poses, held-out cameras, ground truth).
2. S's training frames become a plain lossless video (FFV1 .mkv) and its depth prior a folder of
   .npy files; `modgs-preprocess --video ... --depth-dir ...` turns them into a scene P (identity
   pose, 60-degree field of view as S, times from the video's timestamps).
3. S's held-out cameras are added to P relative to P's training camera (and S's metric depth, for
   the test-camera scale), so both can be scored on the same views.
4. Both are trained with identical `ns-train modgs-cpu` settings and scored with `modgs-eval`.

    .venv/bin/python scripts/benchmark_preprocess.py [--stage1-steps 600 --stage2-steps 600]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
from bench_common import BIN, add_held_out, bench_parser, fresh_work_dir, print_table, sh, train_and_eval


def main() -> None:
    args = bench_parser(__doc__, "preprocess").parse_args()
    w, env = fresh_work_dir(args.work_dir)
    S, P = w / "synth", w / "preprocessed"
    sh(
        [
            BIN / "modgs-synth",
            "--output-dir",
            S,
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
    video = w / "train.mkv"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 10, (240, 180))
    prior = w / "prior"
    prior.mkdir()
    for f in train:
        vw.write(cv2.imread(str(S / f["file_path"])))
        shutil.copy(S / f["depth_prior_path"], prior / Path(f["depth_prior_path"]).name)
    vw.release()
    t_pre = sh(
        [BIN / "modgs-preprocess", "--video", video, "--output-dir", P, "--depth-dir", prior], w / "preprocess.log", env
    )
    add_held_out(S, P)
    rows = {}
    for name, scene in (("generator's scene", S), ("modgs-preprocess scene", P)):
        rows[name] = train_and_eval(scene, scene.name, w, args.stage1_steps, args.stage2_steps, env)
    print(f"modgs-preprocess on the 32-frame 240x180 video: {t_pre:.1f} s (log: {w / 'preprocess.log'})")
    print_table(rows, "scene")
    a, b = (r[0]["psnr"] for r in rows.values())
    print(f"difference: {b - a:+.2f} dB (acceptance: within 0.5 dB)")


if __name__ == "__main__":
    main()
