"""The BatchTopK SAE (Bussmann et al., 2024): during training the batch keeps its
k x n_tokens largest pre-activations (after a ReLU) over all its tokens, so L0 is k on
average rather than for every token (k = `activation_fn_kwargs["k"]`, which may be
fractional). Trained with MSE plus the AuxK loss of TopK.

The batch ranks its entries by score z_i * ||W_dec[i]||, a latent's pre-activation times
its decoder row's norm, i.e. by how much it adds to the reconstruction (SAELens 6 ranks
the same way, its `rescale_acts_by_decoder_norm`); with unit-norm decoder rows
(`normalize_sae_decoder`) that is z itself. A latent thus cannot win the selection by
moving scale from its decoder row into its encoder.

A running threshold (`topk_threshold`, a buffer [d_sae] in each latent's pre-activation
units, with the count of its updates `topk_threshold_steps`; both travel in the state dict
and so in checkpoints) tracks the smallest kept score: a bias-corrected moving average with
rate `topk_threshold_lr` (see `update_running_threshold`). In eval mode, and once saved,
the SAE is a JumpReLU SAE with that per-latent threshold: the saved folder has
architecture `jumprelu` and a `threshold` [d_sae], which SAELens 5.6.0 and 6 load as they
are.

Training uses the sparse kernels of TopK (`sparse_kernels.batchtopk_encode`,
`sparse_decode_rows`): one dense encoder matmul, everything else touches only the kept
entries.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingConfig,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    init_linear_params,
)
from sae_lens.saes.fused_ops import affine, hooks_active
from sae_lens.saes.jumprelu import JumpReLUArchitecture
from sae_lens.saes.sparse_kernels import (
    RowSelection,
    batch_topk_flat_indices,
    batchtopk_encode,
    sparse_decode_rows,
)
from sae_lens.saes.topk import topk_aux_loss

__all__ = ["BatchTopKArchitecture", "batch_topk", "n_kept"]

# What a saved (inference) BatchTopK SAE is.
_SAVED_AS = JumpReLUArchitecture()

# Keys of `TrainingForward.intermediates` from the sparse training forward: the flat
# indices of the kept entries [nnz], their scores [nnz] and the values the decoder sums
# (times the fine-tuning scale, if any) [nnz].
KEPT_FLAT = "batchtopk_flat"
KEPT_SCORES = "batchtopk_scores"
KEPT_DECODED = "batchtopk_decoded"


def n_kept(k: float, n_tokens: int) -> int:
    """How many entries a batch of `n_tokens` keeps: int(k * n_tokens), as SAELens 6."""
    return int(k * n_tokens)


def batch_topk(
    hidden_pre: torch.Tensor, k: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """hidden_pre [..., d_sae] with only the k x n_tokens entries of largest positive score
    hidden_pre * weights (weights [d_sae], default 1) over all tokens kept, the rest zero (a
    dense BatchTopK activation, differentiable in hidden_pre)."""
    d_sae = hidden_pre.shape[-1]
    flat_pre = hidden_pre.reshape(-1)
    n_tokens = flat_pre.numel() // d_sae
    pre = flat_pre.view(n_tokens, d_sae)
    flat = batch_topk_flat_indices(pre, n_kept(k, n_tokens), weights)
    return torch.zeros_like(flat_pre).index_put((flat,), flat_pre[flat]).view_as(hidden_pre)


def decoder_norms(sae: SAEModule) -> torch.Tensor:
    """[d_sae]: the score weights ||W_dec[i]|| (no gradient; kept above 1e-12, so that a
    zero row's threshold stays finite)."""
    return sae.W_dec.detach().norm(dim=1).clamp_min(1e-12)


def _k(sae: TrainingSAEModule) -> float:
    """The k a training step keeps per token on average: the config's, or the one a k
    schedule set last (`BatchTopKArchitecture.set_k`)."""
    return sae.batchtopk_k  # type: ignore[no-any-return]


def _can_fuse(sae: TrainingSAEModule, x: torch.Tensor) -> bool:
    """Whether the sparse training forward computes exactly what the step-by-step path
    would: training mode, a [batch, d_in] input, no autocast, and no hook on the pre- or
    post-activations (the sparse path does not call them)."""
    return (
        sae.training
        and x.dim() == 2
        and not torch.is_autocast_enabled(x.device.type)
        and not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    )


@torch.no_grad()
def update_running_threshold(
    threshold: torch.Tensor,
    steps: torch.Tensor,
    kept_scores: torch.Tensor,
    norms: torch.Tensor,
    rate: float,
) -> None:
    """One step of the running threshold, in place: steps += 1, then threshold_i +=
    alpha * (m / norms_i - threshold_i) for threshold [d_sae], m the smallest of the kept
    scores `kept_scores` (positive), norms [d_sae] the score weights of this step and
    alpha = rate / (1 - (1 - rate)^steps). Per latent that is an exponential moving average,
    in its own pre-activation units, of the score cut m, with Adam's bias correction: the
    first step sets threshold_i = m / norms_i (alpha = 1), and the random initial weights'
    steps do not linger in it (a plain average started at the first value would weight that
    value by (1 - rate)^steps, 37% after 100 steps at rate 0.01). The trainer's forward
    passes each take one step (with gradient accumulation: each micro-batch, whose own
    k x n_tokens it keeps)."""
    if kept_scores.numel() == 0:
        return
    steps += 1
    alpha = rate / (1 - (1 - rate) ** steps.double())
    old = threshold.double()
    target = kept_scores.detach().min().double() / norms.double()  # [d_sae]
    threshold.copy_(old + alpha * (target - old))


class BatchTopKArchitecture(Architecture):
    """Inference: a JumpReLU SAE (`threshold` parameter). Training: W_enc, b_enc, W_dec,
    b_dec and the running-threshold buffer `topk_threshold`."""

    name = "batchtopk"
    supports_ghost_grads = False
    default_activation_fn = "relu"
    default_activation_fn_kwargs = {"k": 100}
    required_activation_fn = "relu"

    # --- inference: the saved JumpReLU SAE -----------------------------------------------
    def init_params(self, sae: SAEModule) -> None:
        _SAVED_AS.init_params(sae)

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _SAVED_AS.encode(sae, x)

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        _SAVED_AS.fold_W_dec_norm(sae, norms)

    def cfg_dict_for_saving(self, cfg_dict: dict[str, Any]) -> None:
        cfg_dict["architecture"] = _SAVED_AS.name
        cfg_dict["activation_fn_str"] = "relu"
        cfg_dict["activation_fn_kwargs"] = {}

    # --- config ------------------------------------------------------------------------
    def check_cfg(self, cfg: Any) -> None:
        k = (cfg.activation_fn_kwargs or {}).get("k")
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not k > 0:
            raise ValueError(
                f"{self.name} needs activation_fn_kwargs['k'] > 0 (the average number of "
                f"latents per token), got {k!r}: pass e.g. --activation_fn_kwargs '{{\"k\": 32}}'"
            )
        rate = cfg.topk_threshold_lr
        if not 0 < rate <= 1:
            raise ValueError(f"topk_threshold_lr must be in (0, 1], got {rate!r}")

    def check_training_cfg(self, cfg: TrainingConfig, use_error_term: bool) -> None:
        super().check_training_cfg(cfg, use_error_term)
        if cfg.activation_fn_str != "relu":
            raise ValueError(
                f"{self.name} SAEs need activation_fn_str='relu' (the batch selection "
                f"follows a ReLU), got {cfg.activation_fn_str!r}"
            )

    # --- training ----------------------------------------------------------------------
    def set_k(self, sae: TrainingSAEModule, k: int) -> None:
        sae.batchtopk_k = k  # the config's k stays as it is (it may be the run config's dict)

    def init_training_params(self, sae: TrainingSAEModule) -> None:
        sae.batchtopk_k = sae.cfg.activation_fn_kwargs["k"]
        init_linear_params(sae)
        threshold = torch.zeros(sae.cfg.d_sae, dtype=sae.dtype, device=sae.device)
        sae.register_buffer("topk_threshold", threshold)  # [d_sae]
        sae.register_buffer(
            "topk_threshold_steps", torch.zeros((), dtype=torch.long, device=sae.device)
        )

    def training_encode(
        self, sae: TrainingSAEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training mode: the batch's k x n_tokens largest (x's leading dimensions are the
        tokens). Eval mode: the JumpReLU of the running threshold, as the saved SAE."""
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(affine(x, sae.W_enc, sae.b_enc)))
        if sae.training:
            feature_acts = batch_topk(hidden_pre, _k(sae), decoder_norms(sae))
        else:
            feature_acts = sae.activation_fn(hidden_pre) * (hidden_pre > sae.topk_threshold)
        return sae.hook_sae_acts_post(feature_acts), hidden_pre

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        norms = decoder_norms(sae)  # [d_sae], before the step changes W_dec
        if self.encodes_like(BatchTopKArchitecture) and _can_fuse(sae, x):
            forward = self._sparse_training_forward(sae, x, norms)
        else:
            forward = Architecture.training_forward(self, sae, x)
        if sae.training:
            kept_scores = forward.intermediates.get(KEPT_SCORES)
            if kept_scores is None:
                acts = forward.feature_acts.detach()
                kept_scores = (acts * norms)[acts > 0]
            update_running_threshold(
                sae.topk_threshold,
                sae.topk_threshold_steps,
                kept_scores,
                norms,
                sae.cfg.topk_threshold_lr,
            )
        return forward

    def _sparse_training_forward(
        self, sae: TrainingSAEModule, x: torch.Tensor, norms: torch.Tensor
    ) -> TrainingForward:
        n_keep = n_kept(_k(sae), x.shape[0])
        values, selection, hidden_pre = batchtopk_encode(
            x, sae.W_enc, sae.b_enc, n_keep, sae.add_training_noise, norms
        )  # values [nnz], hidden_pre [batch, d_sae]
        feature_acts = torch.zeros_like(hidden_pre)  # [batch, d_sae]
        feature_acts.view(-1).index_put_((selection.flat,), values)
        decoded = values
        if sae.cfg.finetuning_scaling_factor:
            decoded = values * sae.finetuning_scaling_factor[selection.latents]
        latent_sum, intermediates = self.decode_kept(sae, decoded, selection)
        kept_scores = values.detach() * norms[selection.latents]
        intermediates.update(
            {KEPT_FLAT: selection.flat, KEPT_SCORES: kept_scores, KEPT_DECODED: decoded}
        )
        return TrainingForward(
            feature_acts, hidden_pre, sae.finish_decode(latent_sum), intermediates
        )

    def decode_kept(
        self, sae: TrainingSAEModule, decoded: torch.Tensor, selection: RowSelection
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sparse training forward's `acts @ W_dec` [batch, d_in] from the kept entries'
        values `decoded` [nnz], and any tensors the losses reuse (by name)."""
        return sparse_decode_rows(decoded, selection, sae.W_dec), {}

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        aux = topk_aux_loss(
            sae, inputs.sae_in, inputs.sae_out, inputs.hidden_pre, inputs.dead_neuron_mask
        )
        return {"auxiliary_reconstruction_loss": aux}

    def fold_training_W_dec_norm(self, sae: TrainingSAEModule, norms: torch.Tensor) -> None:
        sae.topk_threshold.mul_(norms)
        sae.b_enc.data *= norms

    def training_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        if "topk_threshold" in state_dict:
            state_dict["threshold"] = state_dict.pop("topk_threshold")
            state_dict.pop("topk_threshold_steps", None)

    def training_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """A saved threshold continues as if it were one step's average."""
        if "threshold" in state_dict:
            threshold = state_dict.pop("threshold")
            state_dict["topk_threshold"] = threshold
            state_dict["topk_threshold_steps"] = torch.ones(
                (), dtype=torch.long, device=threshold.device
            )
