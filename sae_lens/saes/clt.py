"""Cross-layer transcoders (CLTs): latents read one layer's MLP input and write, through
decoders of their own, to that layer's and every later layer's MLP output.

A CLT over layers 0..L-1 is an SAE whose config names hook *patterns* with `*` standing for
the layer (`hook_name="blocks.*.ln2.hook_normalized"`, `hook_name_out="blocks.*.hook_mlp_out"`)
and `hook_layer = hook_layer_out = L - 1`. Its store serves one row per token, every layer's
input then every layer's output:

    row = [x_0 | x_1 | ... | x_{L-1} | y_0 | ... | y_{L-1}]     d_in = L * d_model_in,
                                                               d_out = L * d_model_out

so the trainer, the optimiser and the checkpoints treat it as any transcoder. `d_sae` is the
total width, `d_sae / L` latents per layer; latent `f` of layer `i` is column `i*n + f`.

Parameters (n = d_sae / L latents per layer):
- `W_enc` [d_model_in, L*n]: column block i is layer i's encoder (every layer reads a
  d_model_in vector, so one matrix holds them all without the zeros of a block diagonal);
- `b_enc` [L*n];
- `W_dec` [L*n, L*d_model_out]: row block i, column block j is the decoder from layer i's
  latents to layer j's output. Blocks with j < i are held at zero (a latent never writes to
  an earlier layer): training decodes block by block and never touches them, so their
  gradient is zero and they stay zero; `acts @ W_dec` is then the CLT's output.
- `b_dec` [L*d_model_out].

Sparsity: TopK, with `activation_fn_kwargs = {"k": k, "topk_scope": scope}`:
- `"layer"` (the default): each layer keeps its own k largest latents per token. A layer's
  latents then depend on that layer's input only, so the replacement model runs layer by
  layer (each MLP is replaced as the forward pass reaches it), and every layer gets the
  same budget of active latents, as per-layer transcoders of the same k would.
- `"global"`: one TopK of k*L over all layers' latents (same total L0); layers that need
  more latents take them from layers that need fewer. Its latents need every layer's input
  before any is chosen, so splicing it reads the inputs of a clean pass first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sae_lens.saes.activations import TopK
from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingConfig,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    new_param,
)
from sae_lens.saes.topk import topk_aux_acts
from sae_lens.saes.transcoder import LAYER_WILDCARD

TOPK_SCOPES = ("layer", "global")
DEFAULT_TOPK_SCOPE = "layer"


CLT_ARCHITECTURE = "clt"


def is_clt(cfg: Any) -> bool:
    """Whether a config (an SAEConfig or a run config) describes a CLT."""
    return getattr(cfg, "architecture", None) == CLT_ARCHITECTURE


def encoder_rows(cfg_dict: dict[str, Any]) -> int:
    """Rows of `W_enc` a cfg.json-style dict implies: d_in, or a CLT's d_in / n_layers (every
    layer's encoder reads one layer's input)."""
    d_in = cfg_dict["d_in"]
    if cfg_dict.get("architecture") != CLT_ARCHITECTURE:
        return d_in
    return d_in // (int(cfg_dict.get("hook_layer", 0)) + 1)


def hook_at(pattern: str, layer: int) -> str:
    """The hook name a pattern gives at `layer` (`blocks.*.hook_mlp_out`, 3 ->
    `blocks.3.hook_mlp_out`)."""
    return pattern.replace(LAYER_WILDCARD, str(layer))


@dataclass(frozen=True)
class CLTLayout:
    """A CLT's geometry, read off its config."""

    n_layers: int
    d_model_in: int  # width of each layer's input
    d_model_out: int  # width of each layer's output
    n_latents: int  # latents per layer
    hook_in: str  # pattern, e.g. "blocks.*.ln2.hook_normalized"
    hook_out: str  # pattern, e.g. "blocks.*.hook_mlp_out"
    k: int  # active latents per token and layer
    topk_scope: str  # "layer" or "global"

    @classmethod
    def of(cls, cfg: Any) -> CLTLayout:
        """The layout of a checked CLT config (see `check_clt_cfg`)."""
        n_layers = cfg.hook_layer + 1
        kwargs = cfg.activation_fn_kwargs or {}
        return cls(
            n_layers=n_layers,
            d_model_in=cfg.d_in // n_layers,
            d_model_out=(cfg.d_out or cfg.d_in) // n_layers,
            n_latents=cfg.d_sae // n_layers,
            hook_in=cfg.hook_name,
            hook_out=cfg.hook_name_out,
            k=int(kwargs.get("k", 1)),
            topk_scope=str(kwargs.get("topk_scope", DEFAULT_TOPK_SCOPE)),
        )

    @property
    def layers(self) -> range:
        return range(self.n_layers)

    def input_hooks(self) -> list[str]:
        return [hook_at(self.hook_in, layer) for layer in self.layers]

    def output_hooks(self) -> list[str]:
        return [hook_at(self.hook_out, layer) for layer in self.layers]

    def latents_of(self, layer: int) -> slice:
        """Layer `layer`'s latents in [..., L*n]."""
        return slice(layer * self.n_latents, (layer + 1) * self.n_latents)

    def inputs_of(self, layer: int) -> slice:
        """Layer `layer`'s input in a row [..., L*d_model_in]."""
        return slice(layer * self.d_model_in, (layer + 1) * self.d_model_in)

    def outputs_of(self, layer: int) -> slice:
        """Layer `layer`'s output in [..., L*d_model_out]."""
        return slice(layer * self.d_model_out, (layer + 1) * self.d_model_out)


