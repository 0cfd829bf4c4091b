"""HookedSAETransformer: SAEs spliced into hook points, checked against the SAE formula applied
by hand in a plain HookedTransformer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_lens.analysis.hooked_sae_transformer import (
    HookedSAETransformer,
    get_deep_attr,
    set_deep_attr,
    splice_saes,
)
from sae_lens.sae import SAE, SAEConfig

RESID = "blocks.0.hook_resid_pre"
RESID_1 = "blocks.1.hook_resid_pre"


def make_sae(
    hook_name: str, d_in: int = 16, d_sae: int = 24, seed: int = 0, dtype: str = "float32"
) -> SAE:
    """A standard ReLU SAE with random weights (all parameters, so no latent is trivially 0)."""
    cfg = SAEConfig(
        architecture="standard",
        d_in=d_in,
        d_sae=d_sae,
        activation_fn_str="relu",
        apply_b_dec_to_input=True,
        finetuning_scaling_factor=False,
        context_size=8,
        model_name="tiny",
        hook_name=hook_name,
        hook_layer=int(next(part for part in hook_name.split(".") if part.isdigit())),
        hook_head_index=None,
        prepend_bos=True,
        dataset_path="",
        dataset_trust_remote_code=False,
        normalize_activations="none",
        dtype=dtype,
        device="cpu",
        sae_lens_training_version=None,
    )
    sae = SAE(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return sae


def sae_latents(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """The standard SAE's latents written out from its weights."""
    return torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)


def sae_formula(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    return sae_latents(sae, x) @ sae.W_dec + sae.b_dec


def with_sae_support(
    plain: HookedTransformer, dtype: torch.dtype = torch.float32
) -> tuple[HookedSAETransformer, HookedTransformer]:
    """A HookedSAETransformer and a plain HookedTransformer with `plain`'s weights in `dtype`."""
    cfg = HookedTransformerConfig.from_dict({**plain.cfg.to_dict(), "dtype": dtype})
    state = {name: tensor.to(dtype) for name, tensor in plain.state_dict().items()}
    models = HookedSAETransformer(cfg), HookedTransformer(cfg)
    for model in models:
        model.load_state_dict(state)
        model.eval()
    return models


@pytest.fixture
def pair(tiny_tl_model: HookedTransformer) -> tuple[HookedSAETransformer, HookedTransformer]:
    return with_sae_support(tiny_tl_model)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))


