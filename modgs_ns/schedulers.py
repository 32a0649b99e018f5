"""Learning-rate schedules for a two-phase run (stage 1, then stage 2 from step `switch_step`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer, lr_scheduler


@dataclass
class TwoPhaseExponentialSchedulerConfig(SchedulerConfig):
    """lr = lr_init * gamma1^step before `switch_step`, then stage2_lr * gamma2^(step - switch_step).

    MoDGS trains its deformation with Adam and ExponentialLR in both stages, restarting the
    learning rate (and the optimizer) for stage 2 (method reference §3.4, §5.4).
    """

    _target: Type = field(default_factory=lambda: TwoPhaseExponentialScheduler)
    switch_step: int = 0
    gamma1: float = 0.99999
    stage2_lr: float = 1e-4
    gamma2: float = 0.9999


class TwoPhaseExponentialScheduler(Scheduler):
    config: TwoPhaseExponentialSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        c = self.config

        def factor(step: int) -> float:
            if step < c.switch_step:
                return c.gamma1**step
            return (c.stage2_lr / lr_init) * c.gamma2 ** (step - c.switch_step)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
