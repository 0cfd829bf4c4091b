"""Evals of a transcoder: its reconstruction metrics (FVU included) are of the activation at
hook_name_out, and CE/KL are measured with its prediction spliced in there."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from sae_lens.eval_metrics import EvalConfig, run_evals
from tests.evals.conftest import FixedTokensStore
from tests.transcoders.test_transcoder_splicing import (
    IN_HOOK,
    OUT_HOOK,
    make_transcoder,
    prediction_by_hand,
    splice_by_hand,
)

CONFIG = EvalConfig(
    batch_size_prompts=3,
    n_eval_reconstruction_batches=2,
    n_eval_sparsity_variance_batches=2,
    compute_kl=True,
    compute_ce_loss=True,
    compute_l2_norms=True,
    compute_sparsity_metrics=True,
    compute_variance_metrics=True,
)


def _batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, 50, (3, 8), generator=generator) for _ in range(2)]


def test_reconstruction_metrics_and_fvu_are_of_the_output_hook(
    tiny_tl_model: HookedTransformer,
) -> None:
    sae = make_transcoder()
    metrics, _ = run_evals(sae, FixedTokensStore(_batches()), tiny_tl_model, CONFIG)  # type: ignore[arg-type]
    with torch.no_grad():
        tokens = torch.cat(_batches())
        _, cache = tiny_tl_model.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
        x, y = cache[IN_HOOK].flatten(0, 1), cache[OUT_HOOK].flatten(0, 1)
        prediction = prediction_by_hand(sae, x)
    fvu = (y - prediction).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    quality = metrics["reconstruction_quality"]
    assert abs(quality["fvu"] - fvu.item()) < 1e-5
    assert abs(quality["explained_variance"] - (1 - fvu.item())) < 1e-5
    assert abs(quality["mse"] - (y - prediction).pow(2).sum(-1).mean().item()) < 1e-4
    shrinkage = metrics["shrinkage"]
    assert abs(shrinkage["l2_norm_in"] - y.norm(dim=-1).mean().item()) < 1e-5
    l0 = (torch.relu(x @ sae.W_enc + sae.b_enc) > 0).sum(-1).float().mean()
    assert abs(metrics["sparsity"]["l0"] - l0.item()) < 1e-6


def test_ce_and_kl_splice_the_prediction_into_the_output_hook(
    tiny_tl_model: HookedTransformer,
) -> None:
    sae = make_transcoder()
    metrics, _ = run_evals(sae, FixedTokensStore(_batches()), tiny_tl_model, CONFIG)  # type: ignore[arg-type]

    def zero(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return torch.zeros_like(acts)

    with torch.no_grad():
        tokens = torch.cat(_batches())
        clean = tiny_tl_model(tokens)
        spliced = tiny_tl_model.run_with_hooks(tokens, fwd_hooks=splice_by_hand(sae))
        ablated = tiny_tl_model.run_with_hooks(tokens, fwd_hooks=[(OUT_HOOK, zero)])

    def ce(logits: torch.Tensor) -> float:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).item()

    def kl(logits: torch.Tensor) -> float:
        log_p = F.log_softmax(clean, -1)
        return (log_p.exp() * (log_p - F.log_softmax(logits, -1))).sum(-1).mean().item()

    performance = metrics["model_performance_preservation"]
    assert abs(performance["ce_loss_with_sae"] - ce(spliced)) < 1e-4
    assert abs(performance["ce_loss_with_ablation"] - ce(ablated)) < 1e-4
    assert abs(performance["ce_loss_without_sae"] - ce(clean)) < 1e-4
    behaviour = metrics["model_behavior_preservation"]
    assert abs(behaviour["kl_div_with_sae"] - kl(spliced)) < 1e-4
    assert abs(behaviour["kl_div_with_ablation"] - kl(ablated)) < 1e-4
