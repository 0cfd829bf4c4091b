"""The optimizers a training run can choose (`LanguageModelSAERunnerConfig.optimizer`):

- `"adam"` (5.6.0's): torch's Adam with the run's `adam_beta1` / `adam_beta2`.
- `"signsgd"`: steepest descent in the L-infinity norm, `p -= lr * sign(grad)`; with
  `schedule_free=True` wrapped in schedule-free averaging (Defazio et al., 2024), as
  EleutherAI sparsify trains by default (its `signum` optimizer).
- `"muon"`: momentum orthogonalised by a Newton-Schulz iteration for the 2-D weights
  (`W_enc`, `W_dec`), Adam for every other parameter (biases, thresholds, scales).

`scale_lr_with_width=True` divides the learning rate (and `lr_end`) by
sqrt(d_sae / 16384), sparsify's rule: `lr` is then the rate of a 16,384-latent SAE.

Schedule-free averaging works with three points per parameter: `z`, the iterate the base
optimizer steps (kept in the optimizer's state); `x`, the running average of the `z`s,
which is the SAE to evaluate and save; and `y = (1 - momentum) * z + momentum * x`, where
gradients are taken, which the parameters hold during training (x is derived from y and
z). `averaged_weights(optimizer)` puts `x` into the parameters and restores `y` exactly
afterwards (a copy), so evaluating or saving never changes the training trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn, optim

from sae_lens.training.optim import make_adam
from sae_lens.training.training_options import OPTIMIZER_NAMES

# sparsify's reference width for `scale_lr_with_width`: lr is the rate of 2**14 latents
LR_REFERENCE_WIDTH = 2**14
SCHEDULE_FREE_MOMENTUM = 0.95  # sparsify's ScheduleFreeWrapper(momentum=0.95)
# Muon's settings (sparsify's and Keller Jordan's): Nesterov momentum 0.95, 5 quintic
# Newton-Schulz steps with these coefficients, decoupled weight decay 0.1.
MUON_MOMENTUM = 0.95
MUON_NS_STEPS = 5
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_WEIGHT_DECAY = 0.1


def width_lr_factor(d_sae: int) -> float:
    """The factor `scale_lr_with_width` multiplies the learning rate by: 1 / sqrt(d_sae / 2**14)."""
    return 1.0 / math.sqrt(d_sae / LR_REFERENCE_WIDTH)


def run_lr(cfg: Any) -> tuple[float, float]:
    """The (peak lr, lr_end) a run trains with: the config's, scaled by `width_lr_factor`
    when `cfg.scale_lr_with_width`."""
    factor = width_lr_factor(cfg.d_sae) if cfg.scale_lr_with_width else 1.0
    return cfg.lr * factor, cfg.lr_end * factor


def build_optimizer(cfg: Any, module: nn.Module, lr: float) -> optim.Optimizer:
    """The optimizer `cfg.optimizer` names over `module`'s parameters at learning rate `lr`
    (from `run_lr`). `"adam"` is exactly 5.6.0's (`make_adam`)."""
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    if cfg.optimizer == "adam":
        return make_adam(module, lr, betas)
    if cfg.optimizer == "signsgd":
        momentum = SCHEDULE_FREE_MOMENTUM if cfg.schedule_free else 0.0
        return SignSGD(module.parameters(), lr=lr, schedule_free_momentum=momentum)
    if cfg.optimizer == "muon":
        return Muon(module.parameters(), lr=lr, adam_betas=betas)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZER_NAMES)}, got {cfg.optimizer!r}")


@contextmanager
def averaged_weights(optimizer: optim.Optimizer) -> Iterator[None]:
    """Inside the block the parameters hold the optimizer's averaged weights (schedule-free
    `x`); they hold the training weights again, exactly, after it. A no-op for optimizers
    that keep no average."""
    averaged = getattr(optimizer, "averaged_weights", None)
    if averaged is None:
        yield
        return
    with averaged():
        yield


def use_averaged_weights(optimizer: optim.Optimizer) -> None:
    """Leave the averaged weights in the parameters for good (at the end of training)."""
    use = getattr(optimizer, "use_averaged_weights", None)
    if use is not None:
        use()


