"""Evaluating a replacement of every layer's MLP output: a cross-layer transcoder, or one
per-layer transcoder per layer (so the two can be compared on the same tokens).

- Per-layer FVU (fraction of variance unexplained) and L0, open loop: every layer's input
  is read from the unpatched model, and the prediction is compared with that layer's output
  there. FVU_j = sum ||y_j - yhat_j||^2 / sum ||y_j - mean(y_j)||^2 over the tokens.
- CE loss and KL divergence of the full replacement: the model runs with every output
  replaced (closed loop for transcoders and per-layer-TopK CLTs, see clt_splice), against the
  unpatched model and against every output zero-ablated;
  `ce_loss_score = (CE_ablated - CE_replaced) / (CE_ablated - CE_clean)` (1: as good as the
  model, 0: no better than removing every MLP).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.sae import SAE
from sae_lens.saes.clt import CLTLayout, is_clt

Replacement = SAE | Sequence[SAE]  # a CLT, or per-layer transcoders (one per layer)


def _as_list(replacement: Replacement) -> list[SAE]:
    return [replacement] if isinstance(replacement, SAE) else list(replacement)


def _layer_hooks(replacement: Replacement) -> list[tuple[int, str, str]]:
    """(layer, input hook, output hook) of every layer the replacement covers."""
    out: list[tuple[int, str, str]] = []
    for sae in _as_list(replacement):
        if is_clt(sae.cfg):
            layout = CLTLayout.of(sae.cfg)
            hooks = zip(layout.input_hooks(), layout.output_hooks(), strict=True)
            out += [(layer, i, o) for layer, (i, o) in enumerate(hooks)]
        elif sae.cfg.hook_name_out is not None:
            out.append((int(sae.cfg.hook_layer_out or 0), sae.cfg.hook_name, sae.cfg.hook_name_out))
        else:
            raise ValueError(
                f"{sae.cfg.hook_name!r}: a replacement is a clt or transcoders (hook_name_out "
                "set), not an SAE"
            )
    return sorted(out)


@torch.no_grad()
def _open_loop_predictions(
    replacement: Replacement, cache: dict[str, torch.Tensor]
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """({layer: prediction [tokens, d]}, {layer: active latents per token [tokens]}) from
    the unpatched model's inputs in `cache`."""
    preds: dict[int, torch.Tensor] = {}
    l0: dict[int, torch.Tensor] = {}
    for sae in _as_list(replacement):
        if is_clt(sae.cfg):
            layout = CLTLayout.of(sae.cfg)
            x = torch.cat([cache[name].flatten(0, 1) for name in layout.input_hooks()], dim=-1)
            acts = sae.encode(x)
            out = sae.decode(acts)
            for layer in layout.layers:
                preds[layer] = out[:, layout.outputs_of(layer)]
                l0[layer] = (acts[:, layout.latents_of(layer)] > 0).sum(-1).float()
        else:
            layer = int(sae.cfg.hook_layer_out or 0)
            x = cache[sae.cfg.hook_name].flatten(0, 1)
            acts = sae.encode(x)
            out = sae.decode(acts)
            if sae.cfg.skip_connection:
                out = out + sae.skip_output(x)
            preds[layer], l0[layer] = out, (acts > 0).sum(-1).float()
    return preds, l0


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits [batch, pos, vocab] on tokens [batch, pos]."""
    log_probs = logits[:, :-1].log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None]).mean()


def _zero_hooks(names: Iterable[str]) -> list[tuple[str, Any]]:
    return [(name, lambda acts, hook: torch.zeros_like(acts)) for name in names]  # noqa: ARG005


@torch.no_grad()
def evaluate_replacement(
    model: HookedRootModule,
    replacement: Replacement,
    token_batches: Iterable[torch.Tensor],
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-layer FVU and L0 (open loop) and the CE loss / KL of the full replacement (closed
    loop) of `replacement` over `token_batches` (each [batch, pos]); see the module doc."""
    from sae_lens.analysis.hooked_sae_transformer import splice_saes

    kwargs = model_kwargs or {}
    layers = _layer_hooks(replacement)
    names = [name for _, i, o in layers for name in (i, o)]
    sq_err: dict[int, float] = {}
    stats: dict[int, list[torch.Tensor]] = {layer: [] for layer, _, _ in layers}
    l0s: dict[int, list[torch.Tensor]] = {layer: [] for layer, _, _ in layers}
    ce = {"clean": 0.0, "replaced": 0.0, "ablated": 0.0}
    kl_total, n_batches = 0.0, 0
    for tokens in token_batches:
        logits, cache = model.run_with_cache(tokens, names_filter=names, **kwargs)
        preds, l0 = _open_loop_predictions(replacement, cache)
        for layer, _, hook_out in layers:
            y = cache[hook_out].flatten(0, 1).float()
            sq_err[layer] = sq_err.get(layer, 0.0) + (y - preds[layer].float()).pow(2).sum().item()
            stats[layer].append(y)
            l0s[layer].append(l0[layer])
        with splice_saes(model, _as_list(replacement), use_error_term=False):
            replaced = model(tokens, **kwargs)
        ablated = model.run_with_hooks(
            tokens, fwd_hooks=_zero_hooks(o for _, _, o in layers), **kwargs
        )
        ce["clean"] += _next_token_ce(logits, tokens).item()
        ce["replaced"] += _next_token_ce(replaced, tokens).item()
        ce["ablated"] += _next_token_ce(ablated, tokens).item()
        log_p, log_q = logits.log_softmax(-1), replaced.log_softmax(-1)
        kl_total += (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
        n_batches += 1
    if n_batches == 0:
        raise ValueError("evaluate_replacement got no token batches")
    ce = {key: value / n_batches for key, value in ce.items()}
    fvu, variance = {}, {}
    for layer, _, _ in layers:
        y = torch.cat(stats[layer])
        total = (y - y.mean(0)).pow(2).sum().item()
        fvu[layer], variance[layer] = sq_err[layer] / total, total / y.shape[0]
    return {
        "fvu_per_layer": [fvu[layer] for layer, _, _ in layers],
        # the summed variance of each layer's output per token: a CLT's summed MSE weighs
        # the layers by it
        "output_variance_per_layer": [variance[layer] for layer, _, _ in layers],
        "l0_per_layer": [torch.cat(l0s[layer]).mean().item() for layer, _, _ in layers],
        "ce_loss_without_replacement": ce["clean"],
        "ce_loss_with_replacement": ce["replaced"],
        "ce_loss_with_ablation": ce["ablated"],
        "ce_loss_score": (ce["ablated"] - ce["replaced"]) / (ce["ablated"] - ce["clean"]),
        "kl_div_with_replacement": kl_total / n_batches,
    }


def run_clt_evals(
    sae: SAE,
    activation_store: Any,
    model: HookedRootModule,
    eval_config: Any,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`run_evals` for a CLT: `evaluate_replacement` on `n_eval_reconstruction_batches`
    batches of the store's tokens, in run_evals' (metrics, feature_metrics) form."""
    n_batches = max(int(getattr(eval_config, "n_eval_reconstruction_batches", 1)), 1)
    batch_size = getattr(eval_config, "batch_size_prompts", None)
    batches = [activation_store.get_batch_tokens(batch_size) for _ in range(n_batches)]
    result = evaluate_replacement(model, sae, batches, dict(model_kwargs or {}))
    fvu = result["fvu_per_layer"]
    metrics = {
        "model_performance_preservation": {
            "ce_loss_score": result["ce_loss_score"],
            "ce_loss_with_sae": result["ce_loss_with_replacement"],
            "ce_loss_without_sae": result["ce_loss_without_replacement"],
            "ce_loss_with_ablation": result["ce_loss_with_ablation"],
        },
        "model_behavior_preservation": {"kl_div_with_sae": result["kl_div_with_replacement"]},
        "reconstruction_quality": {
            "explained_variance": 1.0 - sum(fvu) / len(fvu),
            **{f"fvu_layer_{layer}": value for layer, value in enumerate(fvu)},
        },
        "sparsity": {"l0": sum(result["l0_per_layer"])},
    }
    return metrics, {}
