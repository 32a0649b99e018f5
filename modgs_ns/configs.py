"""Method presets registered with nerfstudio: `modgs` (paper-sized) and `modgs-cpu` (minutes on a CPU).

The TrainerConfig is built explicitly from splatfacto's pieces rather than deep-copied from
nerfstudio's method table: importing that table from a plugin module that nerfstudio is itself
discovering fails with a partially initialised module.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
from modgs_ns.data.modgs_dataset import ModgsDataset
from modgs_ns.model.modgs_model import ModgsModelConfig


def _optimizers(max_steps: int, means_lr: float) -> dict:
    def adam(lr, sched=None):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": sched}

    return {
        "means": adam(means_lr, ExponentialDecaySchedulerConfig(lr_final=means_lr / 100, max_steps=max_steps)),
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "scales": adam(0.005),
        "quats": adam(0.001),
        "deform": adam(1e-3, ExponentialDecaySchedulerConfig(lr_final=1e-5, max_steps=max_steps)),
        "camera_opt": adam(1e-4, ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=max_steps)),
    }


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _trainer(method_name: str, max_steps: int, model: ModgsModelConfig, means_lr: float, vis: str) -> TrainerConfig:
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_image=max(100, max_steps // 10),
        steps_per_eval_batch=0,
        steps_per_save=max(500, max_steps // 5),
        steps_per_eval_all_images=max_steps * 10,  # all test cameras: use ns-eval / modgs-eval instead
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                _target=FullImageDatamanager[ModgsDataset],
                dataparser=ModgsDataParserConfig(),
                cache_images_type="uint8",
            ),
            model=model,
        ),
        optimizers=_optimizers(max_steps, means_lr),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        machine=MachineConfig(device_type=_default_device()),
        vis=vis,
    )


modgs_method = MethodSpecification(
    config=_trainer("modgs", 30000, ModgsModelConfig(), means_lr=1.6e-4, vis="viewer"),
    description="MoDGS: dynamic Gaussian splatting from casual monocular video (paper settings)",
)

# A few minutes on 2 CPU cores: fewer steps, densification compressed into them, no opacity
# resets (a reset late in a short run costs more than it prunes), larger means LR for the
# metric (unnormalised) generated scene.
modgs_cpu_method = MethodSpecification(
    config=_trainer(
        "modgs-cpu",
        1500,
        ModgsModelConfig(
            warmup_length=200,
            refine_every=100,
            stop_split_at=1000,
            reset_alpha_every=1000,
            densify_grad_thresh=0.0004,
            cull_scale_thresh=0.5,
            stop_screen_size_at=0,
        ),
        means_lr=8e-4,
        vis="tensorboard",
    ),
    description="MoDGS sized for a CPU: short schedule for the generated scene and smoke runs",
)
