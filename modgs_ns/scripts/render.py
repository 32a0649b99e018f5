"""modgs-render spiral: a novel-view video of a trained modgs run, sweeping time.

Writes an mp4 (RGB | depth side by side) with OpenCV, so it needs no ffmpeg binary, and the
same path as a nerfstudio camera-path JSON (with render_time per frame) for `ns-render camera-path`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro


@dataclass
class Spiral:
    """Render a spiral around the first training camera while time sweeps 0 -> 1."""

    load_config: Path
    """config.yml of a trained modgs run."""
    output_path: Path = Path("renders/spiral.mp4")
    """Video to write (RGB | depth side by side)."""
    num_frames: int = 48
    """Frames of the video (time sweeps 0 -> 1 over them unless --time is given)."""
    fps: int = 12
    """Frame rate of the video."""
    radius_fraction: float = 0.04
    """Spiral radius as a fraction of the scene's median depth."""
    time: Optional[float] = None
    """Hold time fixed at this value instead of sweeping it."""
    camera_path_json: Optional[Path] = None
    """Also write the path here (default: next to the video)."""

    def main(self) -> int:
        import cv2
        import numpy as np
        import torch
        from nerfstudio.cameras.cameras import Cameras
        from nerfstudio.utils import colormaps
        from nerfstudio.utils.eval_utils import eval_setup
        from rich.progress import Progress

        from modgs_ns.render.spiral import spiral_poses, sweep_times

        if not self.load_config.is_file():
            print(f"modgs-render: error: no config at {self.load_config}", file=sys.stderr)
            return 2
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        cams = pipeline.datamanager.train_dataset.cameras
        c2w = cams.camera_to_worlds[0].cpu().numpy()
        # Focus at the median depth of the Gaussians in front of the first training camera.
        with torch.no_grad():
            rel = model.means.detach().cpu().numpy() - c2w[:3, 3]
            depth = -(rel @ c2w[:3, 2])
        depth = depth[depth > 0]
        focus = float(np.median(depth)) if len(depth) else 1.0
        poses = spiral_poses(c2w, focus, self.num_frames, self.radius_fraction * focus)
        times = sweep_times(self.num_frames, self.time)
        W, H = int(cams.width[0]), int(cams.height[0])
        fx, fy, cx, cy = float(cams.fx[0]), float(cams.fy[0]), float(cams.cx[0]), float(cams.cy[0])

        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        json_path = self.camera_path_json or self.output_path.with_suffix(".camera_path.json")
        fov_y = math.degrees(2 * math.atan(0.5 * H / fy))
        json_path.write_text(
            json.dumps(
                {
                    "camera_type": "perspective",
                    "render_height": H,
                    "render_width": W,
                    "seconds": self.num_frames / self.fps,
                    "camera_path": [
                        {
                            "camera_to_world": p.reshape(-1).tolist(),
                            "fov": fov_y,
                            "aspect": W / H,
                            "render_time": float(t),
                        }
                        for p, t in zip(poses, times)
                    ],
                },
                indent=1,
            )
        )
        tmp = self.output_path.with_name(f".{self.output_path.stem}.partial.mp4")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (2 * W, H))
        try:
            with Progress() as bar, torch.no_grad():
                task = bar.add_task("modgs-render: spiral", total=self.num_frames)
                for p, t in zip(poses, times):
                    cam = Cameras(
                        camera_to_worlds=torch.from_numpy(p[None, :3]).float(),
                        fx=fx,
                        fy=fy,
                        cx=cx,
                        cy=cy,
                        width=W,
                        height=H,
                        times=torch.tensor([[float(t)]]),
                    )
                    out = model.get_outputs_for_camera(cam)
                    rgb = out["rgb"].clamp(0, 1).cpu().numpy()
                    dep = colormaps.apply_depth_colormap(out["depth"], accumulation=out["accumulation"]).cpu().numpy()
                    frame = (np.concatenate([rgb, dep], 1) * 255).round().astype(np.uint8)
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                    bar.advance(task)
            writer.release()
            os.replace(tmp, self.output_path)
        except BaseException:
            writer.release()
            tmp.unlink(missing_ok=True)
            raise
        print(
            f"Wrote {self.output_path} ({self.num_frames} frames, time {'fixed at %g' % self.time if self.time is not None else '0 -> 1'})"
        )
        print(f"Camera path for ns-render camera-path: {json_path}")
        return 0


def entrypoint():
    sys.exit(tyro.extras.subcommand_cli_from_dict({"spiral": Spiral}).main())


if __name__ == "__main__":
    entrypoint()
