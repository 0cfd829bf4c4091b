"""`TrainingSAE`: an `SAE` with a training forward pass returning its losses by name, the
initialisation options of a training run, and the decoder-norm maintenance the trainer calls
around each optimiser step. Architecture-specific parts come from `sae_lens.saes`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from sae_lens import logger
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.lazy_names import lazy_names
from sae_lens.sae import SAE, InputActs, LatentActs, SAEConfig, config_kwargs
from sae_lens.saes import cpu_kernels, transcoder
from sae_lens.saes.base import FIRING_COUNTS, TrainingForward, TrainingLossInputs
from sae_lens.saes.jumprelu import JumpReLU, Step, rectangle
from sae_lens.saes.registry import get_architecture
from sae_lens.saes.sae_folder import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.saes.standard import ghost_grad_loss
from sae_lens.saes.topk import topk_aux_acts, topk_aux_loss

# 5.6.0 names of the SAE folder's files, and of two loaders it imported here.
SPARSITY_PATH = SPARSITY_FILENAME
SAE_WEIGHTS_PATH = SAE_WEIGHTS_FILENAME
SAE_CFG_PATH = SAE_CFG_FILENAME
__getattr__ = lazy_names(
    globals(),
    dict.fromkeys(
        ("handle_config_defaulting", "read_sae_from_disk"),
        "sae_lens.toolkit.pretrained_sae_loaders",
    ),
)

__all__ = [
    "JumpReLU",
    "Step",
    "TrainStepOutput",
    "TrainingSAE",
    "TrainingSAEConfig",
    "rectangle",
]


@dataclass
class TrainStepOutput:
    """One training forward pass: tensors [batch, ...] and the loss with its named terms."""

    sae_in: torch.Tensor
    sae_out: torch.Tensor
    feature_acts: torch.Tensor
    hidden_pre: torch.Tensor
    loss: torch.Tensor  # the total, to call backward() on
    losses: dict[str, float | torch.Tensor]
    target: torch.Tensor | None = None  # a transcoder's [batch, d_out]
    # [d_sae] int64: on how many tokens each latent fired, where the architecture counted
    # them from its sparse selection (else the trainer counts feature_acts' non-zeros)
    firing_counts: torch.Tensor | None = None

    @property
    def trained_towards(self) -> torch.Tensor:
        """What sae_out was trained to match: a transcoder's target, an SAE's input."""
        return self.sae_in if self.target is None else self.target


@dataclass(kw_only=True)
class TrainingSAEConfig(SAEConfig):
    """`SAEConfig` plus the options that shape training losses and initialisation."""

    l1_coefficient: float
    lp_norm: float
    use_ghost_grads: bool
    normalize_sae_decoder: bool
    noise_scale: float
    decoder_orthogonal_init: bool
    mse_loss_normalization: str | None
    jumprelu_init_threshold: float
    jumprelu_bandwidth: float
    decoder_heuristic_init: bool
    init_encoder_as_decoder_transpose: bool
    scale_sparsity_penalty_by_decoder_norm: bool
    decoder_init_norm: float | None = None
    encoder_init_norm: float | None = None
    jumprelu_sparsity_loss_mode: str = "step"
    jumprelu_tanh_scale: float = 4.0
    pre_act_loss_coefficient: float | None = None
    topk_threshold_lr: float = 0.01
    matryoshka_widths: list[int] | None = None

    @classmethod
    def from_sae_runner_config(cls, cfg: LanguageModelSAERunnerConfig) -> TrainingSAEConfig:
        """The SAE config of a training run."""
        cfg_dict = cfg.get_training_sae_cfg_dict()
        cfg_dict["model_from_pretrained_kwargs"] = (
            cfg_dict.get("model_from_pretrained_kwargs") or {}
        )
        return cls.from_dict(cfg_dict)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TrainingSAEConfig:
        """Build from a dict (e.g. a whole runner config); unknown keys are ignored."""
        return cls(**config_kwargs(cls, config_dict))

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable, in 5.6.0's key order (fields it lacked last)."""
        names = [*_TRAINING_CFG_JSON_ORDER]
        names += [f.name for f in fields(self) if f.name not in (*_SAE_CONFIG_FIELDS, *names)]
        return {**super().to_dict(), **{name: getattr(self, name) for name in names}}

    def get_base_sae_cfg_dict(self) -> dict[str, Any]:
        """Only the `SAEConfig` fields."""
        return {name: getattr(self, name) for name in _SAE_CONFIG_FIELDS}


