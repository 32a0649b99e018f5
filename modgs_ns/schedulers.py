"""Learning-rate schedules for a two-phase run (stage 1, then stage 2 from step `switch_step`).

A phase-aware schedule has `for_phases(phases)`: the trainer hands it the run's `Phases` (stage-1 steps,
total steps, whether stage 2 keeps the deformation) and trains with the copy it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Type

from nerfstudio.engine.schedulers import (
    ExponentialDecayScheduler,
    ExponentialDecaySchedulerConfig,
    Scheduler,
    SchedulerConfig,
)
from torch.optim import Optimizer, lr_scheduler


@dataclass
class TwoPhaseExponentialSchedulerConfig(SchedulerConfig):
    """lr = lr_init * gamma1^step before `switch_step`, then stage2_lr * gamma2^(step - switch_step).

    MoDGS trains its deformation with Adam and ExponentialLR in both stages, restarting the
    learning rate (and the optimizer) for stage 2 (method reference §3.4, §5.4).
    """

    _target: Type = field(default_factory=lambda: TwoPhaseExponentialScheduler)
    switch_step: int = 0
    """First step of stage 2 (`for_phases` sets it from the run's phases)."""
    gamma1: float = 0.99999
    """Stage-1 decay per step (MoDGS: 0.99999 over 500k steps)."""
    stage1_final: Optional[float] = None
    """If set, gamma1 is derived so that the stage-1 rate ends at this fraction of its start at the
    switch, whatever the stage-1 step count (a fixed gamma with a short stage 1 either barely decays
    or decays to nothing half-way)."""
    stage2_lr: float = 1e-4
    """Stage-2 learning rate (MoDGS restarts the deformation's optimizer at 1e-4)."""
    gamma2: float = 0.9999
    """Stage-2 decay per step."""

    def for_phases(self, phases) -> "TwoPhaseExponentialSchedulerConfig":
        """This schedule for a run's phases; a deformation kept in stage 2 gets learning rate 0 there."""
        return replace(
            self,
            switch_step=phases.stage1_steps,
            stage2_lr=0.0 if phases.deformation_frozen_in_stage2 else self.stage2_lr,
        )


class TwoPhaseExponentialScheduler(Scheduler):
    config: TwoPhaseExponentialSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        c = self.config

        gamma1 = c.gamma1 if c.stage1_final is None else c.stage1_final ** (1.0 / max(c.switch_step, 1))

        def factor(step: int) -> float:
            if step < c.switch_step:
                return gamma1**step
            return (c.stage2_lr / lr_init) * c.gamma2 ** (step - c.switch_step)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with Python-float factors: its numpy factors put numpy scalars into
    every checkpoint (scheduler and optimizer state), which torch's safe loader refuses. With plain floats
    modgs checkpoints load with weights_only and no widened allow-list."""

    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)
    unscaled_lr: Optional[float] = None
    """The rate the decay (lr_final) is defined for, when the optimizer's is a multiple of it (set by the trainer)."""


@dataclass
class Stage2ExponentialDecaySchedulerConfig(FloatExponentialDecaySchedulerConfig):
    """Exponential decay over stage 2 alone (the Gaussians' positions: they are built at the switch);
    learning rate 0 during stage 1."""

    def for_phases(self, phases) -> "Stage2ExponentialDecaySchedulerConfig":
        return replace(self, warmup_steps=phases.stage1_steps, lr_pre_warmup=0.0, max_steps=phases.total_steps)


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        # Factors of the unscaled rates; LambdaLR multiplies them into the optimizer's (scaled) rate.
        sched = super().get_scheduler(optimizer, self.config.unscaled_lr or lr_init)
        factor = sched.lr_lambdas[0]
        sched.lr_lambdas = [lambda step: float(factor(step))]
        sched._last_lr = [float(lr) for lr in sched._last_lr]
        for group in optimizer.param_groups:
            group["lr"] = float(group["lr"])
        return sched