def check_clt_cfg(cfg: Any) -> None:
    """One-line errors for CLT settings that cannot work, in a run config or an SAEConfig;
    a run config without d_out gets d_out = d_in (every layer's output as wide as its input)."""
    for field in ("hook_name", "hook_name_out"):
        pattern = getattr(cfg, field)
        if pattern is None or pattern.count(LAYER_WILDCARD) != 1:
            raise ValueError(
                f"a clt needs {field} to be a hook pattern with one '*' for the layer (e.g. "
                f"'blocks.*.ln2.hook_normalized' -> 'blocks.*.hook_mlp_out'), got {pattern!r}"
            )
    n_layers = cfg.hook_layer + 1
    if n_layers < 2:
        raise ValueError(
            f"a clt spans layers 0..hook_layer, and hook_layer={cfg.hook_layer} gives one "
            "layer: set hook_layer to the last layer it covers (e.g. n_layers - 1), or train "
            "a transcoder"
        )
    if cfg.hook_layer_out is not None and cfg.hook_layer_out != cfg.hook_layer:
        raise ValueError(
            f"a clt writes to the same layers it reads: hook_layer_out={cfg.hook_layer_out} "
            f"must equal hook_layer={cfg.hook_layer} (or be left unset)"
        )
    if cfg.d_out is None:
        cfg.d_out = cfg.d_in
    for field in ("d_in", "d_out", "d_sae"):
        value = getattr(cfg, field)
        if value is None or value % n_layers:
            raise ValueError(
                f"a clt over {n_layers} layers needs {field} to be a multiple of {n_layers} "
                f"({field} is the width of all layers together, n_layers * per-layer width), "
                f"got {value}"
            )
    _check_clt_options(cfg, n_layers)


def _check_clt_options(cfg: Any, n_layers: int) -> None:
    kwargs = cfg.activation_fn_kwargs or {}
    scope = kwargs.get("topk_scope", DEFAULT_TOPK_SCOPE)
    if scope not in TOPK_SCOPES:
        raise ValueError(
            f"activation_fn_kwargs['topk_scope'] must be one of {list(TOPK_SCOPES)} (a TopK per "
            f"layer, or one over all layers), got {scope!r}"
        )
    n_latents = cfg.d_sae // n_layers
    k = kwargs.get("k")
    if isinstance(k, int) and k > n_latents:
        raise ValueError(
            f"activation_fn_kwargs['k']={k} (active latents per layer) exceeds the "
            f"{n_latents} latents each layer has (d_sae={cfg.d_sae} over {n_layers} layers)"
        )
    unsupported = {
        "skip_connection": cfg.skip_connection,
        "hook_head_index": cfg.hook_head_index is not None,
        "decoder_orthogonal_init": getattr(cfg, "decoder_orthogonal_init", False),
        "decoder_heuristic_init": getattr(cfg, "decoder_heuristic_init", False),
        "decoder_init_norm": getattr(cfg, "decoder_init_norm", None) is not None,
        "init_encoder_as_decoder_transpose": getattr(
            cfg, "init_encoder_as_decoder_transpose", False
        ),
    }
    for name, is_set in unsupported.items():
        if is_set:
            raise ValueError(f"{name} is not supported for clt SAEs: leave it unset")


def block_decode(sae: SAEModule, acts: torch.Tensor) -> torch.Tensor:
    """sum over source layers i <= j of acts_i @ W_dec[i -> j], for every target layer j:
    [..., L*d_model_out] from acts [..., L*n], reading only the decoder blocks a CLT has (the
    zero blocks below the diagonal get no gradient)."""
    layout = CLTLayout.of(sae.cfg)
    n, d = layout.n_latents, layout.d_model_out
    outputs = [
        acts[..., : (j + 1) * n] @ sae.W_dec[: (j + 1) * n, j * d : (j + 1) * d]
        for j in layout.layers
    ]
    return torch.cat(outputs, dim=-1)


def causal_mask(layout: CLTLayout, device: torch.device | None = None) -> torch.Tensor:
    """[L*n, L*d_model_out] bool: True where a decoder entry may be non-zero (j >= i)."""
    source = torch.arange(layout.n_layers, device=device).repeat_interleave(layout.n_latents)
    target = torch.arange(layout.n_layers, device=device).repeat_interleave(layout.d_model_out)
    return target[None, :] >= source[:, None]


