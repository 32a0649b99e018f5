"""modgs-synth: generate a dynamic scene with ground truth in the modgs scene format."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from modgs_ns.synth.generate import SynthConfig, generate_scene


@dataclass
class SynthArgs:
    """Generate a dynamic scene: a static (or slowly orbiting) training camera filming moving,
    rotating and deforming objects, held-out test cameras, GT depth and masks, and a distorted
    monocular depth prior per training frame. Deterministic per seed."""

    output_dir: Path
    """Folder to write (must be empty or absent unless --overwrite)."""
    scene: SynthConfig = field(default_factory=SynthConfig)
    """What to generate (objects, camera, size, prior)."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""


def main(args: SynthArgs) -> int:
    try:
        out = generate_scene(args.scene, args.output_dir, overwrite=args.overwrite)
    except (FileExistsError, ValueError, OSError) as err:
        print(f"modgs-synth: error: {err}", file=sys.stderr)
        return 2
    n = args.scene.num_frames
    print(f"Wrote {out} ({n} training frames, {len(args.scene.test_yaws)} test cameras x {n} times)")
    print(f"Train with: ns-train modgs-cpu --data {out}")
    return 0


def entrypoint():
    sys.exit(main(tyro.cli(SynthArgs)))


if __name__ == "__main__":
    entrypoint()
