"""Splicing a CLT into a model: with the error term the model's output is exactly its own;
without it every layer's MLP output is the CLT's prediction, from latents chosen layer by
layer on the patched stream (per-layer TopK) or on a clean pass's inputs (global TopK)."""

from __future__ import annotations

import pytest
import torch

from sae_lens.analysis.clt_splice import splice_clt
from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer, splice_saes
from sae_lens.sae import SAE
from tests.clt.conftest import IN_PATTERN, OUT_PATTERN, direct_forward, perturbed_clt


def _clt(scope: str = "layer") -> SAE:
    return perturbed_clt(SAE, scope=scope)  # type: ignore[arg-type]


def _hook(pattern: str, layer: int) -> str:
    return pattern.replace("*", str(layer))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_with_the_error_term_the_output_is_unchanged_and_gradients_reach_the_clt(
    pair: tuple[HookedSAETransformer, object], tokens: torch.Tensor, scope: str
) -> None:
    model, _ = pair
    clt = _clt(scope)
    clean = model(tokens)
    with splice_clt(model, clt, use_error_term=True) as splice:
        spliced = model(tokens)
    assert torch.equal(spliced, clean)
    assert splice.feature_acts is not None and splice.feature_acts.shape == (2, 7, 24)
    spliced.sum().backward()
    assert clt.W_dec.grad is not None and clt.W_dec.grad.abs().sum() > 0
    assert torch.equal(model(tokens), clean)  # the hooks are gone


def test_per_layer_topk_replaces_each_layer_from_the_patched_stream(
    pair: tuple[HookedSAETransformer, object], tokens: torch.Tensor
) -> None:
    model, _ = pair
    clt = _clt("layer")
    with splice_clt(model, clt):
        _, cache = model.run_with_cache(tokens)
    # the inputs the spliced model saw (layer 1's reflects the replaced layer-0 MLP)
    x = torch.cat([cache[_hook(IN_PATTERN, i)] for i in (0, 1)], dim=-1).flatten(0, 1)
    _, expected = direct_forward(clt, x, "layer")
    for layer in (0, 1):
        got = cache[_hook(OUT_PATTERN, layer)].flatten(0, 1)
        torch.testing.assert_close(got, expected[:, layer * 16 : (layer + 1) * 16])
    # ... and that differs from the clean layer-1 input
    _, clean_cache = model.run_with_cache(tokens)
    assert not torch.allclose(cache[_hook(IN_PATTERN, 1)], clean_cache[_hook(IN_PATTERN, 1)])


def test_global_topk_chooses_latents_on_a_clean_pass(
    pair: tuple[HookedSAETransformer, object], tokens: torch.Tensor
) -> None:
    model, _ = pair
    clt = _clt("global")
    _, clean_cache = model.run_with_cache(tokens)
    x = torch.cat([clean_cache[_hook(IN_PATTERN, i)] for i in (0, 1)], dim=-1).flatten(0, 1)
    latents, expected = direct_forward(clt, x, "global")
    with splice_clt(model, clt) as splice:
        _, cache = model.run_with_cache(tokens)
    assert splice.feature_acts is not None
    torch.testing.assert_close(splice.feature_acts.flatten(0, 1), latents)
    for layer in (0, 1):
        got = cache[_hook(OUT_PATTERN, layer)].flatten(0, 1)
        torch.testing.assert_close(got, expected[:, layer * 16 : (layer + 1) * 16])


def test_hooked_sae_transformer_adds_and_removes_a_clt(
    pair: tuple[HookedSAETransformer, object], tokens: torch.Tensor
) -> None:
    model, _ = pair
    clt = _clt()
    clean = model(tokens)
    with splice_clt(model, clt):
        replaced = model(tokens)
    assert torch.equal(model.run_with_saes(tokens, saes=[clt]), replaced)
    assert model.acts_to_saes == {}
    model.add_sae(clt, use_error_term=True)
    assert model.acts_to_saes == {OUT_PATTERN: clt}
    assert torch.equal(model(tokens), clean)
    with pytest.raises(ValueError, match="already spliced"):
        model.add_sae(clt)
    model.reset_saes([OUT_PATTERN])
    assert model.acts_to_saes == {} and torch.equal(model(tokens), clean)
    model.add_sae(clt)
    model.reset_saes()
    assert torch.equal(model(tokens), clean)
    with splice_saes(model, [clt]):
        assert torch.equal(model(tokens), replaced)


def test_a_clt_for_hooks_the_model_lacks_is_refused(
    pair: tuple[HookedSAETransformer, object],
) -> None:
    model, _ = pair
    clt = perturbed_clt(SAE, hook_name="blocks.*.ln3.hook_normalized")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ln3"), splice_clt(model, clt):
        pass
