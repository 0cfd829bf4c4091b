"""The embedded tokenizer and model: offline loading, TL == HF numerics, held-out quality."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer

from sae_lens.embedded import (
    EMBEDDED_MODEL_NAME,
    corpus,
    embedded_model_dir,
    embedded_tl_config,
    is_embedded_model,
    load_embedded_hf_model,
    load_embedded_hooked_transformer,
    load_embedded_tokenizer,
)

SPECIAL = "<|endoftext|>"
FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "metrics.json",
]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((embedded_model_dir() / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tl_model() -> HookedTransformer:
    return load_embedded_hooked_transformer(device="cpu")


@pytest.fixture(scope="module")
def hf_model() -> torch.nn.Module:
    return load_embedded_hf_model(device="cpu")


@pytest.fixture(scope="module")
def test_texts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Held-out split of the embedded corpus (built into a private cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAE_LENS_CACHE", str(tmp_path_factory.mktemp("sae_cache")))
        yield list(corpus.load_embedded_dataset("test")["text"])


def _windows(texts: list[str], n: int, n_ctx: int) -> torch.Tensor:
    """n evenly spaced BOS-prefixed windows from the EOS-joined token stream (as built)."""
    tok = load_embedded_tokenizer()
    ids: list[int] = []
    for enc in tok(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc + [tok.eos_token_id])
    stream = torch.tensor(ids)
    total = stream.numel() // (n_ctx - 1)
    rows = [stream[i * (n_ctx - 1) : (i + 1) * (n_ctx - 1)] for i in range(0, total, total // n)]
    body = torch.stack(rows[:n])
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body], dim=1)


def test_names_and_files() -> None:
    assert EMBEDDED_MODEL_NAME == "tiny-pydoc-gpt2"
    assert is_embedded_model("tiny-pydoc-gpt2") and not is_embedded_model("gpt2")
    folder = embedded_model_dir()
    for name in FILES:
        assert (folder / name).is_file(), name
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20_000_000


def test_tokenizer_special_tokens_and_round_trip() -> None:
    tok = load_embedded_tokenizer()
    auto = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    assert tok.bos_token == tok.eos_token == tok.pad_token == SPECIAL
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == 0
    assert len(tok) == embedded_tl_config().d_vocab
    text = 'def f(x: int) -> str:\n    """Return  x."""  # ünïcode ✓ \t\n'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == auto(text, add_special_tokens=False)["input_ids"]
    assert tok(text)["input_ids"] == ids  # GPT-2 style: no BOS added by the tokenizer
    assert tok.decode(ids) == text
    assert tok.decode(tok(SPECIAL)["input_ids"]) == SPECIAL and len(tok(SPECIAL)["input_ids"]) == 1


def test_hooked_transformer_prepends_bos_and_context(tl_model: HookedTransformer) -> None:
    toks = tl_model.to_tokens("hello")
    assert toks[0, 0].item() == tl_model.tokenizer.bos_token_id == 0
    assert (toks[0, 1:] != 0).all()  # exactly one BOS
    assert tl_model.cfg.default_prepend_bos
    assert (
        tl_model.cfg.n_ctx
        == json.loads((embedded_model_dir() / "config.json").read_text())["n_positions"]
        == 256
    )
    assert tl_model.cfg.n_layers >= 2 and tl_model.cfg.model_name == EMBEDDED_MODEL_NAME


def test_tl_logits_match_hf(
    tl_model: HookedTransformer, hf_model: torch.nn.Module, test_texts: list[str]
) -> None:
    toks = _windows(test_texts, 2, 128)
    raw = load_embedded_hooked_transformer(
        device="cpu",
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    with torch.no_grad():
        hf_logits = hf_model(toks).logits
        assert torch.allclose(raw(toks), hf_logits, atol=1e-4)
        # processed weights shift logits by a per-position constant: compare log-probs
        assert torch.allclose(tl_model(toks).log_softmax(-1), hf_logits.log_softmax(-1), atol=1e-4)


def test_heldout_loss_beats_unigram(
    tl_model: HookedTransformer, test_texts: list[str], metrics: dict
) -> None:
    toks = _windows(test_texts, 12, 256)
    with torch.no_grad():
        loss = tl_model(toks, return_type="loss").item()
    counts = torch.bincount(toks[:, 1:].reshape(-1), minlength=tl_model.cfg.d_vocab).double()
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = -(p * p.log()).sum().item()
    assert loss < unigram_entropy - 1.5
    assert abs(loss - metrics["heldout_ce_nats"]) < 0.5
    assert metrics["heldout_ce_nats"] < metrics["unigram_entropy_nats"] - 1.5


def test_subclass_dtype_and_kwargs() -> None:
    class Sub(HookedTransformer):
        pass

    model = load_embedded_hooked_transformer(
        Sub, device="cpu", dtype="bfloat16", first_n_layers=1, n_ctx=128
    )
    assert isinstance(model, Sub) and model.W_E.dtype == torch.bfloat16
    assert model.cfg.n_layers == 1 and model.cfg.n_ctx == 128
    with pytest.raises(ValueError, match="trained context 256"):
        load_embedded_hooked_transformer(device="cpu", n_ctx=512)
    with pytest.raises(TypeError, match="fold_lm"):
        load_embedded_hooked_transformer(device="cpu", fold_lm=False)


def test_config_builds_model_with_tokenizer_offline() -> None:
    cfg = embedded_tl_config(device="cpu", n_layers=1)
    assert cfg.d_vocab == 4096 and cfg.n_layers == 1 and cfg.act_fn == "gelu_new"
    model = HookedTransformer(cfg)
    assert model.to_tokens("x")[0, 0].item() == 0


def test_auto_model_loads_from_folder() -> None:
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()))
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert Path(embedded_model_dir(), "model.safetensors").stat().st_size < 10_000_000