_SAE_CONFIG_FIELDS = tuple(f.name for f in fields(SAEConfig))
# The order 5.6.0's `TrainingSAEConfig.to_dict` adds the training fields in.
_TRAINING_CFG_JSON_ORDER = (
    "l1_coefficient",
    "lp_norm",
    "use_ghost_grads",
    "normalize_sae_decoder",
    "noise_scale",
    "decoder_orthogonal_init",
    "init_encoder_as_decoder_transpose",
    "mse_loss_normalization",
    "decoder_heuristic_init",
    "scale_sparsity_penalty_by_decoder_norm",
    "jumprelu_init_threshold",
    "jumprelu_bandwidth",
)


# Decoders from this many entries up keep their rows with the one-pass CPU kernels (smaller
# ones gain nothing worth loading numba for).
_ROW_KERNEL_MIN_NUMEL = 1 << 16


def _row_kernels_serve(*tensors: torch.Tensor) -> bool:
    return tensors[0].numel() >= _ROW_KERNEL_MIN_NUMEL and cpu_kernels.serves(*tensors)


def _mse_per_item(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(preds, target, reduction="none")


def _mse_per_item_dense_batch(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error divided by each target's distance from the batch mean."""
    normalization = (target - target.mean(dim=0, keepdim=True)).norm(dim=-1, keepdim=True)
    return _mse_per_item(preds, target) / (normalization + 1e-6)


_MSE_LOSS_FNS: dict[str | None, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    None: _mse_per_item,
    "dense_batch": _mse_per_item_dense_batch,
}


class TrainingSAE(SAE):
    """An SAE being trained: `training_forward_pass` gives the loss and its named terms.

    `cfg` may also be a `LanguageModelSAERunnerConfig` (as 5.6.0 accepted): it is converted
    with `TrainingSAEConfig.from_sae_runner_config`, and `self.cfg` is the converted one."""

    cfg: TrainingSAEConfig  # type: ignore[assignment]
    _warn_about_model_kwargs = False

    def __init__(
        self, cfg: TrainingSAEConfig | LanguageModelSAERunnerConfig, use_error_term: bool = False
    ):
        if isinstance(cfg, LanguageModelSAERunnerConfig):
            cfg = TrainingSAEConfig.from_sae_runner_config(cfg)
        get_architecture(cfg.architecture).check_training_cfg(cfg, use_error_term)
        super().__init__(cfg, use_error_term=use_error_term)
        self.mse_loss_fn = self._get_mse_loss_fn()
        self.initialize_weights_complex()
        # The activation store flattens hook_z heads for training.
        self.turn_off_forward_pass_hook_z_reshaping()

    def _init_params(self) -> None:
        self.architecture.init_training_params(self)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TrainingSAE:
        return cls(TrainingSAEConfig.from_dict(config_dict))

    def _get_mse_loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The per-element MSE of `cfg.mse_loss_normalization` (5.6.0's name; assign the
        result to `mse_loss_fn` after changing the config)."""
        normalization = self.cfg.mse_loss_normalization
        if normalization not in _MSE_LOSS_FNS:
            raise ValueError(
                f"mse_loss_normalization must be one of {list(_MSE_LOSS_FNS)}, "
                f"got {normalization!r}"
            )
        return _MSE_LOSS_FNS[normalization]

    @property
    def encode_with_hidden_pre_fn(
        self,
    ) -> Callable[[InputActs], tuple[LatentActs, LatentActs]]:
        """5.6.0's name for this SAE's training encode: `encode_with_hidden_pre`."""
        return self.encode_with_hidden_pre

    @property
    def bandwidth(self) -> float:
        """The JumpReLU straight-through estimator's kernel width (jumprelu only)."""
        if "log_threshold" not in self._parameters:
            raise AttributeError(
                f"bandwidth is only defined for jumprelu SAEs, this one is {self.cfg.architecture}"
            )
        return self.cfg.jumprelu_bandwidth

    @property
    def threshold(self) -> torch.Tensor:
        """exp(log_threshold) [d_sae] (jumprelu only)."""
        log_threshold = self._parameters.get("log_threshold")
        if log_threshold is None:
            raise ValueError(
                f"threshold is only defined for jumprelu SAEs, this one is {self.cfg.architecture}"
            )
        return torch.exp(log_threshold)

    def check_cfg_compatibility(self) -> None:
        """Refuse options this SAE's architecture does not support."""
        self.architecture.check_training_cfg(self.cfg, self.use_error_term)

    # --- forward passes ----------------------------------------------------------------
    def add_training_noise(self, hidden_pre: torch.Tensor) -> torch.Tensor:
        """hidden_pre plus N(0, noise_scale^2) noise, in training mode only."""
        if self.training and self.cfg.noise_scale > 0:
            return hidden_pre + torch.randn_like(hidden_pre) * self.cfg.noise_scale
        return hidden_pre

    def encode_with_hidden_pre(self, x: InputActs) -> tuple[LatentActs, LatentActs]:
        return self.architecture.training_encode(self, self.process_sae_in(x))

    def encode_standard(self, x: InputActs) -> LatentActs:
        """This SAE's (training) encode, whatever its architecture (5.6.0 naming)."""
        return self.encode(x)

    def encode_with_hidden_pre_gated(self, x: InputActs) -> tuple[LatentActs, LatentActs]:
        return get_architecture("gated").training_encode(self, self.process_sae_in(x))

    def encode_with_hidden_pre_jumprelu(self, x: InputActs) -> tuple[LatentActs, LatentActs]:
        return get_architecture("jumprelu").training_encode(self, self.process_sae_in(x))

    def training_forward_pass(
        self,
        sae_in: torch.Tensor,
        current_l1_coefficient: float,
        dead_neuron_mask: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> TrainStepOutput:
        """Forward pass on a batch [batch, d_in] with the total loss and its named terms
        (`mse_loss` plus the architecture's, e.g. `l1_loss`, `l0_loss`,
        `auxiliary_reconstruction_loss`, `ghost_grad_loss`). The output is compared with
        `target` [batch, d_out] (default `sae_in`; a transcoder's is its output hook's
        activation)."""
        x = self.process_sae_in(sae_in)
        forward = self.architecture.training_forward(self, x)
        return self.training_step_output(
            sae_in, x, forward, current_l1_coefficient, dead_neuron_mask, target
        )

    def training_step_output(
        self,
        sae_in: torch.Tensor,
        x: torch.Tensor,
        forward: TrainingForward,
        current_l1_coefficient: float,
        dead_neuron_mask: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> TrainStepOutput:
        """The rest of `training_forward_pass` after the architecture's `forward` on
        x = `process_sae_in(sae_in)` (which a stacked step of several SAEs computes for all
        of them at once): the output, the MSE and the architecture's losses."""
        if target is None:
            if transcoder.is_transcoder(self.cfg):
                raise ValueError(
                    "a transcoder trains towards the activation at hook_name_out: pass it as "
                    "target [batch, d_out]"
                )
            target = sae_in
        feature_acts, hidden_pre, sae_out = (
            forward.feature_acts,
            forward.hidden_pre,
            forward.sae_out,
        )
        if self.cfg.skip_connection:
            sae_out = sae_out + self.skip_output(sae_in)
        per_item_mse_loss = self.mse_loss_fn(sae_out, target)  # [batch, d_out]
        mse_loss = per_item_mse_loss.sum(dim=-1).mean()
        inputs = TrainingLossInputs(
            sae_in=target,
            x=x,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            sae_out=sae_out,
            per_item_mse_loss=per_item_mse_loss,
            l1_coefficient=current_l1_coefficient,
            dead_neuron_mask=dead_neuron_mask,
            intermediates=forward.intermediates,
        )
        losses: dict[str, float | torch.Tensor] = {}
        loss = mse_loss
        for name, term in self.architecture.training_losses(self, inputs).items():
            losses[name] = term
            loss = loss + term
        losses["mse_loss"] = mse_loss
        return TrainStepOutput(
            sae_in=sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=loss,
            losses=losses,
            target=None if target is sae_in else target,
            firing_counts=forward.intermediates.get(FIRING_COUNTS),
        )

    def calculate_topk_aux_loss(
        self,
        sae_in: torch.Tensor,
        sae_out: torch.Tensor,
        hidden_pre: torch.Tensor,
        dead_neuron_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The AuxK loss of topk SAEs (0 when no latent is dead)."""
        return topk_aux_loss(self, sae_in, sae_out, hidden_pre, dead_neuron_mask)

    def calculate_ghost_grad_loss(
        self,
        x: torch.Tensor,
        sae_out: torch.Tensor,
        per_item_mse_loss: torch.Tensor,
        hidden_pre: torch.Tensor,
        dead_neuron_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The ghost-grads loss of standard SAEs."""
        return ghost_grad_loss(self, x, sae_out, per_item_mse_loss, hidden_pre, dead_neuron_mask)

    # --- saving and loading ------------------------------------------------------------
    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        self.architecture.training_state_dict_for_saving(state_dict)

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        self.architecture.training_state_dict_for_loading(state_dict)

    def _fold_W_dec_norm_into_encoder(self, norms: torch.Tensor) -> None:
        self.architecture.fold_training_W_dec_norm(self, norms)

    # --- initialisation ----------------------------------------------------------------
    def initialize_weights_jumprelu(self) -> None:
        get_architecture("jumprelu").init_training_params(self)

    @torch.no_grad()
    def initialize_weights_complex(self) -> None:
        """Apply the config's decoder/encoder initialisation options."""
        if self.cfg.decoder_orthogonal_init:
            self.W_dec.data = nn.init.orthogonal_(self.W_dec.data.T).T.contiguous()
        elif self.cfg.decoder_heuristic_init:
            self.W_dec.data = torch.rand_like(self.W_dec.data)
            self.initialize_decoder_norm_constant_norm()
        elif self.cfg.decoder_init_norm is not None:
            # SAELens 6's initialisation: kaiming rows scaled to one norm, tied encoder
            self.initialize_decoder_norm_constant_norm(self.cfg.decoder_init_norm)
        if self.cfg.init_encoder_as_decoder_transpose or self.cfg.decoder_init_norm is not None:
            if self.W_dec.shape[::-1] != self.W_enc.shape:
                raise ValueError(
                    f"the encoder cannot start as the decoder's transpose: W_dec is "
                    f"{list(self.W_dec.shape)} (a transcoder with d_out={self.cfg.d_out} != "
                    f"d_in={self.cfg.d_in}); unset init_encoder_as_decoder_transpose and "
                    "decoder_init_norm"
                )
            self.W_enc.data = self.W_dec.data.T.clone().contiguous()
        else:
            self.W_enc.data = nn.init.kaiming_uniform_(torch.empty_like(self.W_enc.data))
        if self.cfg.encoder_init_norm is not None:  # each latent's encoder weights: this norm
            self.W_enc.data *= self.cfg.encoder_init_norm / self.W_enc.data.norm(dim=0)
        if self.cfg.normalize_sae_decoder:
            self.set_decoder_norm_to_unit_norm()

    @torch.no_grad()
    def initialize_b_dec_with_precalculated(self, origin: torch.Tensor) -> None:
        """Set b_dec to `origin` [d_in] (e.g. the geometric median of activations; a
        transcoder's b_dec is [d_out], in the space of its targets)."""
        origin = torch.as_tensor(origin, dtype=self.dtype, device=self.device)
        width = transcoder.output_width(self.cfg)
        if tuple(origin.shape) != (width,):
            raise ValueError(f"b_dec origin must have shape [{width}], got {list(origin.shape)}")
        self.b_dec.data = origin.clone()

    @torch.no_grad()
    def initialize_b_dec_with_mean(self, all_activations: torch.Tensor) -> None:
        """Set b_dec to the mean of `all_activations` [n, d_in]."""
        logger.info("Reinitializing b_dec with mean of activations")
        self.initialize_b_dec_with_precalculated(all_activations.mean(dim=0))

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        if _row_kernels_serve(self.W_dec.data):  # one pass over W_dec
            cpu_kernels.normalize_rows_(self.W_dec.data)
        else:
            self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def initialize_decoder_norm_constant_norm(self, norm: float = 0.1) -> None:
        """Give every decoder row the same norm `norm` (Anthropic's April 2024 heuristic)."""
        self.set_decoder_norm_to_unit_norm()
        self.W_dec.data *= norm

    # --- around the optimiser step -----------------------------------------------------
    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project each decoder row's gradient onto the plane orthogonal to the (unit) row."""
        if self.W_dec.grad is None:
            raise ValueError("W_dec has no gradient: call this after loss.backward()")
        if _row_kernels_serve(self.W_dec.grad, self.W_dec.data):  # one pass over both
            cpu_kernels.project_out_rows_(self.W_dec.grad, self.W_dec.data)
            return
        parallel = (self.W_dec.grad * self.W_dec.data).sum(dim=-1, keepdim=True)  # [d_sae, 1]
        self.W_dec.grad -= parallel * self.W_dec.data

    def before_optimizer_step(self) -> None:
        """Called by the trainer after backward(), before clipping and optimizer.step().
        A frozen decoder (fine-tuning other parameters) has no gradient to project."""
        if self.cfg.normalize_sae_decoder and self.W_dec.requires_grad:
            self.remove_gradient_parallel_to_decoder_directions()

    def after_optimizer_step(self) -> None:
        """Called by the trainer after optimizer.step()."""
        if self.cfg.normalize_sae_decoder:
            self.set_decoder_norm_to_unit_norm()


def _calculate_topk_aux_acts(
    k_aux: int, hidden_pre: torch.Tensor, dead_neuron_mask: torch.Tensor
) -> torch.Tensor:
    """hidden_pre [batch, d_sae] kept only at each token's k_aux largest dead latents
    (5.6.0's name and argument order for `sae_lens.saes.topk.topk_aux_acts`)."""
    return topk_aux_acts(hidden_pre, dead_neuron_mask, k_aux)
