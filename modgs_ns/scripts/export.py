"""modgs-export: the Gaussians of a trained modgs run at a time, as standard 3DGS PLY files.

    modgs-export --load-config outputs/.../config.yml --time 0.5              # one PLY
    modgs-export --load-config outputs/.../config.yml --num-times 30          # PLY sequence + manifest.json

`ns-export gaussian-splat` writes the canonical Gaussians (time-independent parameters); this
writes them moved to time t by the deformation, which is what a splat viewer should show.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro


@dataclass
class ExportArgs:
    load_config: Path
    """config.yml of a trained modgs run."""
    output_dir: Path = Path("exports")
    """Folder for the PLY file(s) (created if missing)."""
    time: Optional[float] = None
    """Export at this normalized time in [0, 1]."""
    num_times: int = 0
    """Export this many evenly spaced times in [0, 1] (a PLY sequence with manifest.json)."""
    min_opacity: float = 1.0 / 255.0
    """Drop Gaussians below this opacity (as ns-export does)."""


def main(args: ExportArgs) -> int:
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    if (args.time is None) == (args.num_times <= 0):
        print("modgs-export: error: give exactly one of --time T or --num-times N", file=sys.stderr)
        return 2
    if args.time is not None and not 0.0 <= args.time <= 1.0:
        print(f"modgs-export: error: --time {args.time} is outside [0, 1] (times are normalized)", file=sys.stderr)
        return 2
    if not args.load_config.is_file():
        print(f"modgs-export: error: no config at {args.load_config}", file=sys.stderr)
        return 2
    from modgs_ns.scene.format import writable_dir_problem

    problem = writable_dir_problem(args.output_dir, "--output-dir")
    if problem:
        print(f"modgs-export: error: {problem}", file=sys.stderr)
        return 2
    from nerfstudio.utils.eval_utils import eval_setup
    from rich.progress import Progress

    from modgs_ns.export.splat_ply import export_sequence, gaussians_at_time, write_splat_ply
    from modgs_ns.model.modgs_model import ModgsModel

    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="inference")
    model = pipeline.model
    if not isinstance(model, ModgsModel):
        print(f"modgs-export: error: {args.load_config} is not a modgs run", file=sys.stderr)
        return 2
    model.eval()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.time is not None:
        path = args.output_dir / f"gaussians_t{args.time:.4f}.ply"
        g = gaussians_at_time(model, args.time, args.min_opacity)
        write_splat_ply(path, g)
        print(f"modgs-export: {len(g['means'])} Gaussians at t={args.time} -> {path}")
        return 0
    times = [k / max(args.num_times - 1, 1) for k in range(args.num_times)]
    with Progress() as bar:
        task = bar.add_task("exporting Gaussians over time", total=len(times))
        manifest = export_sequence(model, args.output_dir, times, args.min_opacity, lambda: bar.advance(task))
    print(f"modgs-export: {len(times)} PLY files and {manifest}")
    return 0


def entrypoint() -> None:
    sys.exit(main(tyro.cli(ExportArgs, description=__doc__)))


if __name__ == "__main__":
    entrypoint()
