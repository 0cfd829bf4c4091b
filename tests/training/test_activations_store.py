"""ActivationsStore: activations at the hook, batches served from the shuffle buffer,
tokenization on the fly, epochs, normalisation, special tokens, and exact resume."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import torch
from datasets import Dataset, IterableDataset
from safetensors.torch import load, load_file, save
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerFast

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.tokenization_and_batching import concat_and_batch_sequences
from sae_lens.training.activations_store import (
    ActivationsStore,
    EndOfEpoch,
    validate_pretokenized_dataset_tokenizer,
)
from tests.conftest import build_tiny_tl_model

HOOK = "blocks.1.hook_resid_pre"
CTX = 8
D_MODEL = 16


def word_tokenizer(n_words: int = 50) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer: '<bos>'=0 (also EOS and PAD), '<unk>'=1, 'wN'=N."""
    vocab = {"<bos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, n_words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<bos>",
        pad_token="<bos>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    tiny = build_tiny_tl_model(seed=1)
    tiny.tokenizer = word_tokenizer()  # only the store's text path uses it
    return tiny


def token_dataset(n_rows: int, length: int = CTX, seed: int = 0) -> Dataset:
    """Random token rows; the first token differs between rows (up to 48 rows), so every
    token of the dataset has a different activation."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 50, (n_rows, length), generator=gen)
    tokens[:, 0] = 2 + torch.arange(n_rows) % 48
    return Dataset.from_dict({"tokens": tokens.tolist()})


def text_dataset(n_rows: int, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 13, (n_rows,), generator=gen).tolist()
    texts = [
        " ".join(f"w{int(t)}" for t in torch.randint(2, 50, (n,), generator=gen)) for n in lengths
    ]
    return Dataset.from_dict({"text": texts})


def make_store(model: HookedTransformer, dataset: Any, **overrides: Any) -> ActivationsStore:
    kwargs: dict[str, Any] = dict(
        model=model,
        dataset=dataset,
        streaming=False,
        hook_name=HOOK,
        hook_layer=1,
        hook_head_index=None,
        context_size=CTX,
        d_in=D_MODEL,
        n_batches_in_buffer=4,
        total_training_tokens=10**6,
        store_batch_size_prompts=4,
        train_batch_size_tokens=16,
        prepend_bos=False,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
        seed=0,
    )
    kwargs.update(overrides)
    return ActivationsStore(**kwargs)


def direct_activations(
    model: HookedTransformer, tokens: torch.Tensor, hook: str = HOOK
) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return cache[hook]


def match_rows(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the row of `table` [n, d] equal (to float tolerance) to each of `rows`."""
    distances = torch.cdist(rows.double(), table.double())
    best = distances.min(dim=1)
    assert best.values.max() < 1e-4, "a served activation is not the activation of any token"
    return best.indices


# ---------------------------------------------------------------- activations


def test_get_activations_equal_the_models_own_at_the_hook(model: HookedTransformer) -> None:
    store = make_store(model, token_dataset(8), seqpos_slice=(1, None, 2))
    tokens = store.get_batch_tokens()
    acts = store.get_activations(tokens)
    expected = direct_activations(model, tokens)[:, 1::2]
    assert acts.shape == (4, 4, 1, D_MODEL)
    torch.testing.assert_close(acts[:, :, 0], expected)
    assert torch.equal(tokens, torch.tensor(token_dataset(8)["tokens"][:4]))


def test_fused_forward_serves_the_same_batches_as_the_models_own_forward(
    model: HookedTransformer,
) -> None:
    fused = make_store(model, token_dataset(16), hook_name="blocks.1.hook_mlp_out")
    assert fused._fused_reader is not None
    hooked = make_store(model, token_dataset(16), hook_name="blocks.1.hook_mlp_out")
    hooked._fused_reader = None  # the model's own forward
    for _ in range(6):
        torch.testing.assert_close(fused.next_batch(), hooked.next_batch(), atol=1e-5, rtol=1e-5)


def test_hooks_attached_to_the_model_are_honoured(model: HookedTransformer) -> None:
    store = make_store(model, token_dataset(8), hook_name="blocks.1.hook_resid_post")
    tokens = store.get_batch_tokens()
    clean = store.get_activations(tokens)
    model.add_hook("blocks.0.hook_attn_out", lambda act, hook: torch.zeros_like(act))
    try:
        ablated = store.get_activations(tokens)
        expected = direct_activations(model, tokens, "blocks.1.hook_resid_post")
    finally:
        model.reset_hooks()
    torch.testing.assert_close(ablated[:, :, 0], expected)
    assert (ablated - clean).abs().max() > 0.1
    torch.testing.assert_close(store.get_activations(tokens), clean)


def test_head_index_picks_one_head_and_4d_hooks_are_flattened(model: HookedTransformer) -> None:
    hook = "blocks.0.attn.hook_z"  # [batch, pos, n_heads=4, d_head=4]
    tokens = torch.tensor(token_dataset(4)["tokens"])
    z = direct_activations(model, tokens, hook)
    one_head = make_store(
        model, token_dataset(4), hook_name=hook, hook_layer=0, hook_head_index=2, d_in=4
    )
    torch.testing.assert_close(one_head.get_activations(tokens)[:, :, 0], z[:, :, 2])
    all_heads = make_store(model, token_dataset(4), hook_name=hook, hook_layer=0)
    torch.testing.assert_close(all_heads.get_activations(tokens)[:, :, 0], z.reshape(4, CTX, 16))


def test_served_batches_are_real_token_activations_mixed_across_prompts(
    model: HookedTransformer,
) -> None:
    dataset = token_dataset(40)
    store = make_store(model, dataset)
    batches = [store.next_batch() for _ in range(8)]
    assert all(b.shape == (16, 1, D_MODEL) for b in batches)
    table = direct_activations(model, torch.tensor(dataset["tokens"])).reshape(-1, D_MODEL)
    sources = [match_rows(b[:, 0], table) for b in batches]
    served = torch.cat(sources)
    assert served.unique().numel() == served.numel(), "a token was served twice in one pass"
    prompts_per_batch = [(s // CTX).unique().numel() for s in sources]
    assert min(prompts_per_batch) >= 4, prompts_per_batch


def test_batches_are_normal_tensors_usable_in_autograd(model: HookedTransformer) -> None:
    batch = make_store(model, token_dataset(16)).next_batch()
    weight = torch.ones(D_MODEL, requires_grad=True)
    (batch[:, 0] * weight).sum().backward()
    torch.testing.assert_close(weight.grad, batch[:, 0].sum(0))


def test_same_seed_gives_the_same_batches_and_another_seed_does_not(
    model: HookedTransformer,
) -> None:
    first = [make_store(model, token_dataset(32), seed=5).next_batch() for _ in range(1)][0]
    again = make_store(model, token_dataset(32), seed=5).next_batch()
    other = make_store(model, token_dataset(32), seed=6).next_batch()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_get_buffer_returns_token_ids_aligned_with_activations(model: HookedTransformer) -> None:
    dataset = token_dataset(16)
    store = make_store(model, dataset)
    acts, token_ids = store.get_buffer(2)
    assert acts.shape == (2 * 4 * CTX, 1, D_MODEL) and token_ids is not None
    all_tokens = torch.tensor(dataset["tokens"])
    table = direct_activations(model, all_tokens).reshape(-1, D_MODEL)
    assert torch.equal(all_tokens.reshape(-1)[match_rows(acts[:, 0], table)], token_ids)


# ---------------------------------------------------------------- text datasets and epochs


def test_text_is_tokenized_and_concatenated_with_bos_like_5_6(model: HookedTransformer) -> None:
    dataset = text_dataset(40)
    store = make_store(model, dataset, prepend_bos=True)
    got = store.get_batch_tokens(6)
    tokenizer = model.tokenizer
    token_rows = (torch.tensor(tokenizer(t)["input_ids"]) for t in dataset["text"])
    expected = list(concat_and_batch_sequences(token_rows, CTX, 0, None, 0))[:6]
    assert torch.equal(got, torch.stack(expected))


def test_end_of_dataset_raises_once_then_starts_the_next_epoch(model: HookedTransformer) -> None:
    dataset = token_dataset(6)
    store = make_store(model, dataset)
    first = store.get_batch_tokens(4, raise_at_epoch_end=True)
    with pytest.raises(EndOfEpoch, match="after 6 rows; starting epoch 1"):
        store.get_batch_tokens(4, raise_at_epoch_end=True)
    assert isinstance(EndOfEpoch(), StopIteration) and store.epoch == 1
    assert torch.equal(store.get_batch_tokens(4), first)
    wrapped = store.get_batch_tokens(4)  # rows 4, 5 then 0, 1 of the next epoch
    assert torch.equal(wrapped, torch.tensor(dataset["tokens"])[[4, 5, 0, 1]])
    assert store.epoch == 2


def test_training_keeps_going_over_epochs_of_a_small_dataset(model: HookedTransformer) -> None:
    store = make_store(model, token_dataset(10))
    with pytest.warns(UserWarning, match="starting a new epoch"):
        batches = [store.next_batch() for _ in range(30)]
    assert store.epoch >= 2 and all(b.shape == (16, 1, D_MODEL) for b in batches)


def test_empty_or_too_short_datasets_fail_clearly(model: HookedTransformer) -> None:
    with pytest.raises(ValueError, match="the dataset is empty"):
        make_store(model, Dataset.from_dict({"tokens": []}))
    short = make_store(model, Dataset.from_dict({"text": ["w2 w3", "w4"]}))
    with pytest.raises(ValueError, match="yields no sequence of 8 tokens"):
        short.next_batch()


# ---------------------------------------------------------------- construction errors


def test_bad_configuration_is_refused_before_any_work(model: HookedTransformer) -> None:
    with pytest.raises(
        ValueError, match="pretokenized dataset rows have 4 tokens, fewer than context_size 8"
    ):
        make_store(model, token_dataset(4, length=4))
    with pytest.raises(ValueError, match="context_size 64 exceeds the model's context length 32"):
        make_store(model, token_dataset(4, length=64), context_size=64)
    with pytest.raises(ValueError, match="hook_name 'blocks.7.hook_resid_pre' is not a hook point"):
        make_store(model, token_dataset(4), hook_name="blocks.7.hook_resid_pre")
    with pytest.raises(ValueError, match="n_batches_in_buffer must be at least 2"):
        make_store(model, token_dataset(4), n_batches_in_buffer=1)
    no_tokenizer = build_tiny_tl_model()
    with pytest.raises(ValueError, match="holds text .* but the model has no tokenizer"):
        make_store(no_tokenizer, text_dataset(4))


def test_a_hook_width_mismatch_fails_on_first_activation(model: HookedTransformer) -> None:
    tokens = torch.tensor(token_dataset(2)["tokens"])
    with pytest.raises(
        ValueError, match=r"SAE d_in=12 does not match the activation at .*, whose width is 16"
    ):
        make_store(model, token_dataset(4), d_in=12).get_activations(tokens)


def test_a_hook_layer_before_the_hook_is_refused_when_the_store_is_built(
    model: HookedTransformer,
) -> None:
    with pytest.raises(ValueError, match=r"hook_layer=0 but hook .* is in layer 1: .*hook_layer=1"):
        make_store(model, token_dataset(4), hook_layer=0)


def test_from_config_checks_the_train_batch_against_the_buffer(model: HookedTransformer) -> None:
    cfg = LanguageModelSAERunnerConfig(
        hook_name=HOOK,
        hook_layer=1,
        d_in=D_MODEL,
        context_size=CTX,
        store_batch_size_prompts=2,
        n_batches_in_buffer=4,
        train_batch_size_tokens=64,
        log_to_wandb=False,
        verbose=False,
    )
    with pytest.raises(
        ValueError, match=r"train_batch_size_tokens \(64\) must be between 1 and .* \(32 = "
    ):
        ActivationsStore.from_config(model, cfg, override_dataset=token_dataset(8))


def test_pretokenized_dataset_with_another_tokenizer_is_refused(
    model: HookedTransformer, tmp_path: Any
) -> None:
    other = word_tokenizer(n_words=30)
    other.save_pretrained(str(tmp_path / "other_tok"))
    token_dataset(8).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "sae_lens.json").write_text(
        json.dumps({"tokenizer_name": str(tmp_path / "other_tok")})
    )
    with pytest.raises(
        ValueError, match="was tokenized with .*other_tok', whose vocabulary differs"
    ):
        make_store(model, str(tmp_path / "ds"))
    word_tokenizer().save_pretrained(str(tmp_path / "same_tok"))
    (tmp_path / "ds" / "sae_lens.json").write_text(
        json.dumps({"tokenizer_name": str(tmp_path / "same_tok")})
    )
    validate_pretokenized_dataset_tokenizer(str(tmp_path / "ds"), model.tokenizer)
    assert make_store(model, str(tmp_path / "ds")).get_batch_tokens().shape == (4, CTX)


# ---------------------------------------------------------------- special tokens and normalisation


def test_excluded_special_tokens_are_never_served(model: HookedTransformer) -> None:
    dataset = text_dataset(60)
    cfg = LanguageModelSAERunnerConfig(
        hook_name=HOOK,
        hook_layer=1,
        d_in=D_MODEL,
        context_size=CTX,
        store_batch_size_prompts=4,
        n_batches_in_buffer=4,
        train_batch_size_tokens=16,
        exclude_special_tokens=True,
        prepend_bos=True,
        log_to_wandb=False,
        verbose=False,
    )
    store = ActivationsStore.from_config(model, cfg, override_dataset=dataset)
    assert store.exclude_special_tokens is not None
    assert store.exclude_special_tokens.tolist() == [0, 1]
    batches = torch.cat([store.next_batch()[:, 0] for _ in range(4)])
    reference = make_store(model, dataset, prepend_bos=True)
    tokens = reference.get_batch_tokens(32)
    table = direct_activations(model, tokens).reshape(-1, D_MODEL)
    assert (tokens == 0).sum() > 10
    assert not torch.isin(
        tokens.reshape(-1)[match_rows(batches, table)], torch.tensor([0, 1])
    ).any()


def test_expected_average_norm_scaling(model: HookedTransformer) -> None:
    dataset = token_dataset(64)
    store = make_store(model, dataset, normalize_activations="expected_average_only_in")
    with pytest.raises(ValueError, match="estimated_norm_scaling_factor is not set"):
        store.next_batch()
    store.set_norm_scaling_factor_if_needed(n_batches_for_norm_estimate=3)
    twin = make_store(model, dataset)  # same seed, no normalisation: the same raw batches
    raw = [twin.next_batch() for _ in range(4)]
    mean_norm = torch.stack([b.norm(dim=-1).mean() for b in raw[:3]]).mean().item()
    assert store.estimated_norm_scaling_factor == pytest.approx(D_MODEL**0.5 / mean_norm, rel=1e-6)
    scaled = store.next_batch()
    torch.testing.assert_close(scaled, raw[3] * store.estimated_norm_scaling_factor)
    torch.testing.assert_close(store.unscale(scaled), raw[3])


def test_state_dict_and_save(model: HookedTransformer, tmp_path: Any) -> None:
    store = make_store(model, token_dataset(32))
    store.next_batch()
    store.save(str(tmp_path / "store.safetensors"))
    saved = load_file(str(tmp_path / "store.safetensors"))
    assert int(saved["n_dataset_processed"]) == store.n_dataset_processed == 16
    torch.testing.assert_close(saved["storage_buffer_activations"], store.storage_buffer[:, 0])


# ---------------------------------------------------------------- exact resume


def streamed(dataset: Dataset) -> IterableDataset:
    return dataset.to_iterable_dataset()


RESUME_CASES = {
    "pretokenized": lambda: (token_dataset(40), {}),
    "pretokenized-streaming-over-epochs": lambda: (streamed(token_dataset(14)), {}),
    "text-concatenated": lambda: (text_dataset(50), {"prepend_bos": True}),
    "text-streaming-with-exclusion": lambda: (
        streamed(text_dataset(50)),
        {"prepend_bos": True, "exclude_special_tokens": [0]},
    ),
    "normalised": lambda: (
        token_dataset(40),
        {"normalize_activations": "expected_average_only_in"},
    ),
}


def via_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def via_safetensors_and_json(state: dict[str, Any]) -> dict[str, Any]:
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    rest = json.loads(json.dumps({k: v for k, v in state.items() if k not in tensors}))
    return {**rest, **load(save(tensors))}


@pytest.mark.filterwarnings("ignore:All samples in the training dataset have been used")
@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resumed_store_serves_exactly_the_uninterrupted_batches(
    model: HookedTransformer, case: str
) -> None:
    def build() -> ActivationsStore:
        dataset, overrides = RESUME_CASES[case]()
        store = make_store(model, dataset, **overrides)
        if store.normalize_activations == "expected_average_only_in":
            store.set_norm_scaling_factor_if_needed(n_batches_for_norm_estimate=2)
        return store

    n_total, n_before = 14, 5
    uninterrupted = build()
    expected = [uninterrupted.next_batch() for _ in range(n_total)]

    interrupted = build()
    for _ in range(n_before):
        interrupted.next_batch()
    state = interrupted.checkpoint_state()
    del interrupted

    for transport in (via_torch_save, via_safetensors_and_json):
        resumed = build()
        resumed.load_checkpoint_state(transport(state))
        rest = [resumed.next_batch() for _ in range(n_total - n_before)]
        for i, (got, want) in enumerate(zip(rest, expected[n_before:], strict=True)):
            assert torch.equal(got, want), f"batch {n_before + i} differs after resume"
        assert resumed.epoch == uninterrupted.epoch
    if case == "pretokenized-streaming-over-epochs":
        assert uninterrupted.epoch >= 1


def test_resume_keeps_an_input_dataset_shuffle(model: HookedTransformer) -> None:
    original = make_store(model, token_dataset(40))
    original.shuffle_input_dataset(seed=3)
    unshuffled_first = make_store(model, token_dataset(40)).get_batch_tokens()
    first = original.get_batch_tokens()
    assert not torch.equal(first, unshuffled_first)
    state = original.checkpoint_state()
    expected = original.get_batch_tokens()
    resumed = make_store(model, token_dataset(40))
    resumed.load_checkpoint_state(state)
    assert torch.equal(resumed.get_batch_tokens(), expected)


def test_checkpoint_of_another_configuration_is_refused(model: HookedTransformer) -> None:
    state = make_store(model, token_dataset(8)).checkpoint_state()
    other = make_store(model, token_dataset(8), train_batch_size_tokens=32)
    with pytest.raises(ValueError, match="train_batch_size_tokens: saved 16 vs now 32"):
        other.load_checkpoint_state(state)


# ---------------------------------------------------------------- other constructors and options


def test_from_sae_reads_hook_context_and_dataset_from_the_sae_config(
    model: HookedTransformer,
) -> None:
    from sae_lens.sae import SAE

    sae = SAE.from_dict(
        dict(
            architecture="standard",
            d_in=4,
            d_sae=8,
            activation_fn_str="relu",
            apply_b_dec_to_input=True,
            finetuning_scaling_factor=False,
            context_size=CTX,
            model_name="tiny",
            hook_name="blocks.0.attn.hook_z",
            hook_layer=0,
            hook_head_index=1,
            prepend_bos=False,
            dataset_path="unused",
            dataset_trust_remote_code=False,
            normalize_activations="none",
            dtype="float32",
            device="cpu",
            sae_lens_training_version=None,
            seqpos_slice=(2, None),
        )
    )
    store = ActivationsStore.from_sae(
        model, sae, dataset=token_dataset(8), store_batch_size_prompts=2
    )
    tokens = store.get_batch_tokens()
    assert tokens.shape == (2, CTX)
    z = direct_activations(model, tokens, "blocks.0.attn.hook_z")
    torch.testing.assert_close(store.get_activations(tokens)[:, :, 0], z[:, 2:, 1])


def test_dtype_and_autocast_of_the_model_run(model: HookedTransformer) -> None:
    tokens = torch.tensor(token_dataset(2)["tokens"])
    expected = direct_activations(model, tokens)
    double = make_store(model, token_dataset(4), dtype="float64").get_activations(tokens)
    assert double.dtype == torch.float64
    # the store's fused forward and run_with_cache round differently in float32
    torch.testing.assert_close(double[:, :, 0], expected.double(), atol=1e-5, rtol=1e-5)
    autocast = make_store(model, token_dataset(4), autocast_lm=True).get_activations(tokens)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast[:, :, 0], expected, atol=0.1, rtol=0.05)


def test_reset_input_dataset_reads_from_the_first_row_again(model: HookedTransformer) -> None:
    store = make_store(model, token_dataset(12))
    first = store.get_batch_tokens()
    store.get_batch_tokens()
    store.reset_input_dataset()
    assert torch.equal(store.get_batch_tokens(), first)


def test_compile_model_forward_compiles_the_pass_that_serves_activations(
    model: HookedTransformer,
) -> None:
    from torch._dynamo.utils import counters

    eager = make_store(model, token_dataset(8), hook_name="blocks.1.hook_resid_post")
    compiled = make_store(model, token_dataset(8), hook_name="blocks.1.hook_resid_post")
    compiled.compile_model_forward()
    tokens = eager.get_batch_tokens()
    frames_before = counters["frames"]["ok"]
    acts = compiled.get_activations(tokens)
    assert counters["frames"]["ok"] > frames_before  # torch.compile really ran
    torch.testing.assert_close(acts, eager.get_activations(tokens), atol=1e-5, rtol=1e-5)


def test_compile_model_forward_is_refused_where_the_fused_pass_cannot_serve() -> None:
    unserved = build_tiny_tl_model(use_attn_result=True)
    store = make_store(unserved, token_dataset(8), hook_name="blocks.1.hook_resid_post")
    with pytest.raises(
        ValueError, match=r"compile_llm needs the fused forward .*use_attn_result=True"
    ):
        store.compile_model_forward()


def test_a_raw_pytorch_hook_added_after_the_store_was_built_is_honoured(
    model: HookedTransformer,
) -> None:
    store = make_store(model, token_dataset(8), hook_name="blocks.1.hook_resid_post")
    tokens = store.get_batch_tokens()
    clean = store.get_activations(tokens)
    handle = model.blocks[0].mlp.register_forward_hook(
        lambda module, args, output: torch.zeros_like(output)
    )
    try:
        patched = store.get_activations(tokens)
        expected = direct_activations(model, tokens, "blocks.1.hook_resid_post")
    finally:
        handle.remove()
    torch.testing.assert_close(patched[:, :, 0], expected)
    assert (patched - clean).abs().max() > 0.1
    torch.testing.assert_close(store.get_activations(tokens), clean)


def test_fused_forward_false_always_runs_the_models_own_forward(
    model: HookedTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens.fused_forward import FusedHookReader

    def refuse(*args: object) -> None:
        raise AssertionError("the fused pass ran")

    monkeypatch.setattr(FusedHookReader, "__call__", refuse)
    store = make_store(model, token_dataset(8), fused_forward=False)
    tokens = store.get_batch_tokens()
    torch.testing.assert_close(
        store.get_activations(tokens)[:, :, 0], direct_activations(model, tokens)
    )
    with pytest.raises(ValueError, match=r"compile_llm needs .*\(fused_forward=False\)"):
        store.compile_model_forward()
