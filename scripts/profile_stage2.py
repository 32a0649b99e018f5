#!/usr/bin/env python
"""Where a stage-2 training step's time goes: loads a trained modgs run and times, over a few steps
on its training cameras, the deformation of every Gaussian's mean (forward + backward), the
rasterization (forward + backward), the losses, and the whole step as the model runs it.

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
    model.optimizers = getattr(model, "optimizers", None)  # set by the trainer's callbacks in a real run
    model.step = getattr(model, "step", 0)
    n = len(model.means)
    parts = {"deformation fwd+bwd": 0.0, "whole step fwd+bwd": 0.0}
    for k in range(args.steps + 1):
        cam = data.cameras[k % len(data) : k % len(data) + 1]
        t = float(cam.times[0, 0])
        means = model.means.detach().requires_grad_(True)
        t0 = time.perf_counter()
        out = model.deform.from_canonical(means, t)
        out.sum().backward()
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
            parts["deformation fwd+bwd"] += t1 - t0
            parts["whole step fwd+bwd"] += t3 - t2
    whole = parts["whole step fwd+bwd"] / args.steps
    deform = parts["deformation fwd+bwd"] / args.steps
    print(
        f"{n} Gaussians, {int(data.cameras.width[0])}x{int(data.cameras.height[0])}, {torch.get_num_threads()} threads, "
        f"mean of {args.steps} steps"
    )
    print(f"  whole stage-2 step (outputs + losses + backward): {1000 * whole:.0f} ms")
    print(f"  deformation of all means, forward + backward:     {1000 * deform:.0f} ms ({100 * deform / whole:.0f}%)")
    print(f"  the rest (rasterization, SSIM, ordinal loss, ...): {1000 * (whole - deform):.0f} ms")


if __name__ == "__main__":
    main()
