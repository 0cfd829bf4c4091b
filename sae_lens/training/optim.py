"""The optimizer, and the learning-rate and L1-coefficient schedules, of SAE training.

The learning rate follows three phases, as in SAELens 5.6.0: an optional linear warm-up
from `lr / warm_up_steps` to `lr`, a main phase (constant, cosine annealing to `lr_end`,
or cosine annealing with warm restarts), and an optional linear decay to 0 over the last
`decay_steps` steps. The schedule is computed in closed form from the step index, so a
restored scheduler continues exactly where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn, optim
from torch.optim import lr_scheduler

LR_SCHEDULER_NAMES = ("constant", "cosineannealing", "cosineannealingwarmrestarts")
# devices with torch's fused Adam (one kernel updates every parameter)
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_adam(module: nn.Module, lr: float, betas: tuple[float, float]) -> optim.Adam:
    """Adam over `module`'s parameters, as SAELens trains with; torch's fused implementation
    when every parameter is on a device that has it (about 3x faster on CPU than the
    per-parameter loop, equal up to rounding)."""
    params = list(module.parameters())
    fused = bool(params) and all(p.device.type in _FUSED_ADAM_DEVICES for p in params)
    return optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


@dataclass
class LRMultiplier:
    """Maps an optimizer step index to the factor applied to the base learning rate."""

    scheduler_name: str
    warm_up_steps: int
    main_steps: int
    decay_steps: int
    end_ratio: float  # lr_end / lr: the floor of the cosine schedules
    decay_start_ratio: float  # where the linear decay starts, relative to lr
    cycle_steps: int  # length of one cosine cycle

    def __call__(self, step: int) -> float:
        if step < self.warm_up_steps:
            return self._warm_up(step)
        step_in_main = step - self.warm_up_steps
        if self.decay_steps > 0 and step_in_main >= self.main_steps:
            decay_step = min(step_in_main - self.main_steps, self.decay_steps)
            return self.decay_start_ratio * (1.0 - decay_step / self.decay_steps)
        return self._main(step_in_main)

    def _warm_up(self, step: int) -> float:
        if self.warm_up_steps == 1:
            return 1.0
        start = 1.0 / self.warm_up_steps
        return start + (1.0 - start) * step / (self.warm_up_steps - 1)

    def _main(self, step: int) -> float:
        if self.scheduler_name == "constant":
            return 1.0
        if self.scheduler_name == "cosineannealingwarmrestarts":
            step = step % self.cycle_steps
        cosine = (1.0 + math.cos(math.pi * step / self.cycle_steps)) / 2.0
        return self.end_ratio + (1.0 - self.end_ratio) * cosine


def lr_multiplier(
    scheduler_name: str,
    training_steps: int,
    lr: float,
    warm_up_steps: int,
    decay_steps: int,
    lr_end: float,
    num_cycles: int,
) -> LRMultiplier:
    """The step -> lr factor of a schedule (see `get_lr_scheduler` for the arguments);
    raises ValueError naming the problem when the settings do not form a schedule."""
    name = scheduler_name.lower()
    if name not in LR_SCHEDULER_NAMES:
        raise ValueError(
            f"lr scheduler must be one of {list(LR_SCHEDULER_NAMES)}, got {scheduler_name!r}"
        )
    main_steps = training_steps - warm_up_steps - decay_steps
    if main_steps < 0:
        raise ValueError(
            f"lr warm-up steps ({warm_up_steps}) + decay steps ({decay_steps}) exceed the "
            f"{training_steps} training steps"
        )
    if name != "constant" and main_steps // num_cycles < 1:
        raise ValueError(
            f"{name} needs at least one step per cycle: {main_steps} steps after warm-up "
            f"and decay, {num_cycles} cycle(s)"
        )
    # The constant schedule never reaches lr_end, so its decay starts from lr.
    decay_start = lr if name == "constant" else lr_end
    if decay_steps > 0 and decay_start == 0.0:
        raise ValueError("lr decay steps need lr_end > 0: decaying from 0 to 0 does nothing")
    return LRMultiplier(
        scheduler_name=name,
        warm_up_steps=warm_up_steps,
        main_steps=main_steps,
        decay_steps=decay_steps,
        end_ratio=lr_end / lr,
        decay_start_ratio=decay_start / lr,
        cycle_steps=max(main_steps // num_cycles, 1),
    )


def get_lr_scheduler(
    scheduler_name: str,
    optimizer: optim.Optimizer,
    training_steps: int,
    lr: float,
    warm_up_steps: int,
    decay_steps: int,
    lr_end: float,
    num_cycles: int,
) -> lr_scheduler.LRScheduler:
    """Build the learning-rate schedule of a training run.

    Args:
        scheduler_name: "constant", "cosineannealing" or "cosineannealingwarmrestarts"
            (case-insensitive).
        optimizer: the optimizer whose learning rate is scheduled; its lr should be `lr`.
        training_steps: total number of optimizer steps.
        lr: the peak learning rate.
        warm_up_steps: steps of linear warm-up from lr / warm_up_steps to lr (0 = none).
        decay_steps: final steps of linear decay to 0 (0 = none). It starts from lr for
            the constant schedule and from lr_end for the cosine ones.
        lr_end: the lowest learning rate of the cosine schedules.
        num_cycles: number of cosine cycles for "cosineannealingwarmrestarts".
    """
    multiplier = lr_multiplier(
        scheduler_name, training_steps, lr, warm_up_steps, decay_steps, lr_end, num_cycles
    )
    return lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)


class L1Scheduler:
    """Linear warm-up of the sparsity coefficient from 0 to its final value.

    `current_l1_coefficient` is the value to use for the next training step; call `step()`
    after each step. With `l1_warm_up_steps` = W, step i (0-based) uses
    final * (i / W) for i < W (0 at the first step) and `final` afterwards.
    """

    def __init__(
        self, l1_warm_up_steps: float, total_steps: int, final_l1_coefficient: float
    ) -> None:
        if not isinstance(final_l1_coefficient, (float, int)):
            raise TypeError(
                f"final_l1_coefficient must be a float or int, got {type(final_l1_coefficient).__name__}"
            )
        self.l1_warmup_steps = l1_warm_up_steps
        self.total_steps = total_steps
        self.final_l1_coefficient = final_l1_coefficient
        self.current_step = 0
        self.current_l1_coefficient = 0.0 if l1_warm_up_steps != 0 else final_l1_coefficient

    def __repr__(self) -> str:
        return (
            f"L1Scheduler(final_l1_value={self.final_l1_coefficient}, "
            f"l1_warmup_steps={self.l1_warmup_steps}, total_steps={self.total_steps})"
        )

    def step(self) -> None:
        """Advance one training step and set the coefficient for the next one."""
        if self.current_step < self.l1_warmup_steps:
            fraction = (self.current_step + 1) / self.l1_warmup_steps
            self.current_l1_coefficient = self.final_l1_coefficient * fraction
        else:
            self.current_l1_coefficient = self.final_l1_coefficient
        self.current_step += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule (plain Python numbers)."""
        return {
            "l1_warmup_steps": self.l1_warmup_steps,
            "total_steps": self.total_steps,
            "current_l1_coefficient": self.current_l1_coefficient,
            "final_l1_coefficient": self.final_l1_coefficient,
            "current_step": self.current_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a schedule saved by `state_dict`."""
        unknown = set(state_dict) - set(self.state_dict())
        if unknown:
            raise ValueError(f"unknown L1Scheduler state keys: {sorted(unknown)}")
        for key, value in state_dict.items():
            setattr(self, key, value)