def encoder_pre(sae: SAEModule, x: torch.Tensor) -> torch.Tensor:
    """Pre-activations [..., L*n] of input rows x [..., L*d_model_in]: each layer's input
    through its own encoder."""
    layout = CLTLayout.of(sae.cfg)
    xs = x.unflatten(-1, (layout.n_layers, layout.d_model_in))  # [..., L, d_in_layer]
    w = sae.W_enc.unflatten(-1, (layout.n_layers, layout.n_latents))  # [d_in_layer, L, n]
    pre = torch.einsum("...ld,dln->...ln", xs, w)  # [..., L, n]
    return pre.flatten(-2) + sae.b_enc


def select_topk(
    hidden_pre: torch.Tensor, layout: CLTLayout, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values after ReLU, indices into [..., L*n]) of the kept latents: k per layer for the
    "layer" scope ([..., L*k]), k*L over all layers for "global"."""
    if layout.topk_scope == "global":
        top = hidden_pre.topk(k * layout.n_layers, dim=-1, sorted=False)
        return top.values.relu(), top.indices
    per_layer = hidden_pre.unflatten(-1, (layout.n_layers, layout.n_latents))
    top = per_layer.topk(k, dim=-1, sorted=False)  # [..., L, k]
    offsets = torch.arange(layout.n_layers, device=hidden_pre.device)[:, None] * layout.n_latents
    return top.values.relu().flatten(-2), (top.indices + offsets).flatten(-2)


def _k(sae: SAEModule, layout: CLTLayout) -> int:
    activation = sae.activation_fn
    return activation.k if isinstance(activation, TopK) else layout.k


class CLTArchitecture(Architecture):
    """A cross-layer transcoder with per-layer (default) or global TopK sparsity, trained
    with the MSE over all layers' outputs plus the AuxK loss on dead latents."""

    name = CLT_ARCHITECTURE
    supports_ghost_grads = False
    default_activation_fn = "topk"
    default_activation_fn_kwargs = {"k": 32}
    required_activation_fn = "topk"

    # --- inference -------------------------------------------------------------------
    def init_params(self, sae: SAEModule) -> None:
        check_clt_cfg(sae.cfg)
        layout = CLTLayout.of(sae.cfg)
        d_sae = sae.cfg.d_sae
        sae.W_enc = new_param(sae, layout.d_model_in, d_sae, fill=None)
        sae.b_enc = new_param(sae, d_sae)
        sae.W_dec = new_param(sae, d_sae, layout.n_layers * layout.d_model_out, fill=None)
        with torch.no_grad():
            sae.W_dec.mul_(causal_mask(layout, sae.W_dec.device))
        sae.b_dec = new_param(sae, layout.n_layers * layout.d_model_out)

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(encoder_pre(sae, x))  # [..., L*n]
        return self._select(sae, hidden_pre), hidden_pre

    def _select(self, sae: SAEModule, hidden_pre: torch.Tensor) -> torch.Tensor:
        layout = CLTLayout.of(sae.cfg)
        values, indices = select_topk(hidden_pre, layout, _k(sae, layout))
        acts = torch.zeros_like(hidden_pre).scatter(-1, indices, values)
        return sae.hook_sae_acts_post(acts)

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        sae.b_enc.data *= norms

    # --- training --------------------------------------------------------------------
    def check_cfg(self, cfg: Any) -> None:
        check_clt_cfg(cfg)

    def check_training_cfg(self, cfg: TrainingConfig, use_error_term: bool) -> None:
        super().check_training_cfg(cfg, use_error_term)
        if cfg.activation_fn_str != "topk":
            raise ValueError(
                f"clt SAEs need activation_fn_str='topk', got {cfg.activation_fn_str!r}"
            )

    def training_encode(
        self, sae: TrainingSAEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(encoder_pre(sae, x)))
        return self._select(sae, hidden_pre), hidden_pre

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        feature_acts, hidden_pre = self.training_encode(sae, x)
        acts = sae.apply_finetuning_scaling_factor(feature_acts)
        sae_out = sae.finish_decode(block_decode(sae, acts))  # [batch, L*d_model_out]
        return TrainingForward(feature_acts, hidden_pre, sae_out)

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        """AuxK: the top d_sae//2 dead latents reconstruct the residual over all layers,
        decoded through the CLT's own blocks (as `topk_aux_loss`, scaled by the dead share)."""
        mask = inputs.dead_neuron_mask
        n_dead = 0 if mask is None else int(mask.sum())
        if mask is None or n_dead == 0:
            return {"auxiliary_reconstruction_loss": inputs.sae_out.new_tensor(0.0)}
        k_aux = inputs.hidden_pre.shape[-1] // 2
        aux_acts = topk_aux_acts(inputs.hidden_pre, mask, min(k_aux, n_dead))
        residual = inputs.sae_in - inputs.sae_out
        aux_out = block_decode(sae, aux_acts) + sae.b_dec
        aux = min(n_dead / k_aux, 1.0) * (aux_out - residual).pow(2).sum(dim=-1).mean()
        return {"auxiliary_reconstruction_loss": aux}

    def set_k(self, sae: TrainingSAEModule, k: int) -> None:
        activation: TopK = sae.activation_fn  # type: ignore[assignment]
        activation.k = int(k)
