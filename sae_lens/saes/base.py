"""The `Architecture` interface: everything that differs between SAE architectures lives
behind it (parameters, encode, how decoder norms fold in, training losses), so `SAE`,
`TrainingSAEModule` and the trainer never ask which architecture they hold.

Each method takes the SAE it acts on. Inference methods work on a `SAE`; the `training_*`
methods on a `TrainingSAEModule` and default to their inference counterpart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from sae_lens.saes.transcoder import output_width


class SAEModule(Protocol):
    """What an architecture uses of the SAE it acts on (`sae_lens.SAE` is one). The
    architecture's own parameters (`W_enc`, `b_gate`, ...) are plain attributes it sets in
    `init_params` and reads back; this module depends on no SAE class, so the architectures
    stay a leaf of the package."""

    cfg: Any  # an SAEConfig: d_in, d_sae, activation and normalisation fields
    dtype: torch.dtype
    device: torch.device
    training: bool
    hook_sae_acts_pre: nn.Module
    hook_sae_acts_post: nn.Module
    activation_fn: Callable[[torch.Tensor], torch.Tensor]

    def process_sae_in(self, sae_in: torch.Tensor) -> torch.Tensor: ...

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor: ...

    def finish_decode(self, latent_sum: torch.Tensor) -> torch.Tensor: ...

    def __getattr__(self, name: str) -> Any: ...


class TrainingSAEModule(SAEModule, Protocol):
    """What an architecture's training methods use of a TrainingSAEModule."""

    def add_training_noise(self, hidden_pre: torch.Tensor) -> torch.Tensor: ...

    def mse_loss_fn(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


class TrainingConfig(Protocol):
    """The training options an architecture may check (a TrainingConfig is one)."""

    use_ghost_grads: bool
    activation_fn_str: str


@dataclass
class TrainingForward:
    """What an architecture's training forward pass computed."""

    feature_acts: torch.Tensor  # [batch, d_sae]
    hidden_pre: torch.Tensor  # [batch, d_sae]
    sae_out: torch.Tensor  # [batch, d_out] (d_out = d_in but for transcoders)
    # Tensors the architecture's training_losses reuse instead of recomputing them
    # (e.g. gated's gate pre-activations), by name.
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)


# `TrainingForward.intermediates` key of [d_sae] int64: on how many tokens each latent fired,
# from an architecture that selected its active latents sparsely (the trainer's firing
# statistics then need no pass over the dense [batch, d_sae] activations).
FIRING_COUNTS = "firing_counts"


def firing_counts(values: torch.Tensor, indices: torch.Tensor, d_sae: int) -> torch.Tensor:
    """[d_sae] int64 counts of the entries of `indices` (any shape) whose `values` (same
    shape) are non-zero."""
    with torch.no_grad():
        fired = indices[values != 0]
        return torch.bincount(fired.reshape(-1), minlength=d_sae)


@dataclass
class TrainingLossInputs:
    """What an architecture's training losses may use from one forward pass."""

    # [batch, d_out] what sae_out is trained to match: an SAE's raw input, a transcoder's
    # activation at hook_name_out (its target); losses of residuals use it as the target.
    sae_in: torch.Tensor
    x: torch.Tensor  # [batch, d_in] input after process_sae_in (normalised, b_dec removed)
    feature_acts: torch.Tensor  # [batch, d_sae]
    hidden_pre: torch.Tensor  # [batch, d_sae]
    sae_out: torch.Tensor  # [batch, d_out], the skip path included
    per_item_mse_loss: torch.Tensor  # [batch, d_out]
    l1_coefficient: float
    dead_neuron_mask: torch.Tensor | None  # [d_sae] bool
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)  # TrainingForward's


def new_param(sae: SAEModule, *shape: int, fill: float | None = 0.0) -> nn.Parameter:
    """A parameter of `shape` on the SAE's device and dtype: constant `fill`, or
    kaiming-uniform when `fill` is None."""
    data = torch.empty(*shape, dtype=sae.dtype, device=sae.device)
    if fill is None:
        nn.init.kaiming_uniform_(data)
    else:
        data.fill_(fill)
    return nn.Parameter(data)


def init_linear_params(sae: SAEModule) -> None:
    """`W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_out], `b_dec` [d_out]
    (d_out: a transcoder's output width, else d_in)."""
    d_in, d_sae, d_out = sae.cfg.d_in, sae.cfg.d_sae, output_width(sae.cfg)
    sae.b_enc = new_param(sae, d_sae)
    sae.W_dec = new_param(sae, d_sae, d_out, fill=None)
    sae.W_enc = new_param(sae, d_in, d_sae, fill=None)
    sae.b_dec = new_param(sae, d_out)


