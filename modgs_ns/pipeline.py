"""ModgsPipeline: what a training step is in each phase of one `ns-train modgs` run.

Stage-1 steps train the deformation on the datamanager's 3D pairs and render nothing; at the switch
the model builds its canonical Gaussians from the same pairs and the cached images; from then on,
splatfacto's usual image step runs (the phases: `model/phases.py`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from modgs_ns.cli import one_line_errors, provide_ffmpeg
from modgs_ns.data.correspondences import Correspondences
from modgs_ns.viewer_controls import TrainCameraView


@dataclass
class ModgsPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline's options; the phase switch follows the model's stage1.steps."""

    _target: Type = field(default_factory=lambda: ModgsPipeline)


class ModgsPipeline(VanillaPipeline):
    """Every ns-* command builds its modgs run here, so modgs's typed errors become one line and exit
    code 1 here (a scene whose caches are stale is refused with the command that rebuilds them)."""

    def __init__(self, config: ModgsPipelineConfig, *args, **kwargs):
        if Path(sys.argv[0]).name == "ns-render":  # the one ns-* command that writes video
            provide_ffmpeg()
        with one_line_errors("modgs-data"):
            config.model.check()
            super().__init__(config, *args, **kwargs)
        # Viewer: a button that puts the view at the (first) training camera; nerfstudio's viewer
        # installs ViewerElements / ViewerControls found as attributes of the pipeline.
        cam0 = self.datamanager.train_dataset.cameras[0]
        c2w0 = cam0.camera_to_worlds.detach().cpu().numpy()
        fov0 = 2.0 * float(torch.atan(cam0.cy / cam0.fy).item())  # vertical field of view, as viser's
        self._train_view = TrainCameraView(lambda: c2w0, fov0)
        self.view_train_camera = self._train_view.button
        self.view_control = self._train_view.control

    @property
    def pairs(self) -> Correspondences:
        """The scene's 3D pairs, held out as the model's stage-1 options say."""
        c = self.model.config
        return self.datamanager.stage1_pairs(c.stage1.heldout_fraction, c.deformation.seed)

    def get_train_loss_dict(self, step: int):
        if not self.model.phases.in_stage1(step):
            return super().get_train_loss_dict(step)
        c, stop = self.model.config, self.model.stage1_stop
        pairs = self.pairs
        if stop.due(step, c.stage1):
            self.model.stage1_evaluate(pairs, step)
        batch = None
        if not stop.stopped:
            batch = self.datamanager.stage1_batch(step, c.stage1.points, c.deformation.seed, c.stage1.moving_fraction)
        loss_dict = self.model.stage1_loss_dict(batch)
        return {}, loss_dict, {"flow3d_rmse": torch.sqrt(loss_dict["flow3d_loss"].detach())}

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        def switch(step: int) -> None:
            pairs = self.pairs
            self.model.initialize_canonical(
                pairs, self.datamanager.train_images_by_frame(pairs), attrs.optimizers, step
            )

        at_switch = [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION]
        return super().get_training_callbacks(attrs) + [
            TrainingCallback(at_switch, switch, iters=(self.model.phases.stage1_steps,))
        ]
