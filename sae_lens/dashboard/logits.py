"""The direct effect of a latent on the model's logits: its decoder direction, carried into
the residual stream where the SAE's hook is not in it, times the unembedding
(`W_dec[i] @ W_U`, as SAEDashboard computes it), and the strings of token ids.

The unembedding is the model's `W_U` as loaded. A TransformerLens model loaded with its
default processing (`fold_ln=True`) has the final LayerNorm's scale folded into `W_U`; its
normalisation by the residual norm, a positive factor per token, is left out, so the logit
values are direct effects up to that factor and their order is exact."""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.dashboard.data import ActivationHistogram, LogitToken

LOGIT_HISTOGRAM_BINS = 40


def unembedding(model: Any) -> torch.Tensor | None:
    """The model's unembedding [d_model, d_vocab], or None when it has none we can read."""
    w_u = getattr(model, "W_U", None)
    if isinstance(w_u, torch.Tensor):
        return w_u
    inner = getattr(model, "model", None)  # HookedProxyLM wraps a Hugging Face model
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    weight = getattr(head, "weight", None)
    return weight.T if isinstance(weight, torch.Tensor) else None


def residual_directions(
    decoder_rows: torch.Tensor, hook_name: str, model: Any
) -> torch.Tensor | None:
    """Decoder rows [n, d_in] as residual-stream directions [n, d_model]: as they are on a
    residual or attention/MLP output hook, through W_O for an attention `hook_z` and through
    W_out for an MLP `hook_post`; None when the width matches none of these."""
    cfg = getattr(model, "cfg", None)
    d_model = getattr(cfg, "d_model", None)
    layer = _layer_of(hook_name)
    if hook_name.endswith("hook_z") and layer is not None and hasattr(model, "W_O"):
        w_o = model.W_O[layer]  # [n_heads, d_head, d_model]
        if decoder_rows.shape[1] == w_o.shape[0] * w_o.shape[1]:
            return decoder_rows @ w_o.reshape(-1, w_o.shape[-1]).to(decoder_rows)
    if hook_name.endswith("mlp.hook_post") and layer is not None and hasattr(model, "W_out"):
        w_out = model.W_out[layer]  # [d_mlp, d_model]
        if decoder_rows.shape[1] == w_out.shape[0]:
            return decoder_rows @ w_out.to(decoder_rows)
    if d_model is None or decoder_rows.shape[1] == d_model:
        return decoder_rows
    return None


def _layer_of(hook_name: str) -> int | None:
    parts = hook_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def logit_effects(decoder_rows: torch.Tensor, hook_name: str, model: Any) -> torch.Tensor | None:
    """[n, d_vocab] direct logit effects of the decoder rows [n, d_in], or None."""
    with torch.no_grad():
        w_u = unembedding(model)
        if w_u is None:
            return None
        directions = residual_directions(decoder_rows.detach().float(), hook_name, model)
        if directions is None or directions.shape[1] != w_u.shape[0]:
            return None
        return directions @ w_u.detach().to(directions)


def top_and_bottom(
    effects: torch.Tensor, n: int, strings: dict[int, str]
) -> tuple[list[LogitToken], list[LogitToken]]:
    """The `n` most promoted and `n` most suppressed tokens of one latent's effects [d_vocab]."""
    n = min(n, effects.shape[0])
    top = torch.topk(effects, n)
    bottom = torch.topk(effects, n, largest=False)

    def tokens(values: torch.Tensor, ids: torch.Tensor) -> list[LogitToken]:
        return [
            LogitToken(strings.get(i, str(i)), i, v)
            for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        ]

    return tokens(top.values, top.indices), tokens(bottom.values, bottom.indices)


def logit_histogram(
    effects: torch.Tensor, n_bins: int = LOGIT_HISTOGRAM_BINS
) -> ActivationHistogram:
    """Counts of one latent's logit effects [d_vocab] over the vocabulary, min to max."""
    low, high = float(effects.min()), float(effects.max())
    if high <= low:
        high = low + 1e-6
    counts = torch.histc(effects.float(), bins=n_bins, min=low, max=high)
    step = (high - low) / n_bins
    edges = [low + i * step for i in range(n_bins + 1)]
    return ActivationHistogram(edges, [int(c) for c in counts.tolist()], 0)


def token_strings(model: Any, token_ids: set[int]) -> dict[int, str]:
    """Each token id's text (decoded alone); `<id>` without a tokenizer or beyond its
    vocabulary."""
    tokenizer = getattr(model, "tokenizer", None)
    ids = sorted(i for i in token_ids if i >= 0)
    if tokenizer is None or not ids:
        return {i: f"<{i}>" for i in ids}
    size = len(tokenizer)
    known = [i for i in ids if i < size]
    texts = tokenizer.batch_decode([[i] for i in known])
    strings = {i: f"<{i}>" for i in ids}
    strings.update(zip(known, texts, strict=True))
    return strings
