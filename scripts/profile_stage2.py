#!/usr/bin/env python
"""Where a stage-2 training step's time goes: loads a trained modgs run and times, over a few steps
on its training cameras, the positions at t of the Gaussians alive at t (the deformation, forward +
backward), and the whole step as the model runs it (outputs, losses, backward); with lifespans, once
with the static Gaussians deformed (MoDGS) and once without (`--pipeline.model.lifespans.deform-static False`).

    .venv/bin/python scripts/profile_stage2.py --load-config outputs/.../config.yml
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load-config", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="test")
    model, data = pipeline.model, pipeline.datamanager.train_dataset
    model.train()
    model.optimizers = None  # set by the trainer's callbacks in a real run; the strategy only reads info here
    model.step = getattr(model, "step", 0)
    n = len(model.means)
    print(
        f"{n} Gaussians, {int(data.cameras.width[0])}x{int(data.cameras.height[0])}, {torch.get_num_threads()} threads, "
        f"mean of {args.steps} steps"
    )
    settings = [True, False] if model.config.uses_lifespans() else [True]
    for deform_static in settings:
        model.config.lifespans.deform_static = deform_static
        deform_s = whole_s = alive = 0.0
        for k in range(args.steps + 1):
            cam = data.cameras[k % len(data) : k % len(data) + 1]
            t = float(cam.times[0, 0])
            t0 = time.perf_counter()
            ids, means_t, _ = model.gaussians_at(t)  # what a step deforms: the Gaussians alive at t
            means_t.sum().backward()
            t1 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            batch = data[k % len(data)]
            t2 = time.perf_counter()
            outputs = model.get_outputs(cam.to(model.device))
            loss = sum(model.get_loss_dict(outputs, batch).values())
            loss.backward()
            t3 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if k > 0:  # the first step warms caches up
                deform_s += (t1 - t0) / args.steps
                whole_s += (t3 - t2) / args.steps
                alive += len(ids) / args.steps
        label = f"deform-static {deform_static}" if model.config.uses_lifespans() else "all Gaussians deformed"
        print(f"{label}: {alive:.0f} Gaussians alive per step")
        print(f"  whole stage-2 step (outputs + losses + backward): {1000 * whole_s:.0f} ms")
        print(
            f"  alive Gaussians' positions at t, fwd + bwd:       {1000 * deform_s:.0f} ms ({100 * deform_s / whole_s:.0f}%)"
        )
        print(f"  the rest (rasterization, SSIM, ordinal loss, ...): {1000 * (whole_s - deform_s):.0f} ms")


if __name__ == "__main__":
    main()
