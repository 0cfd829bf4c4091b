"""Splicing a transcoder: its prediction from the activation at hook_name replaces the one at
hook_name_out; with the error term the model's output is unchanged bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer

from sae_lens.analysis.hooked_sae_transformer import splice_saes
from sae_lens.sae import SAE
from tests.transcoders.conftest import perturb_, transcoder_cfg_dict

IN_HOOK, OUT_HOOK = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"


def make_transcoder(architecture: str = "standard", seed: int = 0) -> SAE:
    cfg = transcoder_cfg_dict(architecture, d_in=16, d_sae=24, d_out=16)
    sae = SAE.from_dict(cfg)
    perturb_(sae, seed=seed)
    return sae


def prediction_by_hand(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """The standard skip transcoder's prediction written out from its weights."""
    acts = torch.relu(x @ sae.W_enc + sae.b_enc)
    return acts @ sae.W_dec + sae.b_dec + x @ sae.W_skip


def splice_by_hand(sae: SAE) -> list[tuple[str, Any]]:
    seen: dict[str, torch.Tensor] = {}

    def read(acts: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
        seen["x"] = acts

    def write(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return prediction_by_hand(sae, seen["x"])

    return [(IN_HOOK, read), (OUT_HOOK, write)]


def test_the_prediction_replaces_the_output_hooks_activation(pair, tokens) -> None:
    model, plain = pair
    sae = make_transcoder()
    with torch.no_grad():
        spliced = model.run_with_saes(tokens, saes=[sae])
        expected = plain.run_with_hooks(tokens, fwd_hooks=splice_by_hand(sae))
        clean = plain(tokens)
    torch.testing.assert_close(spliced, expected)
    assert not torch.allclose(spliced, clean, atol=1e-3)  # the logits changed
    assert torch.equal(model(tokens), clean)  # and the splice is gone afterwards
    assert model.acts_to_saes == {}


def test_calling_the_transcoder_on_input_activations_predicts_the_output(pair, tokens) -> None:
    _, plain = pair
    sae = make_transcoder()
    with torch.no_grad():
        x = plain.run_with_cache(tokens, names_filter=IN_HOOK)[1][IN_HOOK]
        torch.testing.assert_close(sae(x), prediction_by_hand(sae, x))


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_error_term_keeps_logits_bitwise_and_hooks_see_the_prediction(
    pair,
    tokens,
    architecture: str,
) -> None:
    model, plain = pair
    sae = make_transcoder(architecture)
    with torch.no_grad():
        logits, cache = model.run_with_cache_with_saes(tokens, saes=sae, use_error_term=True)
        _, plain_cache = plain.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
        assert torch.equal(logits, plain(tokens))
        prediction, _ = sae.forward_with_activations(plain_cache[IN_HOOK])
    x = plain_cache[IN_HOOK]
    # hook_sae_recons is the latents' part (acts @ W_dec + b_dec), without the skip path
    torch.testing.assert_close(cache[f"{OUT_HOOK}.hook_sae_recons"], prediction - x @ sae.W_skip)
    torch.testing.assert_close(
        cache[f"{OUT_HOOK}.hook_sae_error"], plain_cache[OUT_HOOK] - prediction
    )
    assert torch.equal(cache[f"{OUT_HOOK}.hook_sae_output"], plain_cache[OUT_HOOK])
    assert sae.use_error_term is False  # restored after the run


def test_editing_latents_with_the_error_term_changes_the_output_by_the_edit(pair, tokens) -> None:
    model, plain = pair
    sae = make_transcoder()

    def ablate(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return torch.zeros_like(acts)

    with torch.no_grad():
        _, plain_cache = plain.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
        with model.saes(saes=[sae], use_error_term=True):
            _, cache = model.run_with_cache(tokens, names_filter=[f"{OUT_HOOK}.hook_sae_output"])
            model.add_hook(f"{OUT_HOOK}.hook_sae_acts_post", ablate)
            _, edited = model.run_with_cache(tokens, names_filter=[f"{OUT_HOOK}.hook_sae_output"])
            model.reset_hooks()
        x = plain_cache[IN_HOOK]
        latent_part = torch.relu(x @ sae.W_enc + sae.b_enc) @ sae.W_dec
    torch.testing.assert_close(
        edited[f"{OUT_HOOK}.hook_sae_output"], cache[f"{OUT_HOOK}.hook_sae_output"] - latent_part
    )


def test_splice_saes_on_any_hooked_root_module(tiny_tl_model: HookedTransformer, tokens) -> None:
    sae = make_transcoder()
    with torch.no_grad():
        expected = tiny_tl_model.run_with_hooks(tokens, fwd_hooks=splice_by_hand(sae))
        with splice_saes(tiny_tl_model, [sae]):
            spliced = tiny_tl_model(tokens)
        with splice_saes(tiny_tl_model, [sae], use_error_term=True):
            kept = tiny_tl_model(tokens)
        clean = tiny_tl_model(tokens)
    torch.testing.assert_close(spliced, expected)
    assert torch.equal(kept, clean)


def test_a_transcoder_and_an_sae_on_its_input_hook_compose(pair, tokens) -> None:
    from tests.analysis.test_hooked_sae_transformer import make_sae, sae_formula

    model, plain = pair
    sae = make_sae(IN_HOOK)
    tc = make_transcoder()
    seen: dict[str, torch.Tensor] = {}

    def sae_then_read(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        seen["x"] = sae_formula(sae, acts)
        return seen["x"]

    def write(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return prediction_by_hand(tc, seen["x"])

    with torch.no_grad():
        spliced = model.run_with_saes(tokens, saes=[sae, tc])
        expected = plain.run_with_hooks(
            tokens, fwd_hooks=[(IN_HOOK, sae_then_read), (OUT_HOOK, write)]
        )
    torch.testing.assert_close(spliced, expected)


def test_a_transcoder_without_its_target_refuses_the_error_term() -> None:
    sae = make_transcoder()
    sae.use_error_term = True
    with pytest.raises(ValueError, match="needs the activation it replaces"):
        sae(torch.randn(3, 16))


def test_a_wrong_input_width_names_the_input_hook(pair, tokens) -> None:
    model, _ = pair
    cfg = transcoder_cfg_dict(d_in=8, d_sae=24, d_out=16)
    with pytest.raises(ValueError, match="blocks.0.ln2.hook_normalized"):
        model.run_with_saes(tokens, saes=[SAE.from_dict(cfg)])


def test_a_wrong_output_width_names_the_output_hook(pair, tokens) -> None:
    model, _ = pair
    cfg = transcoder_cfg_dict(d_in=16, d_sae=24, d_out=12)
    with pytest.raises(
        ValueError, match="d_out=12 does not match the activation at 'blocks.0.hook_mlp_out'"
    ):
        model.run_with_saes(tokens, saes=[SAE.from_dict(cfg)])