class SignSGD(optim.Optimizer):
    """signSGD, `z -= lr * sign(grad)`, optionally schedule-free.

    With `schedule_free_momentum` = b > 0 the parameters hold y, where gradients are taken,
    and the state holds z. Each step: x = (y - (1 - b) * z) / b (the average, derived);
    z -= lr * sign(grad); c = w / sum(w) with w = max lr so far ** 2 (the uniform average
    when lr is constant); x = (1 - c) * x + c * z; y = (1 - b) * z + b * x. z starts at the
    initial parameters. This is schedulefree's `ScheduleFreeWrapper` (what sparsify trains
    with): a change the trainer makes to y between steps (the decoder's renormalisation)
    carries over to the average x, which keeps x's decoder rows near unit norm (z's rows,
    never renormalised, grow by about lr**2 * d_in in squared norm per step). With b = 0
    the parameters are z (plain signSGD).
    """

    def __init__(
        self, params: Iterable[nn.Parameter], lr: float, schedule_free_momentum: float = 0.0
    ) -> None:
        if lr <= 0:
            raise ValueError(f"SignSGD needs lr > 0, got {lr!r}")
        if not 0.0 <= schedule_free_momentum < 1.0:
            raise ValueError(
                f"schedule_free_momentum must be in [0, 1), got {schedule_free_momentum!r}"
            )
        defaults = {"lr": lr, "schedule_free_momentum": schedule_free_momentum}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("SignSGD.step takes no closure")
        for group in self.param_groups:
            lr, b = group["lr"], group["schedule_free_momentum"]
            params = [p for p in group["params"] if p.grad is not None]
            if b == 0.0:
                for p in params:
                    p.add_(p.grad.sign(), alpha=-lr)
                continue
            group["lr_max"] = max(lr, group.get("lr_max", 0.0))
            weight = group["lr_max"] ** 2
            group["weight_sum"] = group.get("weight_sum", 0.0) + weight
            c = weight / group["weight_sum"]
            for p in params:
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone()
                z = state["z"]
                p.lerp_(z, 1.0 - 1.0 / b)  # y -> x
                z.add_(p.grad.sign(), alpha=-lr)
                p.lerp_(z, c)  # the new average x
                p.lerp_(z, 1.0 - b)  # x -> y

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside the block the parameters hold the average x; y comes back exactly after."""
        held = [(p, p.detach().clone()) for p in self._averaged_params()]
        self.use_averaged_weights()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, y in held:
                    p.copy_(y)

    @torch.no_grad()
    def use_averaged_weights(self) -> None:
        """Put the average x = (y - (1 - b) z) / b into the parameters (parameters not
        stepped yet are their own average)."""
        for p in self._averaged_params():
            b = self._momentum_of(p)
            p.lerp_(self.state[p]["z"], 1.0 - 1.0 / b)

    def _averaged_params(self) -> list[nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"] if "z" in self.state[p]]

    def _momentum_of(self, p: nn.Parameter) -> float:
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))[
            "schedule_free_momentum"
        ]


def newton_schulz_orthogonalize(
    g: torch.Tensor,
    steps: int = MUON_NS_STEPS,
    coefficients: tuple[float, float, float] = MUON_NS_COEFFICIENTS,
) -> torch.Tensor:
    """An approximately orthogonal matrix with g's singular vectors (U V^T of g = U S V^T,
    singular values brought to ~[0.7, 1.2]): `steps` quintic Newton-Schulz iterations
    X <- a X + (b A + c A^2) X with A = X X^T, from X = g / ||g||_F. In float32 at least
    (sparsify and torch.optim.Muon iterate in bfloat16)."""
    a, b, c = coefficients
    x = g if g.dtype in (torch.float32, torch.float64) else g.float()
    transposed = x.shape[0] > x.shape[1]
    if transposed:  # iterate on the wide orientation: A is the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(g.dtype)


class Muon(optim.Optimizer):
    """Muon for 2-D parameters, Adam for the others, in one optimizer (so one LR schedule
    and one state dict cover both).

    A 2-D parameter W [m, n] with gradient G: decoupled weight decay W *= 1 - lr * wd;
    momentum M = b M + (1 - b) G; Nesterov direction D = (1 - b) G + b M;
    W -= lr * 0.2 * sqrt(max(m, n)) * NS(D) (the factor gives the update Adam's RMS, so
    one lr suits both groups). Other parameters: Adam with `adam_betas`, eps 1e-8.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = MUON_MOMENTUM,
        weight_decay: float = MUON_WEIGHT_DECAY,
        ns_steps: int = MUON_NS_STEPS,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"Muon needs lr > 0, got {lr!r}")
        params = list(params)
        groups = [
            {"params": [p for p in params if p.ndim == 2], "use_muon": True},
            {"params": [p for p in params if p.ndim != 2], "use_muon": False},
        ]
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "ns_steps": ns_steps,
            "adam_betas": adam_betas,
            "eps": 1e-8,
        }
        super().__init__([g for g in groups if g["params"]], defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon_update(p, group)
                else:
                    self._adam_update(p, group)

    def _muon_update(self, p: nn.Parameter, group: dict[str, Any]) -> None:
        lr, beta = group["lr"], group["momentum"]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"]
        buf.lerp_(p.grad, 1 - beta)
        direction = p.grad.lerp(buf, beta)  # Nesterov
        update = newton_schulz_orthogonalize(direction, group["ns_steps"])
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))

    def _adam_update(self, p: nn.Parameter, group: dict[str, Any]) -> None:
        beta1, beta2 = group["adam_betas"]
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denominator = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**t))
