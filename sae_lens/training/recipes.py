"""Training recipes: named sets of config values, chosen with one field,
`LanguageModelSAERunnerConfig.recipe`.

- `"5.6.0"` (the default) changes nothing: every field keeps its own default, as in
  SAELens 5.6.0.
- `"recommended"`: the choices the short-budget study in docs/training.md found better
  (see `recommended_values`).

Fields the user sets win over the recipe. "Set" means passed to the constructor: as a
keyword or positional argument in Python, a key of a YAML/JSON config file or of
`from_dict`, a flag on the command line. A passed field keeps its value even when it
equals the default (`optimizer="adam"` with the recommended recipe trains with Adam).
`track_explicit_fields` records the passed names around the dataclass's `__init__`;
a config built another way (a subclass's own `__init__`) counts the fields that differ
from their defaults as set. A saved run config names every field, so loading one gives
back exactly the values it was trained with.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import torch

RECIPE_NAMES = ("5.6.0", "recommended")

# The peak learning rate of each optimizer at 2**14 latents, scaled by
# 1 / sqrt(d_sae / 2**14) (`scale_lr_with_width`): sparsify's rates for signsgd (signum)
# and adam; muon's is sparsify's 2e-3 at any width, expressed at the reference width.
RECOMMENDED_LR = {"signsgd": 5e-3, "adam": 2e-4, "muon": 2e-3}

# The encoder norm of the recipe's sign-updated SAEs: sparsify's (an nn.Linear initialised
# U(-1/sqrt(d_in), 1/sqrt(d_in)) has rows of norm ~1/sqrt(3)). Sign steps move every weight
# by lr, so the weights' scale sets their relative size: this start trained better than the
# least-squares one (`tied_encoder_norm`, 0.385 on the embedded-shaped benchmark) although
# that reconstructs better at step 0 (explained variance after 50 / 200 steps 0.887 / 0.921
# against 0.886 / 0.917).
SIGN_ENCODER_NORM = 3**-0.5

_passed_fields: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "sae_lens_passed_config_fields", default=None
)

T = TypeVar("T")


def track_explicit_fields(cls: type[T]) -> type[T]:
    """Wrap a dataclass's `__init__` so that its `__post_init__` can read, with
    `explicit_fields`, the names of the fields the caller passed."""
    generated: Callable[..., None] = cls.__init__  # type: ignore[misc]
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        token = _passed_fields.set(frozenset(names[: len(args)]) | frozenset(kwargs))
        try:
            generated(self, *args, **kwargs)
        finally:
            _passed_fields.reset(token)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def explicit_fields(cfg: Any) -> frozenset[str]:
    """The fields of `cfg` the user set: those passed to the constructor now running, or
    (outside `track_explicit_fields`'s `__init__`) those that differ from their defaults."""
    passed = _passed_fields.get()
    if passed is not None:
        return passed
    return frozenset(
        f.name for f in fields(cfg) if f.init and getattr(cfg, f.name) != _default_of(f)
    )


def _default_of(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def apply_recipe(cfg: Any) -> None:
    """Set the recipe's values on the fields of `cfg` the user did not set (call in
    `__post_init__` once `d_sae` and `activation_fn_kwargs` are derived, before the values
    that derive from the recipe's, such as `lr_end`)."""
    if cfg.recipe not in RECIPE_NAMES:
        raise ValueError(f"recipe must be one of {list(RECIPE_NAMES)}, got {cfg.recipe!r}")
    if cfg.recipe == "5.6.0":
        return
    explicit = explicit_fields(cfg)
    for name, value in recommended_values(cfg, explicit).items():
        if name not in explicit:
            setattr(cfg, name, value)


def tied_encoder_norm(d_in: int, d_sae: int, n_active: int) -> float:
    """The encoder norm that makes a freshly initialised SAE with `W_enc` parallel to a
    unit-norm `W_dec.T` reconstruct best: for isotropic activations x of norm r, the
    n_active latents with the largest projections w.x ~ r z / sqrt(d_in) (z the top
    n_active of d_sae standard normals) reconstruct s * sum (w.x) w, whose least-squares
    scale is s = 1 / (1 + n_active * E[z^2] / d_in). 0.51 for d_in 256, 4,096 latents,
    k 32 (0.52 measured on the benchmark's activations); 0.11 for a ReLU SAE of 16x
    width, where half the latents are active."""
    ranks = torch.arange(1, n_active + 1, dtype=torch.float64)
    z = torch.special.ndtri(1 - (ranks - 0.5) / d_sae)  # expected top order statistics
    return 1.0 / (1.0 + n_active * float((z**2).mean()) / d_in)


def recommended_values(cfg: Any, explicit: frozenset[str]) -> dict[str, Any]:
    """The recommended recipe's values for `cfg`, given the fields the user set (a value
    may depend on another field's: the learning rate on the optimizer)."""

    def chosen(name: str, value: Any) -> Any:
        return getattr(cfg, name) if name in explicit else value

    # sign updates for the TopK family (the loss is the reconstruction's alone); Adam where
    # an L1/L0 penalty joins it (signSGD minimised that objective worse, docs/training.md)
    has_k = cfg.activation_fn_kwargs.get("k") is not None
    optimizer = chosen("optimizer", "signsgd" if has_k else "adam")
    values: dict[str, Any] = {
        "optimizer": optimizer,
        "schedule_free": optimizer == "signsgd",
        "lr": RECOMMENDED_LR[optimizer] if optimizer in RECOMMENDED_LR else cfg.lr,
        # the recipe's rates are per 2**14 latents; a learning rate the user gives is used
        # as it is unless they also ask for the scaling
        "scale_lr_with_width": "lr" not in explicit,
        "adam_beta1": 0.9,  # used by Adam (and Muon's Adam part): the peers' default
        # W_enc = W_dec.T scaled so the fresh SAE reconstructs as well as it can, b_dec the
        # activations' mean: a good SAE from the first step on
        "init_encoder_as_decoder_transpose": True,
        "encoder_init_norm": (
            SIGN_ENCODER_NORM
            if optimizer == "signsgd"
            else tied_encoder_norm(cfg.d_in, cfg.d_sae, _n_active(cfg))
        ),
        "b_dec_init_method": "mean",
    }
    return values


def _n_active(cfg: Any) -> int:
    """Latents active per token at initialisation: k where the activation has one, else
    half of them (a ReLU of a zero-bias, symmetric pre-activation)."""
    k = cfg.activation_fn_kwargs.get("k")
    return int(k) if k is not None else cfg.d_sae // 2
