"""A transcoder's activation store: one model forward reads both hooks, and each served row
holds a token's input and target side by side, however the buffer shuffles them."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import load, save
from transformer_lens import HookedTransformer

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.errors import HookNameError
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.shared_forward import SharedForwardStore
from sae_lens.training.transcoder_rows import OutputHook
from tests.training.test_activations_store import (
    CTX,
    D_MODEL,
    make_store,
    match_rows,
    token_dataset,
)

IN_HOOK, OUT_HOOK = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


def transcoder_store(model: HookedTransformer, **overrides: Any) -> ActivationsStore:
    out = OutputHook(overrides.pop("hook_name_out", OUT_HOOK), 1, overrides.pop("d_out", D_MODEL))
    return make_store(model, token_dataset(16), hook_name=IN_HOOK, output_hook=out, **overrides)


def direct_pairs(model: HookedTransformer, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's (input, target) [n, d] from the model's own forward."""
    tokens = torch.tensor(token_dataset(16)["tokens"][:n_rows])
    _, cache = model.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
    return cache[IN_HOOK].reshape(-1, D_MODEL), cache[OUT_HOOK].reshape(-1, D_MODEL)


@pytest.mark.filterwarnings("ignore:All samples in the training dataset have been used")
def test_served_rows_pair_each_tokens_input_with_its_target(model: HookedTransformer) -> None:
    store = transcoder_store(model)
    inputs, targets = direct_pairs(model, 16)
    for _ in range(6):
        rows = store.next_batch()[:, 0]
        assert rows.shape == (16, 2 * D_MODEL)
        got_in, got_out = store.split_rows(rows)
        index = match_rows(got_in, inputs)  # which token each row is
        torch.testing.assert_close(got_out, targets[index], rtol=1e-5, atol=1e-5)
    assert len(set(index.tolist())) > 1  # the rows are shuffled tokens, not one token


def test_the_hooked_forward_serves_what_the_fused_one_does(model: HookedTransformer) -> None:
    fused = transcoder_store(model)
    hooked = transcoder_store(model, fused_forward=False)
    assert fused._multi_reader is not None and hooked._multi_reader is None
    for _ in range(4):
        torch.testing.assert_close(fused.next_batch(), hooked.next_batch(), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:All samples in the training dataset have been used")
def test_resumed_transcoder_store_serves_exactly_the_uninterrupted_rows(
    model: HookedTransformer,
) -> None:
    expected = transcoder_store(model)
    batches = [expected.next_batch() for _ in range(7)]
    interrupted = transcoder_store(model)
    for _ in range(3):
        interrupted.next_batch()
    state = interrupted.checkpoint_state()
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    state = {**state, **load(save(tensors))}
    resumed = transcoder_store(model)
    resumed.load_checkpoint_state(state)
    for want in batches[3:]:
        assert torch.equal(resumed.next_batch(), want)
    with pytest.raises(ValueError, match="d_out"):
        transcoder_store(
            model, d_out=8, hook_name_out="blocks.1.mlp.hook_post"
        ).load_checkpoint_state(state)


def _run_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    fields = dict(
        model_name="tiny",
        hook_name=IN_HOOK,
        hook_layer=1,
        hook_name_out=OUT_HOOK,
        d_in=D_MODEL,
        context_size=CTX,
        store_batch_size_prompts=4,
        n_batches_in_buffer=4,
        train_batch_size_tokens=16,
        training_tokens=160,
        log_to_wandb=False,
        verbose=False,
        checkpoint_path="unused",
    )
    return LanguageModelSAERunnerConfig(**{**fields, **kwargs})


def test_from_config_reads_d_out_from_the_output_hook(model: HookedTransformer) -> None:
    cfg = _run_cfg(hook_name_out="blocks.1.mlp.hook_post")
    store = ActivationsStore.from_config(model, cfg, override_dataset=token_dataset(16))
    assert cfg.d_out == store.output_hook.width == 32  # the tiny model's d_mlp
    assert store.next_batch().shape == (16, 1, D_MODEL + 32)


def test_an_output_hook_the_model_lacks_is_named(model: HookedTransformer) -> None:
    cfg = _run_cfg(hook_name_out="blocks.1.hook_mlp_outt")
    with pytest.raises(HookNameError, match="hook_name_out 'blocks.1.hook_mlp_outt' is not a hook"):
        ActivationsStore.from_config(model, cfg, override_dataset=token_dataset(16))


def test_a_d_out_that_differs_from_the_hook_is_refused(model: HookedTransformer) -> None:
    store = transcoder_store(model, d_out=12)
    with pytest.raises(ValueError, match="d_out=12 does not match the activation at hook_name_out"):
        store.next_batch()


def test_a_shared_forward_serves_a_transcoder_and_an_sae_as_single_stores_would(
    model: HookedTransformer,
) -> None:
    cfgs = [
        _run_cfg(d_out=D_MODEL),
        _run_cfg(hook_name="blocks.0.hook_resid_post", hook_layer=0, hook_name_out=None),
    ]
    shared = SharedForwardStore.group(model, cfgs, override_dataset=token_dataset(16))
    singles = [
        ActivationsStore.from_config(model, c, override_dataset=token_dataset(16)) for c in cfgs
    ]
    for _ in range(4):
        for group_store, single in zip(shared, singles, strict=True):
            torch.testing.assert_close(group_store.next_batch(), single.next_batch())


def test_compile_llm_is_refused_for_a_transcoder_before_any_work(model: HookedTransformer) -> None:
    with pytest.raises(ValueError, match="a transcoder's two hooks are not compiled yet"):
        transcoder_store(model).compile_model_forward()
