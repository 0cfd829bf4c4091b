"""load_model and HookedProxyLM on the embedded model and on small config-built models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from sae_lens.embedded import load_embedded_hf_model, load_embedded_tokenizer
from sae_lens.load_model import HookedProxyLM, get_hook_fn, load_model
from sae_lens.training.activations_store import ActivationsStore


@pytest.fixture(scope="module")
def hf_model() -> GPT2LMHeadModel:
    return load_embedded_hf_model()


@pytest.fixture(scope="module")
def proxy() -> HookedProxyLM:
    model = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2")
    assert isinstance(model, HookedProxyLM)
    return model


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    tokenizer = load_embedded_tokenizer()
    texts = ["def add(a, b):\n    return a + b", "The os module provides a portable way"]
    rows = [[0, *tokenizer(t)["input_ids"]][:8] for t in texts]
    return torch.tensor(rows)


def test_proxy_hooks_equal_the_hf_models_hidden_states(
    proxy: HookedProxyLM, hf_model: GPT2LMHeadModel, tokens: torch.Tensor
) -> None:
    with torch.no_grad():
        hidden = hf_model(tokens, output_hidden_states=True).hidden_states
        logits, cache = proxy.run_with_cache(
            tokens, names_filter=["transformer.h.0", "transformer.ln_f"]
        )
    torch.testing.assert_close(cache["transformer.h.0"], hidden[1])
    torch.testing.assert_close(
        cache["transformer.ln_f"], hidden[2]
    )  # HF applies ln_f to the last one
    torch.testing.assert_close(logits, hf_model(tokens).logits)


def test_stop_at_layer_returns_the_block_output_and_skips_later_blocks(
    proxy: HookedProxyLM, hf_model: GPT2LMHeadModel, tokens: torch.Tensor
) -> None:
    later_block_calls: list[int] = []
    handle = proxy.model.transformer.h[1].register_forward_hook(
        lambda *_: later_block_calls.append(1)
    )
    try:
        with torch.no_grad():
            out, cache = proxy.run_with_cache(
                tokens, names_filter="transformer.h.0", stop_at_layer=1
            )
            hidden = hf_model(tokens, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    assert later_block_calls == []
    torch.testing.assert_close(out, hidden[1])
    torch.testing.assert_close(cache["transformer.h.0"], hidden[1])
    with pytest.raises(
        ValueError, match="stop_at_layer 3 is out of range for a model with 2 blocks"
    ):
        proxy(tokens, stop_at_layer=3)


def test_proxy_hooks_can_replace_activations(proxy: HookedProxyLM, tokens: torch.Tensor) -> None:
    def zero(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        return torch.zeros_like(activation)

    with torch.no_grad():
        patched = proxy.run_with_hooks(tokens, fwd_hooks=[("transformer.h.1", zero)])
        expected = proxy.model.lm_head(
            proxy.model.transformer.ln_f(torch.zeros(*tokens.shape, 128))
        )
    torch.testing.assert_close(patched, expected)


def test_proxy_loss_and_return_types(proxy: HookedProxyLM, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        logits, loss = proxy(tokens, return_type="both")
        per_token = proxy(tokens, return_type="loss", loss_per_token=True)
        assert proxy(tokens, return_type=None) is None
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    ).view(2, -1)
    torch.testing.assert_close(per_token, expected)
    torch.testing.assert_close(loss, expected.mean())
    with pytest.raises(ValueError, match="return_type must be 'logits', 'loss', 'both' or None"):
        proxy(tokens, return_type="probs")  # type: ignore[arg-type]


def test_proxy_to_tokens_behaves_like_transformer_lens(proxy: HookedProxyLM) -> None:
    ids = load_embedded_tokenizer()("import os")["input_ids"]
    assert proxy.to_tokens("import os").tolist() == [[0, *ids]]
    assert proxy.to_tokens("import os", prepend_bos=False).tolist() == [ids]
    right = proxy.to_tokens(["import os", "x"], prepend_bos=False)
    left = proxy.to_tokens(["import os", "x"], prepend_bos=False, padding_side="left")
    x_ids = load_embedded_tokenizer()("x")["input_ids"]
    pad = [0] * (len(ids) - len(x_ids))
    assert right[1].tolist() == x_ids + pad and left[1].tolist() == pad + x_ids
    assert proxy.to_tokens("a " * 400).shape == (1, 256)
    assert proxy.to_tokens("a " * 400, truncate=False).shape[1] > 256


def test_embedded_hooked_transformer_loads_unprocessed(
    hf_model: GPT2LMHeadModel, tokens: torch.Tensor
) -> None:
    model = load_model("HookedTransformer", "tiny-pydoc-gpt2", device="cpu")
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
        hidden = hf_model(tokens, output_hidden_states=True).hidden_states
        expected = hf_model(tokens).logits
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], hidden[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)  # no centring: same logits


def test_local_hf_folder_loads_as_both_model_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=4096, n_positions=64, n_ctx=64)
    reference = GPT2LMHeadModel(config).eval()
    reference.save_pretrained(str(tmp_path))
    load_embedded_tokenizer().save_pretrained(str(tmp_path))
    tokens = torch.randint(0, 4096, (2, 10))
    with torch.no_grad():
        expected = reference(tokens).logits
        for class_name in ("HookedTransformer", "AutoModelForCausalLM"):
            model = load_model(class_name, str(tmp_path), device="cpu")
            torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)


def test_unsupported_model_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="HookedMamba. is not supported: it needs mamba_lens"):
        load_model("HookedMamba", "state-spaces/mamba-130m")
    with pytest.raises(
        ValueError,
        match=r"unknown model_class_name 'GPT'; supported: \['HookedTransformer', 'AutoModelForCausalLM'\]",
    ):
        load_model("GPT", "gpt2")


def test_get_hook_fn_hooks_the_first_element_of_tuple_outputs() -> None:
    from transformer_lens.hook_points import HookPoint

    point = HookPoint()
    point.add_hook(lambda act, hook: act * 2)  # noqa: ARG005
    hook_fn = get_hook_fn(point)
    out = hook_fn(None, (), (torch.ones(2), "extra"))
    assert torch.equal(out[0], torch.full((2,), 2.0)) and out[1] == "extra"
    assert hook_fn(None, (), {"not": "a tensor"}) == {"not": "a tensor"}


def test_activations_store_reads_a_proxy_model(
    proxy: HookedProxyLM, hf_model: GPT2LMHeadModel
) -> None:
    texts = [
        "import sys\nprint(sys.argv)",
        "class A:\n    pass",
        "for i in range(3):\n    x += i",
    ] * 4
    store = ActivationsStore(
        model=proxy,
        dataset=Dataset.from_dict({"text": texts}),
        streaming=False,
        hook_name="transformer.h.0",
        hook_layer=0,
        hook_head_index=None,
        context_size=16,
        d_in=128,
        n_batches_in_buffer=2,
        total_training_tokens=1000,
        store_batch_size_prompts=2,
        train_batch_size_tokens=16,
        prepend_bos=True,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
    )
    batch_tokens = store.get_batch_tokens()
    assert (batch_tokens[:, 0] == 0).all()
    with torch.no_grad():
        hidden = hf_model(batch_tokens, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(store.get_activations(batch_tokens)[:, :, 0], hidden)