class Architecture(ABC):
    """One SAE architecture. Subclasses set `name` and implement the abstract methods."""

    name: str = ""
    # Whether `use_ghost_grads` is meaningful for this architecture's training loss.
    supports_ghost_grads: bool = False
    # The activation function a run config gets when it names none (and its kwargs).
    default_activation_fn: str = "relu"
    default_activation_fn_kwargs: dict[str, int] = {}
    # The only activation function this architecture works with, if it needs one.
    required_activation_fn: str | None = None

    # --- inference -------------------------------------------------------------------
    @abstractmethod
    def init_params(self, sae: SAEModule) -> None:
        """Create the SAE's parameters (as 5.6.0 names and shapes them)."""

    @abstractmethod
    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature activations and hidden pre-activations, both [..., d_sae], from `x`, the
        output of `sae.process_sae_in`. Calls `sae.hook_sae_acts_pre` / `hook_sae_acts_post`."""

    def encoder_bias(self, sae: SAEModule) -> torch.Tensor:
        """[d_sae]: the bias that decides whether each latent fires (evals report it)."""
        return sae.b_enc

    @abstractmethod
    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        """Rescale encoder-side parameters after `W_dec` rows were divided by `norms` [d_sae]
        (and `W_enc` columns multiplied by them) so the SAE's output is unchanged."""

    def cfg_dict_for_saving(self, cfg_dict: dict[str, Any]) -> None:  # noqa: B027
        """Turn the config dict `save_model` writes to cfg.json into the saved form, in
        place (default: unchanged; an architecture saved as another, e.g. BatchTopK as
        JumpReLU, renames itself here)."""

    # --- training --------------------------------------------------------------------
    def check_cfg(self, cfg: Any) -> None:  # noqa: B027
        """Refuse bad values of this architecture's own options with a one-line error.
        `cfg` is a run config (checked when it is built, once d_sae is known) or a
        TrainingSAEConfig (checked when the TrainingSAE is built); both have the fields."""

    def check_training_cfg(self, cfg: TrainingConfig, use_error_term: bool) -> None:
        """Refuse training options this architecture does not support."""
        self.check_cfg(cfg)
        if cfg.use_ghost_grads and not self.supports_ghost_grads:
            raise ValueError(
                f"use_ghost_grads is not supported by {self.name} SAEs (only by "
                "architectures whose loss implements it, e.g. standard)"
            )

    def init_training_params(self, sae: TrainingSAEModule) -> None:
        """Create the parameters a TrainingSAEModule optimises (default: the inference ones)."""
        self.init_params(sae)

    def training_encode(
        self, sae: TrainingSAEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `encode`, with training behaviour (noise, straight-through estimators)."""
        return self.encode(sae, x)

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        """The forward pass of a training step on `x` [batch, d_in], the output of
        `sae.process_sae_in`."""
        feature_acts, hidden_pre = self.training_encode(sae, x)
        return TrainingForward(feature_acts, hidden_pre, sae.decode(feature_acts))

    def encodes_like(self, owner: type[Architecture]) -> bool:
        """Whether this architecture encodes as `owner` does: neither `encode` nor
        `training_encode` is overridden below `owner`. A fused training forward written for
        `owner` is valid only then; a subclass with its own encode trains through
        `Architecture.training_forward`, which calls it."""
        cls = type(self)
        return cls.encode is owner.encode and cls.training_encode is owner.training_encode

    @abstractmethod
    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        """Loss terms added to the MSE loss, by 5.6.0 key name (e.g. `l1_loss`)."""

    def fold_training_W_dec_norm(self, sae: TrainingSAEModule, norms: torch.Tensor) -> None:
        """`fold_W_dec_norm` for the training parametrisation."""
        self.fold_W_dec_norm(sae, norms)

    def training_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:  # noqa: B027
        """Turn a TrainingSAEModule state dict into the saved (inference) form, in place
        (default: the two forms agree)."""

    def training_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:  # noqa: B027
        """Turn a saved state dict into the TrainingSAEModule form, in place."""

    # --- optional: stepping several SAEs of one shape together ---------------------------
    def stack_key(self, sae: TrainingSAEModule, x: torch.Tensor) -> tuple[Any, ...] | None:
        """A key that is equal for SAEs whose training forwards on inputs like `x`
        [batch, d_in] `stacked_training_forward` runs together (same shape and options),
        or None when this SAE trains alone (the default)."""
        return None

    def stacked_training_forward(
        self, saes: Sequence[TrainingSAEModule], x: torch.Tensor
    ) -> list[TrainingForward]:
        """`training_forward` of each SAE of `saes` (all of one `stack_key`) on its input
        x[i], x [n_saes, batch, d_in], with batched matmuls over the stacked weights; the
        gradients reach each SAE's own parameters."""
        raise NotImplementedError(f"{self.name} SAEs are not stepped together")

    # --- optional: a k the trainer may schedule ------------------------------------------
    def set_k(self, sae: TrainingSAEModule, k: int) -> None:
        """Make `sae` keep `k` active latents per token from the next forward pass on.
        Architectures with a k (`activation_fn_kwargs["k"]`, e.g. topk) override this; the
        trainer calls it before each step of a run with `k_decay_steps` > 0, and with the
        configured k before the final SAE is saved."""
        raise ValueError(f"{self.name} SAEs have no k to schedule")
