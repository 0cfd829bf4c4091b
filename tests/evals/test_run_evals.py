"""run_evals: every metric against a direct computation from the model's logits and the SAE's
weights on a tiny model, with and without ignored tokens."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sae_lens.evals import (
    EvalConfig,
    get_eval_everything_config,
    get_featurewise_weight_based_metrics,
    get_recons_loss,
    run_evals,
)

RESID = "blocks.1.hook_resid_pre"
HOOK_Z = "blocks.0.attn.hook_z"


def latents_by_hand(sae: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)


def kept_by_hand(tokens: torch.Tensor, ignore: set[int]) -> torch.Tensor:
    kept = torch.ones_like(tokens, dtype=torch.bool)
    for token in ignore:
        kept &= tokens != token
    return kept


def flat(acts: torch.Tensor) -> torch.Tensor:
    """hook_z [batch, pos, heads, d_head] -> [batch, pos, heads * d_head]; others unchanged."""
    return acts.reshape(*acts.shape[:2], -1)


def reference_batch(
    model: Any, sae: Any, tokens: torch.Tensor, kept: torch.Tensor, scale: float
) -> dict[str, torch.Tensor]:
    """One batch's per-token values, written out directly from logits and activations."""
    hook = sae.cfg.hook_name

    def reconstruct(acts: torch.Tensor) -> torch.Tensor:
        x = flat(acts) * scale
        return (latents_by_hand(sae, x) @ sae.W_dec + sae.b_dec) / scale

    def where_kept(acts: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.where(kept.reshape(kept.shape + (1,) * (acts.ndim - 2)), new, acts)

    def splice(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return where_kept(acts, reconstruct(acts).reshape(acts.shape))

    def ablate(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return where_kept(acts, torch.zeros_like(acts))

    logits = model(tokens)
    p = logits.softmax(-1)

    def ce(lg: torch.Tensor) -> torch.Tensor:
        nll = -lg.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        return nll[kept[:, :-1]]

    def kl(lq: torch.Tensor) -> torch.Tensor:
        return (p * (p.log() - lq.softmax(-1).log())).sum(-1)[kept]

    logits_sae = model.run_with_hooks(tokens, fwd_hooks=[(hook, splice)])
    logits_abl = model.run_with_hooks(tokens, fwd_hooks=[(hook, ablate)])
    acts = model.run_with_cache(tokens, names_filter=hook)[1][hook]
    f_all = latents_by_hand(sae, flat(acts) * scale)
    x, x_hat = flat(acts)[kept], reconstruct(acts)[kept]
    return {
        "ce0": ce(logits),
        "ce_sae": ce(logits_sae),
        "ce_abl": ce(logits_abl),
        "kl_sae": kl(logits_sae),
        "kl_abl": kl(logits_abl),
        "x": x,
        "x_hat": x_hat,
        "f": f_all[kept],
        "fired_prompts": ((f_all > 0) & kept[..., None]).any(dim=1).sum(dim=0),
        "ev_legacy": 1 - (x - x_hat).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1),
        "rrb": x_hat.norm(dim=-1).pow(2).mean() / (x * x_hat).sum(-1).mean(),
    }


def reference_metrics(
    model: Any, sae: Any, batches: list[torch.Tensor], ignore: set[int] = set(), scale: float = 1.0
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """All metrics of run_evals, computed from `reference_batch` over the batches."""
    with torch.no_grad():
        per_batch = [
            reference_batch(model, sae, tokens, kept_by_hand(tokens, ignore), scale)
            for tokens in batches
        ]
    per = {k: [batch[k] for batch in per_batch] for k in per_batch[0]}
    rrb = per.pop("rrb")
    fired_prompts = sum(per.pop("fired_prompts"))
    cat = {k: torch.cat(v) for k, v in per.items()}
    x, x_hat, f = cat["x"], cat["x_hat"], cat["f"]
    ce0, ce_sae, ce_abl = (cat[k].mean().item() for k in ("ce0", "ce_sae", "ce_abl"))
    kl_sae, kl_abl = cat["kl_sae"].mean().item(), cat["kl_abl"].mean().item()
    cos = (x * x_hat).sum(-1) / (x.norm(dim=-1) * x_hat.norm(dim=-1))
    metrics = {
        "ce_loss_without_sae": ce0,
        "ce_loss_with_sae": ce_sae,
        "ce_loss_with_ablation": ce_abl,
        "ce_loss_score": (ce_abl - ce_sae) / (ce_abl - ce0),
        "kl_div_with_sae": kl_sae,
        "kl_div_with_ablation": kl_abl,
        "kl_div_score": (kl_abl - kl_sae) / kl_abl,
        "l0": (f > 0).sum(-1).float().mean().item(),
        "l1": f.sum(-1).mean().item(),
        "mse": (x - x_hat).pow(2).sum(-1).mean().item(),
        "explained_variance": 1 - ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item(),
        "explained_variance_legacy": cat["ev_legacy"].mean().item(),
        "cossim": cos.mean().item(),
        "l2_norm_in": x.norm(dim=-1).mean().item(),
        "l2_norm_out": x_hat.norm(dim=-1).mean().item(),
        "l2_ratio": (x_hat.norm(dim=-1) / x.norm(dim=-1)).mean().item(),
        "relative_reconstruction_bias": torch.stack(rrb).mean().item(),
    }
    fire_counts = (f > 0).sum(0).float()
    features = {
        "feature_density": fire_counts / f.shape[0],
        "consistent_activation_heuristic": fire_counts / fired_prompts,
    }
    return metrics, features


def flatten_groups(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        k: v
        for group, values in metrics.items()
        if group != "token_stats"
        for k, v in values.items()
    }


def assert_matches_reference(
    metrics: dict[str, Any], features: dict[str, Any], expected: tuple[dict, dict]
) -> None:
    expected_metrics, expected_features = expected
    assert flatten_groups(metrics) == pytest.approx(expected_metrics, rel=1e-4, abs=1e-6)
    for name, values in expected_features.items():
        torch.testing.assert_close(
            torch.tensor(features[name]), values, rtol=1e-5, atol=1e-6, equal_nan=True
        )


def everything(n_batches: int = 2) -> EvalConfig:
    return get_eval_everything_config(
        n_eval_reconstruction_batches=n_batches, n_eval_sparsity_variance_batches=n_batches
    )


def test_every_metric_matches_a_direct_computation(
    make_store, tiny_tl_model, make_sae, token_batches
):
    sae = make_sae(RESID)
    store = make_store(token_batches)
    metrics, features = run_evals(sae, store, tiny_tl_model, everything())
    assert_matches_reference(
        metrics, features, reference_metrics(tiny_tl_model, sae, token_batches)
    )
    assert 0 < metrics["sparsity"]["l0"] < sae.cfg.d_sae  # a non-trivial SAE


def test_ignored_tokens_are_left_out_of_every_metric(
    make_store, tiny_tl_model, make_sae, token_batches
):
    ignore = {7, 13}
    batches = [b.clone() for b in token_batches]
    for batch in batches:
        batch[:, 0] = 7  # a BOS-like first token, plus a few more ignored positions
        batch[1, 4] = 13
    sae = make_sae(RESID)
    metrics, features = run_evals(
        sae, make_store(batches), tiny_tl_model, everything(), ignore_tokens={*ignore, None}
    )
    assert_matches_reference(
        metrics, features, reference_metrics(tiny_tl_model, sae, batches, ignore=ignore)
    )
    unmasked = flatten_groups(run_evals(sae, make_store(batches), tiny_tl_model, everything())[0])
    for name in ("ce_loss_with_ablation", "kl_div_with_sae", "mse", "l0", "explained_variance"):
        assert unmasked[name] != pytest.approx(flatten_groups(metrics)[name], rel=1e-3), name


def test_hook_z_sae_is_evaluated_on_all_heads_flattened(
    make_store, tiny_tl_model, make_sae, token_batches
):
    cfg = tiny_tl_model.cfg
    sae = make_sae(HOOK_Z, d_in=cfg.n_heads * cfg.d_head)
    assert sae.hook_z_reshaping_mode
    metrics, features = run_evals(sae, make_store(token_batches), tiny_tl_model, everything())
    assert_matches_reference(
        metrics, features, reference_metrics(tiny_tl_model, sae, token_batches)
    )
    assert sae.hook_z_reshaping_mode  # restored after the evals


def test_norm_scaled_inputs_are_compared_in_original_units(
    make_store, tiny_tl_model, make_sae, token_batches
):
    sae = make_sae(RESID)
    store = make_store(
        token_batches, normalize_activations="expected_average_only_in", scaling_factor=2.5
    )
    metrics, features = run_evals(sae, store, tiny_tl_model, everything())
    assert_matches_reference(
        metrics, features, reference_metrics(tiny_tl_model, sae, token_batches, scale=2.5)
    )


def test_weight_based_metrics(make_sae):
    sae = make_sae(RESID)
    metrics = get_featurewise_weight_based_metrics(sae)
    W_enc, W_dec = sae.W_enc.detach(), sae.W_dec.detach()
    enc_norm = (W_enc**2).sum(0).sqrt()
    cos = (W_enc.T * W_dec).sum(-1) / (enc_norm * (W_dec**2).sum(-1).sqrt())
    torch.testing.assert_close(torch.tensor(metrics["encoder_norm"]), enc_norm)
    torch.testing.assert_close(torch.tensor(metrics["encoder_bias"]), sae.b_enc.detach())
    torch.testing.assert_close(torch.tensor(metrics["encoder_decoder_cosine_sim"]), cos)


def test_result_structure_follows_sae_lens_5_6(make_store, tiny_tl_model, make_sae, token_batches):
    sae = make_sae(RESID)
    config = get_eval_everything_config(
        n_eval_reconstruction_batches=3, n_eval_sparsity_variance_batches=2
    )
    store = make_store(token_batches)
    metrics, features = run_evals(sae, store, tiny_tl_model, config)
    assert store.position == 3 + 2  # read on from the stream, never rewound
    assert {group: set(values) for group, values in metrics.items()} == {
        "model_behavior_preservation": {"kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"},
        "model_performance_preservation": {
            "ce_loss_score",
            "ce_loss_with_ablation",
            "ce_loss_with_sae",
            "ce_loss_without_sae",
        },
        "reconstruction_quality": {
            "explained_variance",
            "explained_variance_legacy",
            "mse",
            "cossim",
        },
        "shrinkage": {"l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias"},
        "sparsity": {"l0", "l1"},
        "token_stats": {"total_tokens_eval_reconstruction", "total_tokens_eval_sparsity_variance"},
    }
    assert metrics["token_stats"] == {
        "total_tokens_eval_reconstruction": 3 * 3 * 8,
        "total_tokens_eval_sparsity_variance": 2 * 3 * 8,
    }
    assert set(features) == {
        "feature_density",
        "consistent_activation_heuristic",
        "encoder_bias",
        "encoder_norm",
        "encoder_decoder_cosine_sim",
    }
    assert all(len(values) == sae.cfg.d_sae for values in features.values())


def test_only_requested_metrics_are_returned(make_store, tiny_tl_model, make_sae, token_batches):
    sae = make_sae(RESID)
    config = EvalConfig(compute_sparsity_metrics=True, compute_ce_loss=True)
    metrics, features = run_evals(sae, make_store(token_batches), tiny_tl_model, config)
    assert set(metrics) == {"sparsity", "model_performance_preservation", "token_stats"}
    assert features == {}
    assert all(not hp.fwd_hooks for hp in tiny_tl_model.hook_dict.values())  # no hook left behind


def test_recons_loss_per_position_shapes(make_store, tiny_tl_model, make_sae, token_batches):
    tokens = token_batches[0]
    per = get_recons_loss(
        make_sae(RESID), tiny_tl_model, tokens, make_store(token_batches), True, True
    )
    assert {k: tuple(v.shape) for k, v in per.items()} == {
        "kl_div_with_sae": (3, 8),
        "kl_div_with_ablation": (3, 8),
        "ce_loss_with_sae": (3, 7),
        "ce_loss_without_sae": (3, 7),
        "ce_loss_with_ablation": (3, 7),
    }


def test_unknown_hook_is_a_clear_error(make_store, tiny_tl_model, make_sae, token_batches):
    sae = make_sae("blocks.1.hook_resid_prx")
    with pytest.raises(ValueError, match=r"did you mean 'blocks\.1\.hook_resid_pre'"):
        run_evals(sae, make_store(token_batches), tiny_tl_model, everything())


def test_d_in_mismatch_is_a_clear_error(make_store, tiny_tl_model, make_sae, token_batches):
    sae = make_sae(RESID, d_in=12)
    with pytest.raises(
        ValueError,
        match=r"SAE d_in=12 does not match the activation at 'blocks\.1\.hook_resid_pre'",
    ):
        run_evals(sae, make_store(token_batches), tiny_tl_model, everything())


def test_zero_batches_is_refused_before_any_work(
    make_store, tiny_tl_model, make_sae, token_batches
):
    store = make_store(token_batches)
    config = EvalConfig(compute_kl=True, n_eval_reconstruction_batches=0)
    with pytest.raises(ValueError, match="n_eval_reconstruction_batches must be > 0"):
        run_evals(make_sae(RESID), store, tiny_tl_model, config)
    assert store.position == 0


def test_kl_is_zero_for_a_perfect_reconstruction(
    make_store, tiny_tl_model, make_sae, token_batches
):
    """An SAE that is the identity on its inputs leaves the model unchanged."""
    sae = make_sae(RESID, d_sae=32)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(16), -torch.eye(16)], dim=1))
        sae.W_dec.copy_(torch.cat([torch.eye(16), -torch.eye(16)], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    metrics, _ = run_evals(sae, make_store(token_batches), tiny_tl_model, everything())
    assert metrics["model_behavior_preservation"]["kl_div_with_sae"] == pytest.approx(0, abs=1e-6)
    assert metrics["model_behavior_preservation"]["kl_div_score"] == pytest.approx(1, abs=1e-5)
    assert metrics["model_performance_preservation"]["ce_loss_score"] == pytest.approx(1, abs=1e-4)
    assert metrics["reconstruction_quality"]["explained_variance"] == pytest.approx(1, abs=1e-5)
    assert metrics["reconstruction_quality"]["cossim"] == pytest.approx(1, abs=1e-5)


def test_hooked_proxy_lm_gives_the_same_metrics_as_hooked_transformer(make_sae, make_store):
    """The embedded model wrapped from Hugging Face (hook names are module paths) and as a
    TransformerLens model: the same SAE weights give the same metrics."""
    from sae_lens.load_model import load_model

    proxy = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2")
    lens = load_model("HookedTransformer", "tiny-pydoc-gpt2")
    d_model = lens.cfg.d_model
    sae_proxy = make_sae("transformer.h.0", d_in=d_model)
    sae_lens_model = make_sae("blocks.0.hook_resid_post", d_in=d_model)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(1, lens.cfg.d_vocab, (2, 12), generator=generator)]
    config = everything(n_batches=1)
    proxy_metrics, proxy_features = run_evals(sae_proxy, make_store(batches), proxy, config)
    lens_metrics, lens_features = run_evals(sae_lens_model, make_store(batches), lens, config)
    assert flatten_groups(proxy_metrics) == pytest.approx(flatten_groups(lens_metrics), rel=1e-4)
    torch.testing.assert_close(
        torch.tensor(proxy_features["feature_density"]),
        torch.tensor(lens_features["feature_density"]),
    )
