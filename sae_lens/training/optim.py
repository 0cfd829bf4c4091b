"""The optimizer, and the learning-rate and L1-coefficient schedules, of SAE training.

The learning rate follows three phases, as in SAELens 5.6.0: an optional linear warm-up
from `lr / warm_up_steps` to `lr`, a main phase (constant, cosine annealing to `lr_end`,
or cosine annealing with warm restarts), and an optional linear decay to 0 over the last
`decay_steps` steps. `get_lr_scheduler` builds the same torch schedulers 5.6.0 did, chained
by a `SequentialLR`, so code that inspects them (`scheduler._schedulers`) keeps working and
`state_dict()` / `load_state_dict()` continue a schedule where it stopped.
"""

from __future__ import annotations

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


def check_lr_schedule(
    scheduler_name: str,
    training_steps: int,
    lr: float,
    warm_up_steps: int,
    decay_steps: int,
    lr_end: float,
    num_cycles: int,
) -> None:
    """Raise ValueError naming the problem when these settings (see `get_lr_scheduler`)
    do not form a schedule; 5.6.0's messages where it raised."""
    name = scheduler_name.lower()
    if name not in LR_SCHEDULER_NAMES:
        raise ValueError(
            f"Unsupported scheduler: {name} (expected one of {list(LR_SCHEDULER_NAMES)})"
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
    if decay_steps > 0 and name != "constant" and lr_end == 0.0:
        raise ValueError(
            "Cannot have decay_steps with lr_end=0.0, this would decay from 0 to 0 and be "
            "a waste (set lr_end > 0)."
        )


# The name sae_training_runner validates a run's schedule with.
lr_multiplier = check_lr_schedule


def _main_lr_scheduler(
    name: str, optimizer: optim.Optimizer, steps: int, lr_end: float, num_cycles: int
) -> lr_scheduler.LRScheduler:
    """The scheduler of the phase between warm-up and decay."""
    if name == "constant":
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=_constant_factor)
    if name == "cosineannealing":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr_end)
    return lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=steps // num_cycles, eta_min=lr_end
    )


def _constant_factor(step: int) -> float:
    return 1.0


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
    """Build the learning-rate schedule of a training run: a `SequentialLR` of an optional
    warm-up `LinearLR`, the main scheduler (`LambdaLR`, `CosineAnnealingLR` or
    `CosineAnnealingWarmRestarts`) and an optional decay `LinearLR`, as 5.6.0 built it.

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
    check_lr_schedule(
        scheduler_name, training_steps, lr, warm_up_steps, decay_steps, lr_end, num_cycles
    )
    name = scheduler_name.lower()
    main_steps = training_steps - warm_up_steps - decay_steps
    schedulers = [_main_lr_scheduler(name, optimizer, main_steps, lr_end, num_cycles)]
    milestones: list[int] = []
    if warm_up_steps > 0:
        warm_up = lr_scheduler.LinearLR(
            optimizer,
            start_factor=1 / warm_up_steps,
            end_factor=1.0,
            total_iters=warm_up_steps - 1,
        )
        schedulers.insert(0, warm_up)
        milestones.append(warm_up_steps)
    if decay_steps > 0:
        decay_start = lr if name == "constant" else lr_end
        decay = lr_scheduler.LinearLR(
            optimizer, start_factor=decay_start / lr, end_factor=0.0, total_iters=decay_steps
        )
        schedulers.append(decay)
        milestones.append(training_steps - decay_steps)
    return lr_scheduler.SequentialLR(optimizer, schedulers=schedulers, milestones=milestones)


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