def manual_splice(sae: SAE) -> Any:
    def hook(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return sae_formula(sae, acts)

    return hook


def test_deep_attr_helpers_follow_indices(pair):
    model, _ = pair
    assert get_deep_attr(model, "blocks.1.attn.hook_z") is model.blocks[1].attn.hook_z
    marker = torch.nn.Identity()
    set_deep_attr(model, "blocks.1.attn.hook_z", marker)
    assert model.blocks[1].attn.hook_z is marker


def test_run_with_saes_equals_splicing_the_formula_by_hand(pair, tokens):
    model, plain = pair
    sae = make_sae(RESID)
    with torch.no_grad():
        spliced = model.run_with_saes(tokens, saes=[sae])
        expected = plain.run_with_hooks(tokens, fwd_hooks=[(RESID, manual_splice(sae))])
        clean = plain(tokens)
    torch.testing.assert_close(spliced, expected)
    assert not torch.allclose(spliced, clean, atol=1e-3)


def test_error_term_keeps_logits_bitwise_and_hooks_see_real_reconstruction(pair, tokens):
    model, plain = pair
    sae = make_sae(RESID)
    with torch.no_grad():
        logits, cache = model.run_with_cache_with_saes(tokens, saes=sae, use_error_term=True)
        x = plain.run_with_cache(tokens, names_filter=RESID)[1][RESID]
        assert torch.equal(logits, plain(tokens))
    recons = cache[f"{RESID}.hook_sae_recons"]
    torch.testing.assert_close(recons, sae_formula(sae, x))
    torch.testing.assert_close(cache[f"{RESID}.hook_sae_error"], x - recons)
    torch.testing.assert_close(cache[f"{RESID}.hook_sae_acts_post"], sae_latents(sae, x))
    assert sae.use_error_term is False  # the run's setting was undone


def test_saes_are_removed_after_run_and_original_hook_point_restored(pair, tokens):
    model, _ = pair
    original = model.hook_dict[RESID]
    seen = []
    original.add_perma_hook(lambda acts, hook: seen.append(hook.name))
    sae = make_sae(RESID)
    model.run_with_saes(tokens, saes=[sae])
    assert model.acts_to_saes == {}
    assert model.hook_dict[RESID] is original
    assert sae.hook_sae_acts_post.name == "hook_sae_acts_post"  # its own names again
    model(tokens)
    assert seen == [RESID]  # the hook the original carried still fires (the SAE replaced it)


def test_nested_adds_on_one_hook_are_undone_last_in_first_out(pair, tokens):
    model, _ = pair
    original = model.hook_dict[RESID]
    first, second, third = make_sae(RESID, seed=1), make_sae(RESID, seed=2), make_sae(RESID, seed=3)
    model.add_sae(first)
    model.add_sae(second)
    assert get_deep_attr(model, RESID) is second
    with model.saes(saes=[third]):
        assert get_deep_attr(model, RESID) is third
        assert model.acts_to_saes[RESID] is third
    assert get_deep_attr(model, RESID) is second
    model.reset_saes(RESID)
    assert get_deep_attr(model, RESID) is first
    assert model.acts_to_saes == {RESID: first}
    model.reset_saes(RESID)
    assert get_deep_attr(model, RESID) is original
    assert model.acts_to_saes == {}


def test_reset_saes_without_arguments_removes_everything(pair):
    model, _ = pair
    originals = {name: model.hook_dict[name] for name in (RESID, RESID_1)}
    model.add_sae(make_sae(RESID, seed=1))
    model.add_sae(make_sae(RESID, seed=2))
    model.add_sae(make_sae(RESID_1))
    model.reset_saes()
    assert model.acts_to_saes == {}
    assert all(get_deep_attr(model, name) is hp for name, hp in originals.items())


def test_reset_saes_with_prev_saes_puts_them_back(pair):
    model, _ = pair
    first, second = make_sae(RESID, seed=1), make_sae(RESID, seed=2)
    model.add_sae(second)
    model.reset_saes([RESID], prev_saes=[first])
    assert get_deep_attr(model, RESID) is first
    with pytest.raises(ValueError, match="act_names and prev_saes must have the same length"):
        model.reset_saes([RESID, RESID_1], prev_saes=[first])


def test_saes_are_removed_when_the_block_raises(pair, tokens):
    model, _ = pair
    original = model.hook_dict[RESID]
    sae = make_sae(RESID)
    with pytest.raises(RuntimeError, match="boom"):
        with model.saes(saes=sae, use_error_term=True):
            assert sae.use_error_term is True
            raise RuntimeError("boom")
    assert get_deep_attr(model, RESID) is original
    assert sae.use_error_term is False


def test_reset_saes_end_false_keeps_them(pair, tokens):
    model, _ = pair
    sae = make_sae(RESID)
    model.run_with_saes(tokens, saes=[sae], reset_saes_end=False)
    assert model.acts_to_saes == {RESID: sae}


def test_run_with_hooks_with_saes_lets_hooks_edit_latents(pair, tokens):
    model, plain = pair
    sae = make_sae(RESID)

    def zero_latent_3(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        acts[..., 3] = 0
        return acts

    def by_hand(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        latents = sae_latents(sae, acts)
        latents[..., 3] = 0
        return latents @ sae.W_dec + sae.b_dec

    with torch.no_grad():
        edited = model.run_with_hooks_with_saes(
            tokens, saes=[sae], fwd_hooks=[(f"{RESID}.hook_sae_acts_post", zero_latent_3)]
        )
        expected = plain.run_with_hooks(tokens, fwd_hooks=[(RESID, by_hand)])
    torch.testing.assert_close(edited, expected)
    assert model.acts_to_saes == {}


def test_hook_z_sae_splices_over_all_heads(pair, tokens):
    model, plain = pair
    hook_z = "blocks.0.attn.hook_z"
    sae = make_sae(hook_z, d_in=plain.cfg.n_heads * plain.cfg.d_head)

    def by_hand(z: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return sae_formula(sae, z.flatten(-2)).reshape(z.shape)

    with torch.no_grad():
        spliced = model.run_with_saes(tokens, saes=sae)
        expected = plain.run_with_hooks(tokens, fwd_hooks=[(hook_z, by_hand)])
    torch.testing.assert_close(spliced, expected)


def test_gradient_wrt_latents_matches_finite_differences(tiny_tl_model, tokens):
    """Attribution patching: d logit / d latent, through the error-term splice."""
    model, _ = with_sae_support(tiny_tl_model, dtype=torch.float64)
    sae = make_sae(RESID, dtype="float64")
    name = f"{RESID}.hook_sae_acts_post"
    target = (0, -1, 7)  # logit of token 7 at the last position of prompt 0
    kept: dict[str, torch.Tensor] = {}

    def keep(acts: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
        acts.retain_grad()
        kept["acts"] = acts

    with model.saes(saes=[sae], use_error_term=True):
        with model.hooks(fwd_hooks=[(name, keep)]):
            model(tokens)[target].backward()
        grad = kept["acts"].grad

        def logit_with_latent_nudged(pos: int, latent: int, eps: float) -> float:
            def nudge(acts: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
                acts = acts.clone()
                acts[0, pos, latent] += eps
                return acts

            with torch.no_grad():
                return model.run_with_hooks(tokens, fwd_hooks=[(name, nudge)])[target].item()

        for pos, latent in [(0, 0), (3, 5), (6, 11)]:
            eps = 1e-5
            slope = (
                logit_with_latent_nudged(pos, latent, eps)
                - logit_with_latent_nudged(pos, latent, -eps)
            ) / (2 * eps)
            assert grad[0, pos, latent].item() == pytest.approx(slope, rel=1e-5, abs=1e-8)
    assert grad.abs().sum() > 0


def test_unknown_hook_name_suggests_close_names(pair):
    model, _ = pair
    with pytest.raises(
        ValueError,
        match=r"no hook point 'blocks\.0\.hook_resid_prex'; did you mean 'blocks\.0\.hook_resid_pre'",
    ):
        model.add_sae(make_sae("blocks.0.hook_resid_prex"))
    assert model.acts_to_saes == {}


def test_d_in_mismatch_is_a_clear_error_and_the_model_is_restored(pair, tokens):
    model, _ = pair
    original = model.hook_dict[RESID]
    with pytest.raises(
        ValueError,
        match=r"SAE d_in=12 does not match the activation at 'blocks\.0\.hook_resid_pre', "
        r"whose width is 16",
    ):
        model.run_with_saes(tokens, saes=[make_sae(RESID, d_in=12)])
    assert get_deep_attr(model, RESID) is original


def test_dtype_mismatch_says_how_to_move_the_sae(pair, tokens):
    model, _ = pair
    sae = make_sae(RESID, dtype="float64")
    with pytest.raises(ValueError, match=r"in torch\.float64 but the activation there is on cpu "):
        model.run_with_saes(tokens, saes=[sae])


def test_splice_saes_works_on_any_hooked_root_module(pair, tokens):
    model, plain = pair
    sae = make_sae(RESID)
    with torch.no_grad():
        expected = model.run_with_saes(tokens, saes=[sae])
        with splice_saes(plain, sae):
            spliced = plain(tokens)
        with splice_saes(plain, sae, use_error_term=True):
            with_error_term = plain(tokens)
        clean = plain(tokens)
    torch.testing.assert_close(spliced, expected)
    assert torch.equal(with_error_term, clean)
    assert sae.use_error_term is False
    with pytest.raises(ValueError, match="no hook point 'blocks.9.hook_resid_pre'"):
        with splice_saes(plain, make_sae("blocks.9.hook_resid_pre")):
            pass


def test_splice_saes_on_a_hooked_proxy_lm():
    from sae_lens.load_model import load_model

    proxy = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2")
    hook_name = "transformer.h.0"
    d_model = proxy.model.config.n_embd
    sae = make_sae(hook_name, d_in=d_model)
    tokens = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = proxy(tokens)
        x = proxy.run_with_cache(tokens, names_filter=hook_name)[1][hook_name]
        expected = proxy.run_with_hooks(tokens, fwd_hooks=[(hook_name, manual_splice(sae))])
        with splice_saes(proxy, sae):
            spliced = proxy(tokens)
        with splice_saes(proxy, sae, use_error_term=True):
            with_error_term = proxy(tokens)
    assert x.shape[-1] == d_model
    torch.testing.assert_close(spliced, expected)
    assert not torch.allclose(spliced, clean, atol=1e-3)
    assert torch.equal(with_error_term, clean)


def test_from_pretrained_loads_the_embedded_model(embedded_model):
    model = HookedSAETransformer.from_pretrained("tiny-pydoc-gpt2")
    assert isinstance(model, HookedSAETransformer)
    assert model.acts_to_saes == {}
    tokens = torch.randint(0, embedded_model.cfg.d_vocab, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), embedded_model(tokens))
