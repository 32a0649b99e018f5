"""ModgsPipeline: the phase switch of one `ns-train modgs` run.

Steps below N1 (the model's `stage1_steps`) train the deformation on cached 3D pairs and render
nothing; from N1 on, splatfacto's usual image step runs. The switch lives here, at the level
that decides what a training step is, as instruct-gs2gs does for its phases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from modgs_ns.cli import one_line_errors, provide_ffmpeg
from modgs_ns.preprocess.pairs import ensure_caches
from modgs_ns.viewer_controls import TrainCameraView


@dataclass
class ModgsPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline's options; the phase switch follows the model's stage1_steps."""

    _target: Type = field(default_factory=lambda: ModgsPipeline)


class ModgsPipeline(VanillaPipeline):
    """Every ns-* command builds its modgs run here: this is where nerfstudio's commands enter modgs,
    so stale caches are rebuilt here (preprocessing's writer, the scene's recorded parameters) and
    modgs's typed errors become one line and exit code 1."""

    def __init__(self, config: ModgsPipelineConfig, *args, **kwargs):
        if Path(sys.argv[0]).name == "ns-render":  # the one ns-* command that writes video
            provide_ffmpeg()
        with one_line_errors("modgs-data"):
            config.model.check_honoured()
            dm = config.datamanager  # nerfstudio hands `--data` to the dataparser inside the datamanager
            ensure_caches(Path(dm.data if dm.data is not None else dm.dataparser.data))
            super().__init__(config, *args, **kwargs)
        # Viewer: a button that puts the view at the (first) training camera; nerfstudio's viewer
        # installs ViewerElements / ViewerControls found as attributes of the pipeline.
        cam0 = self.datamanager.train_dataset.cameras[0]
        c2w0 = cam0.camera_to_worlds.detach().cpu().numpy()
        fov0 = 2.0 * float(torch.atan(cam0.cy / cam0.fy).item())  # vertical field of view, as viser's
        self._train_view = TrainCameraView(lambda: c2w0, fov0)
        self.view_train_camera = self._train_view.button
        self.view_control = self._train_view.control

    def get_train_loss_dict(self, step: int):
        if self.model.in_stage1(step):
            loss_dict = self.model.stage1_loss_dict(step)
            metrics = {"flow3d_rmse": torch.sqrt(loss_dict["flow3d_loss"].detach())}
            return {}, loss_dict, metrics
        return super().get_train_loss_dict(step)
