"""Method presets registered with nerfstudio: `modgs` (paper settings) and `modgs-cpu` (a CPU-sized run).

The TrainerConfig is built explicitly from splatfacto's pieces rather than deep-copied from
nerfstudio's method table: importing that table from a plugin module that nerfstudio is itself
discovering fails with a partially initialised module.

One run = stage 1 (N1 = `pipeline.model.stage1.steps` steps) + stage 2 (the rest of
`max_num_iterations`): `ModgsTrainer` builds the run's `Phases` from its config and hands them to the
phase-aware schedules, whatever is changed on the command line.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Literal, Type

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.plugins.types import MethodSpecification
from nerfstudio.utils.decorators import check_main_thread

from modgs_ns.cli import one_line_errors
from modgs_ns.data.modgs_datamanager import ModgsDataManager
from modgs_ns.data.modgs_dataparser import ModgsDataParserConfig
from modgs_ns.model.canonical_init import CanonicalInitConfig
from modgs_ns.model.config import ModgsModelConfig
from modgs_ns.model.deformation import DeformationConfig
from modgs_ns.model.lifespans import LifespanConfig
from modgs_ns.model.losses import DepthLossConfig
from modgs_ns.model.phases import Phases
from modgs_ns.model.stage1 import Stage1Config
from modgs_ns.pipeline import ModgsPipelineConfig
from modgs_ns.preprocess.pairs import ensure_caches
from modgs_ns.scene.errors import ConfigError
from modgs_ns.schedulers import (
    FloatExponentialDecaySchedulerConfig,
    Stage2ExponentialDecaySchedulerConfig,
    TwoPhaseExponentialSchedulerConfig,
)


def phased_optimizer_configs(optimizers: dict, phases: Phases, lr_scales: Dict[str, float]) -> dict:
    """The optimizer configs a run trains with: each phase-aware schedule (`for_phases`) for these
    phases, and the learning rates of the groups in `lr_scales` multiplied by their factor."""
    out = {}
    for name, entry in optimizers.items():
        opt, sched = entry["optimizer"], entry.get("scheduler")
        if sched is not None and hasattr(sched, "for_phases"):
            sched = sched.for_phases(phases)
        k = lr_scales.get(name)
        if k is not None:
            if sched is not None and hasattr(sched, "unscaled_lr"):
                sched = replace(sched, unscaled_lr=opt.lr)  # the decay's factors: those of the unscaled rates
            opt = replace(opt, lr=opt.lr * k)
        out[name] = {**entry, "optimizer": opt, "scheduler": sched}
    return out


class ModgsTrainer(Trainer):
    """nerfstudio's Trainer with three changes: option conflicts stop with one line (ns-train enters modgs
    here); `--max-num-iterations` is the run's total, so a resumed run continues to it on the same
    learning-rate schedules as an uninterrupted one (nerfstudio would run that many *more* steps);
    checkpoints are written atomically, and an unreadable newest one is skipped for the previous one."""

    def __init__(self, config: "ModgsTrainerConfig", *args, **kwargs):
        with one_line_errors("modgs"):
            config.check()
        super().__init__(config, *args, **kwargs)
        self.total_steps = config.max_num_iterations

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        with one_line_errors("modgs"):
            self._pick_readable_checkpoint()
        with one_line_errors("modgs-data"):  # only ns-train (and modgs-preprocess) rebuild stale caches
            dm = self.config.pipeline.datamanager
            ensure_caches(Path(dm.data if dm.data is not None else dm.dataparser.data))
        super().setup(test_mode)
        self.config.max_num_iterations = max(self.total_steps - self._start_step, 0)

    def train(self) -> None:
        """nerfstudio's loop, unless the loaded run already reached its total (nerfstudio's writer then
        fails on an empty step log): say so and change nothing."""
        if self.config.max_num_iterations <= 0:
            print(
                f"modgs: the run is already finished (step {self._start_step - 1} of --max-num-iterations "
                f"{self.total_steps}); nothing to train",
                file=sys.stderr,
                flush=True,
            )
            return
        super().train()

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers, on the schedules of this run's phases."""
        model = self.pipeline.model
        phases = model.config.phases(total_steps=self.total_steps)
        configs = phased_optimizer_configs(self.config.optimizers, phases, model.learning_rate_scales())
        return Optimizers(configs, self.pipeline.get_param_groups())

    def _pick_readable_checkpoint(self) -> None:
        """With --load-dir and no --load-step: the newest checkpoint that loads (warning for each skipped)."""
        if self.config.load_dir is None or self.config.load_step is not None:
            return
        ckpts = sorted(Path(self.config.load_dir).glob("step-*.ckpt"), reverse=True)
        for path in ckpts:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # truncated, empty, foreign: skip it, never train from it
                print(
                    f"modgs: warning: checkpoint {path} is unreadable ({type(err).__name__}); trying the previous one",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            self.config.load_step = int(path.stem.split("-")[1])
            print(f"modgs: resuming from {path.name}", file=sys.stderr, flush=True)
            return
        raise ConfigError(f"no readable checkpoint (step-*.ckpt) in {self.config.load_dir}")

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written beside the folder first and renamed in: a kill mid-write
        leaves no file that --load-dir or the ns-* loaders would pick."""
        final_dir = self.checkpoint_dir
        staging = final_dir.parent / ".partial-checkpoint"
        shutil.rmtree(staging, ignore_errors=True)  # what a killed write left
        self.checkpoint_dir = staging
        try:
            super().save_checkpoint(step)
        finally:
            self.checkpoint_dir = final_dir
        final_dir.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:09d}.ckpt"
        os.replace(staging / name, final_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        if self.config.save_only_latest_checkpoint:
            for f in final_dir.glob("step-*.ckpt"):
                if f.name != name:
                    f.unlink()


@dataclass
class ModgsTrainerConfig(TrainerConfig):
    """TrainerConfig whose learning-rate schedules follow the stage-1 / stage-2 split."""

    _target: Type = field(default_factory=lambda: ModgsTrainer)

    def check(self) -> None:
        """ConfigError on options that cannot work together."""
        n1 = self.pipeline.model.stage1.steps
        if self.max_num_iterations <= n1 and not self._resuming():
            raise ConfigError(
                f"--max-num-iterations ({self.max_num_iterations}) must exceed "
                f"--pipeline.model.stage1.steps ({n1}): stage 2 needs steps"
            )
        self.pipeline.model.check()

    def _resuming(self) -> bool:
        return self.load_dir is not None or self.load_checkpoint is not None


def _optimizers(
    stage1_lr_nvp: float,
    stage1_lr_time: float,
    stage1_gamma: float = 0.99999,
    stage1_final=None,
    stage2_lr: float = 1e-4,
) -> dict:
    def adam(lr, sched=None):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": sched}

    return {
        # Gaussian LRs in normalized scene units (scene scaled to [-1, 1], MoDGS §2.9); the model
        # rescales the means LR by the scene's extent at the canonical initialization.
        "means": adam(1.6e-4, Stage2ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000)),
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "scales": adam(0.001),
        "quats": adam(0.001),
        "deform_time": adam(
            stage1_lr_time,
            TwoPhaseExponentialSchedulerConfig(gamma1=stage1_gamma, stage1_final=stage1_final, stage2_lr=stage2_lr),
        ),
        "deform": adam(
            stage1_lr_nvp,
            TwoPhaseExponentialSchedulerConfig(gamma1=stage1_gamma, stage1_final=stage1_final, stage2_lr=stage2_lr),
        ),
        "camera_opt": adam(1e-4, FloatExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=30000)),
    }


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _trainer(
    method_name: str, max_steps: int, model: ModgsModelConfig, optimizers: dict, vis: str
) -> ModgsTrainerConfig:
    stage2 = max_steps - model.stage1.steps
    return ModgsTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=max(100, stage2 // 10),
        steps_per_eval_batch=0,
        steps_per_save=max(500, max_steps // 5),
        steps_per_eval_all_images=max_steps * 10,  # all test cameras: use ns-eval instead
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=ModgsPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                _target=ModgsDataManager, dataparser=ModgsDataParserConfig(), cache_images_type="uint8"
            ),
            model=model,
        ),
        optimizers=optimizers,
        # Only this machine can open the viewer (it has no authentication); share it with --viewer.websocket-host 0.0.0.0.
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, websocket_host="127.0.0.1"),
        machine=MachineConfig(device_type=_default_device()),
        vis=vis,
    )


# Paper settings (DyNeRF configs). Stage 1 is shortened from MoDGS's 500k steps to 20k.
modgs_method = MethodSpecification(
    config=_trainer(
        "modgs",
        20000 + 30000,
        ModgsModelConfig(
            stage1=Stage1Config(steps=20000),
            lifespans=LifespanConfig(width=0.5),
            warmup_length=500,
            refine_every=100,
            stop_split_at=15000,
            reset_alpha_every=30,
            densify_grad_thresh=0.0002,
            cull_alpha_thresh=0.005,
            densify_size_thresh=0.01,
            cull_scale_thresh=0.1,
            stop_screen_size_at=0,
        ),
        _optimizers(stage1_lr_nvp=1e-4, stage1_lr_time=1e-3),
        vis="viewer",
    ),
    description="MoDGS: dynamic Gaussian splatting from casual monocular video (paper settings)",
)

# Minutes on 2 CPU cores. Trade-offs (each a documented departure from the paper settings; the
# README's preset table has them all): a ~14x cheaper deformation network (64-wide instead of 256),
# at most 2000 stage-1 steps of 4096 points at learning rate 2e-3 decaying to 10% (instead of 500k
# steps of up to 300k points at 1e-4 / 1e-3), 8k static points per frame capped at 40k (moving points
# all kept, with lifespans), 2000 stage-2 steps with densification compressed into them and no
# opacity resets, static Gaussians not deformed and the deformation kept from stage 1 (with
# lifespans), Gaussians starting as flat discs on their frame's surface, and 50k ordinal pairs per
# step instead of 200k.
modgs_cpu_method = MethodSpecification(
    config=_trainer(
        "modgs-cpu",
        2000 + 2000,
        ModgsModelConfig(
            stage1=Stage1Config(steps=2000, points=4096),
            deformation=DeformationConfig(feature_dims=64, proj_dims=64, hidden=(64, 64), gabor_hidden=64),
            canonical_init=CanonicalInitConfig(points_per_frame=8000, min_points=0, max_points=40000, thickness=0.1),
            lifespans=LifespanConfig(width=0.5, deform_static=False, train_deformation_in_stage2=False),
            depth_loss=DepthLossConfig(ordinal_pairs=50000),
            warmup_length=150,
            refine_every=100,
            stop_split_at=700,
            reset_alpha_every=1000,
            densify_grad_thresh=0.0002,
            cull_alpha_thresh=0.005,
            densify_size_thresh=0.01,
            cull_scale_thresh=0.1,
            stop_screen_size_at=0,
        ),
        _optimizers(stage1_lr_nvp=2e-3, stage1_lr_time=2e-3, stage1_final=0.1),
        vis="tensorboard",
    ),
    description="MoDGS sized for a CPU: small deformation, short stages (trade-offs in the README)",
)
