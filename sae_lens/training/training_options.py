"""Validation and derived values of the training options SAELens 5.6.0 lacked (the
optimizer, learning-rate scaling, gradient clipping and accumulation, k decay, checkpoint
spacing); `LanguageModelSAERunnerConfig` declares them and calls `check_training_options`.
A leaf module: it imports nothing of the package but the architecture registry.

- k decay (`k_decay_steps` > 0): step t of training keeps
  round(initial_k * (1 - t / T) + k * t / T) latents per token for t < T = k_decay_steps,
  then k (sparsify's schedule); `initial_k` defaults to min(d_sae, 10 * d_in), sparsify's
  start. (lm_saes' `initial_k` is a multiple of k and its schedule rounds up: its
  `initial_k=m, k_warmup_steps=T` is ours `initial_k=m*k, k_decay_steps=T` up to rounding.)
- log-spaced checkpoints (`checkpoint_spacing="log"`): the n_checkpoints - 1 checkpoints
  inside the run come after steps ceil(S ** (i / n_checkpoints)), i = 1..n - 1, of the S
  training steps (lm_saes' "log" mode), merged where they fall on the same step.
"""

from __future__ import annotations

import math
from typing import Any

from sae_lens.saes.base import Architecture
from sae_lens.saes.registry import get_architecture

OPTIMIZER_NAMES = ("adam", "signsgd", "muon")
CHECKPOINT_SPACINGS = ("linear", "log")


def check_training_options(cfg: Any) -> None:
    """Raise ValueError naming the field when one of these options is out of range or
    does not fit the rest of the config."""
    if cfg.optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZER_NAMES)}, got {cfg.optimizer!r}")
    if cfg.schedule_free and cfg.optimizer != "signsgd":
        raise ValueError(
            f"schedule_free averaging is implemented for optimizer='signsgd' only, got "
            f"optimizer={cfg.optimizer!r} (set schedule_free=False or optimizer='signsgd')"
        )
    if cfg.checkpoint_spacing not in CHECKPOINT_SPACINGS:
        raise ValueError(
            f"checkpoint_spacing must be one of {list(CHECKPOINT_SPACINGS)}, "
            f"got {cfg.checkpoint_spacing!r}"
        )
    if cfg.encoder_init_norm is not None and cfg.encoder_init_norm <= 0:
        raise ValueError(f"encoder_init_norm must be > 0 or None, got {cfg.encoder_init_norm!r}")
    if cfg.max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0: no clipping), got {cfg.max_grad_norm!r}")
    steps = cfg.gradient_accumulation_steps
    if steps < 1 or cfg.train_batch_size_tokens % steps:
        raise ValueError(
            f"gradient_accumulation_steps must be a positive divisor of train_batch_size_tokens "
            f"({cfg.train_batch_size_tokens}), got {steps!r}"
        )
    if cfg.k_decay_steps < 0:
        raise ValueError(f"k_decay_steps must be >= 0, got {cfg.k_decay_steps!r}")
    if cfg.k_decay_steps > 0:
        _check_k_decay(cfg)


def _check_k_decay(cfg: Any) -> None:
    architecture = get_architecture(cfg.architecture)
    if type(architecture).set_k is Architecture.set_k or "k" not in cfg.activation_fn_kwargs:
        raise ValueError(
            f"k_decay_steps needs an architecture with a k (activation_fn_kwargs['k'], e.g. "
            f"topk); {cfg.architecture!r} has none (set k_decay_steps=0)"
        )
    k, initial_k = cfg.activation_fn_kwargs["k"], initial_k_of(cfg)
    if not k <= initial_k <= cfg.d_sae:
        raise ValueError(
            f"initial_k must be between k ({k}) and d_sae ({cfg.d_sae}), got {initial_k}"
        )


def initial_k_of(cfg: Any) -> int:
    """The k the first step of a k-decay run keeps: `initial_k`, else min(d_sae, 10 d_in)."""
    if cfg.initial_k is not None:
        return cfg.initial_k
    return min(cfg.d_sae, 10 * cfg.d_in)


def k_at_step(step: int, initial_k: int, final_k: int, decay_steps: int) -> int:
    """The k of training step `step` (0-based): linear from initial_k at step 0 to final_k
    at step decay_steps, rounded to the nearest integer; final_k from then on."""
    if step >= decay_steps:
        return final_k
    progress = step / decay_steps
    return round(initial_k * (1 - progress) + final_k * progress)


def log_checkpoint_steps(total_steps: int, n_checkpoints: int) -> list[int]:
    """Steps after which the log-spaced checkpoints inside a run of `total_steps` come:
    ceil(total_steps ** (i / n_checkpoints)) for i = 1..n - 1, distinct, below total_steps."""
    steps = {math.ceil(total_steps ** (i / n_checkpoints) - 1e-9) for i in range(1, n_checkpoints)}
    return sorted(s for s in steps if 1 <= s < total_steps)


def checkpoint_thresholds(cfg: Any) -> list[int]:
    """Token counts after which a run of `cfg` (a `LanguageModelSAERunnerConfig`) writes a
    checkpoint (once the count exceeds one): every `total / n_checkpoints` tokens strictly
    inside the run, so `n_checkpoints - 1` of them (5.6.0's spacing); with
    `checkpoint_spacing="log"`, after the steps of `log_checkpoint_steps`."""
    if cfg.n_checkpoints == 0:
        return []
    if cfg.checkpoint_spacing == "log":
        steps = log_checkpoint_steps(cfg.total_training_steps, cfg.n_checkpoints)
        return [(step - 1) * cfg.train_batch_size_tokens for step in steps]
    spacing = max(cfg.total_training_tokens // cfg.n_checkpoints, 1)
    return list(range(0, cfg.total_training_tokens, spacing))[1:]
