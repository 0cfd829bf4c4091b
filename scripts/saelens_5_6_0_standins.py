"""Offline stand-ins for the hub models, tokenizers and datasets that SAELens 5.6.0's own
test suite loads; a pytest plugin used by `scripts/run_saelens_5_6_0_suite.py`.

Load it with `-p saelens_5_6_0_standins` (this file's folder on `PYTHONPATH`) and set
`SAELENS_STANDIN_CACHE` (where the stand-ins are built, once per interpreter) and
`SAELENS_STANDIN_TOKENIZER` (a byte-level BPE `tokenizer.json`, e.g. the one embedded in
this package, from which every stand-in tokenizer is derived).

It only uses the interpreter's own packages (never `sae_lens`), so the same plugin serves
this package and the published 5.6.0 ("oracle"). What it patches, at the narrowest level
that keeps the real loading code running:

* `AutoConfig` / `AutoTokenizer` / `AutoModelForCausalLM` / `AutoModel.from_pretrained`:
  a known hub name is replaced by a local folder that holds a randomly initialised
  (seeded) model of the same architecture and shape, and a tokenizer of the same vocabulary
  size and special-token ids (its regular tokens come from the base tokenizer). Everything
  after that (TransformerLens's conversion, the package's own code) runs unchanged.
* `huggingface_hub.hf_hub_download`, `snapshot_download` and `HfApi.list_repo_files` (also
  where modules imported them by name): files of stand-in repos (TransformerLens's
  NeelNanda checkpoints, a pretokenized dataset's `sae_lens.json`) come from the local
  folders; repos that do not exist give the hub's 404 errors.
* `datasets.load_dataset`: a known hub dataset is replaced by local parquet files with the
  same columns and splits (text built from CPython's pydoc topics, or token ids made with
  the matching stand-in tokenizer).

Anything else that needs the hub or the network (pretrained SAEs, `HfApi` queries,
`wandb.init`, any non-loopback connection) fails fast as it would offline, and is noted; a
test that then fails is reported as skipped with a reason that starts with `NEEDS_HUB`
("needs hub"), so the runner can count those apart. A test that handles the missing
network itself is judged as usual. `mamba_lens` (not installed) is a stub whose
`HookedMamba.from_pretrained` counts as needing the hub.

Two fixes of the test environment itself: pytest 9's `approx` of a 0-d tensor (which
pytest 8, used by 5.6.0, allowed) works again; and with `SAELENS_STANDIN_STUB_MISSING=1`
a name that a test module imports but the package lacks is stubbed (using it raises
AttributeError), so that the module's other tests still run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import traceback
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

STANDIN_VERSION = 1
NEEDS_HUB = "needs hub"
ENV_CACHE = "SAELENS_STANDIN_CACHE"
ENV_TOKENIZER = "SAELENS_STANDIN_TOKENIZER"
ENV_STUB_MISSING = "SAELENS_STANDIN_STUB_MISSING"
SEED = 1234

# Words that are one token in GPT-2's (and GPT-NeoX's) vocabulary and that the tests' texts
# use ("hello world" is two tokens, " France" * 3000 is 3000): the stand-in tokenizers get
# merges that make them one token too.
WHOLE_WORDS = (
    "hello",
    " world",
    "Hello",
    " World",
    " France",
    "hi",
    " there",
    "This",
    " is",
    " a",
    " test",
    " sentence",
    " for",
)

# Repos that do not exist on the hub: asking for them raises RepositoryNotFoundError, as
# the hub would, instead of skipping the test.
MISSING_REPOS = {"blah/nonsense-1234", "fake/repo"}
# Modules whose module-level `from huggingface_hub import hf_hub_download` is re-pointed.
_REBIND_PREFIXES = (
    "sae_lens",
    "transformer_lens",
    "transformers",
    "datasets",
    "huggingface_hub",
    "tests",
    "mamba_lens",
)


# --- specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer with the vocabulary size and special-token ids of a real one."""

    name: str
    vocab_size: int
    specials: dict[str, int]
    roles: dict[str, str]  # bos_token / eos_token / unk_token / pad_token -> token
    tokenizer_class: str
    model_max_length: int
    prepend: str | None = None  # a token the post-processor puts first (OPT's "</s>")
    extra_config: dict[str, Any] = field(default_factory=dict)


GPT2_TOKENIZER = TokenizerSpec(
    name="gpt2",
    vocab_size=50257,
    specials={"<|endoftext|>": 50256},
    roles={
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    },
    tokenizer_class="GPT2Tokenizer",
    model_max_length=1024,
    extra_config={"add_prefix_space": False},
)
NEOX_TOKENIZER = TokenizerSpec(
    name="neox",
    vocab_size=50277,
    specials={"<|endoftext|>": 0, "<|padding|>": 1},
    roles={
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    },
    tokenizer_class="GPTNeoXTokenizer",
    model_max_length=2048,
    extra_config={"add_prefix_space": False},
)
NEOX_DIGITS_TOKENIZER = TokenizerSpec(
    name="neox-digits",
    vocab_size=48262,
    specials={"<|endoftext|>": 0, "<|padding|>": 1},
    roles={
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|padding|>",
    },
    tokenizer_class="PreTrainedTokenizerFast",
    model_max_length=1024,
)
OPT_TOKENIZER = TokenizerSpec(
    name="opt",
    vocab_size=50265,
    specials={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    roles={"bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    tokenizer_class="PreTrainedTokenizerFast",
    model_max_length=1_000_000_000_000_000_019_884_624_838_656,
    prepend="</s>",
)


@dataclass(frozen=True)
class HFModelSpec:
    """A Hugging Face causal LM: `model_type` and config values of the real one."""

    model_type: str
    config: dict[str, Any]
    tokenizer: TokenizerSpec
    # Token-embedding rows rescaled to this norm after the random init: where a test holds
    # a fact of the real model's activation scale (TinyStories-1M's residual-stream norm).
    embed_row_norm: float | None = None


@dataclass(frozen=True)
class NeelModelSpec:
    """A model in TransformerLens's own format (NeelNanda/...): config.json + *final.pth."""

    config: dict[str, Any]
    tokenizer_repo: str


def _neel(n_layers: int, act_fn: str) -> NeelModelSpec:
    return NeelModelSpec(
        config={
            "d_model": 512,
            "n_layers": n_layers,
            "d_mlp": 2048,
            "d_head": 64,
            "n_heads": 8,
            "n_ctx": 1024,
            "d_vocab": 48262,
            "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits",
            "act_fn": act_fn,
            "attn_only": False,
            "normalization": "LN",
            "shortformer_pos": False,
        },
        tokenizer_repo="NeelNanda/gpt-neox-tokenizer-digits",
    )


_TINY_STORIES = HFModelSpec(
    "gpt_neo",
    {
        "vocab_size": 50257,
        "hidden_size": 64,
        "num_layers": 8,
        "num_heads": 16,
        "attention_types": [[["global", "local"], 4]],
        "window_size": 256,
        "max_position_embeddings": 2048,
        "intermediate_size": None,
        "activation_function": "gelu_new",
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "architectures": ["GPTNeoForCausalLM"],
    },
    GPT2_TOKENIZER,
    # test_activations_store scales blocks.1.hook_resid_pre by 10.399 (the real model's
    # factor) and wants every token's norm within 2 of sqrt(64): raw norms 0.58 to 0.96.
    embed_row_norm=0.75,
)
_GPT2 = HFModelSpec(
    "gpt2",
    {
        "vocab_size": 50257,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_positions": 1024,
        "n_ctx": 1024,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "architectures": ["GPT2LMHeadModel"],
    },
    GPT2_TOKENIZER,
)

# Hub model name -> spec. Only the tokenizer matters where a test uses only the tokenizer
# (opt-125m): its stand-in is small. Shapes are the real ones elsewhere.
MODELS: dict[str, HFModelSpec | NeelModelSpec] = {
    "roneneldan/TinyStories-1M": _TINY_STORIES,
    "roneneldan/TinyStories-Instruct-1M": _TINY_STORIES,
    "gpt2": _GPT2,
    "openai-community/gpt2": _GPT2,
    "facebook/opt-125m": HFModelSpec(
        "opt",
        {
            "vocab_size": 50272,
            "hidden_size": 64,
            "word_embed_proj_dim": 64,
            "ffn_dim": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 2048,
            "bos_token_id": 2,
            "eos_token_id": 2,
            "pad_token_id": 1,
            "architectures": ["OPTForCausalLM"],
        },
        OPT_TOKENIZER,
    ),
    "EleutherAI/pythia-14m": HFModelSpec(
        "gpt_neox",
        {
            "vocab_size": 50304,
            "hidden_size": 128,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "intermediate_size": 512,
            "rotary_pct": 0.25,
            "max_position_embeddings": 2048,
            "use_parallel_residual": True,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "architectures": ["GPTNeoXForCausalLM"],
        },
        NEOX_TOKENIZER,
    ),
    "NeelNanda/SoLU_1L512W_C4_Code": _neel(1, "solu_ln"),
    "NeelNanda/GELU_1L512W_C4_Code": _neel(1, "gelu"),
    "NeelNanda/GELU_2L512W_C4_Code": _neel(2, "gelu"),
}
TOKENIZER_REPOS: dict[str, TokenizerSpec] = {
    "NeelNanda/gpt-neox-tokenizer-digits": NEOX_DIGITS_TOKENIZER,
    "EleutherAI/gpt-neox-20b": NEOX_TOKENIZER,
}


@dataclass(frozen=True)
class DatasetSpec:
    """A hub dataset: its splits and columns. `context` > 0 makes it pretokenized: rows of
    `context` token ids (column `column`) made with `tokenizer`."""

    column: str = "text"
    splits: tuple[str, ...] = ("train",)
    docs_per_row: int = 1
    context: int = 0
    rows: int = 0
    tokenizer: TokenizerSpec | None = None
    configs: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = ()
    files: dict[str, Any] = field(default_factory=dict)  # extra files at the repo root


def _pretokenized(column: str, context: int, rows: int, tokenizer: TokenizerSpec) -> DatasetSpec:
    return DatasetSpec(column=column, context=context, rows=rows, tokenizer=tokenizer)


DATASETS: dict[str, DatasetSpec] = {
    "roneneldan/TinyStories": DatasetSpec(splits=("train", "validation")),
    "NeelNanda/c4-10k": DatasetSpec(docs_per_row=5, extra_columns=("timestamp", "url")),
    "NeelNanda/pile-10k": DatasetSpec(docs_per_row=5, extra_columns=("meta",)),
    "Skylion007/openwebtext": DatasetSpec(docs_per_row=3),
    "nyu-mll/glue": DatasetSpec(
        column="premise",
        splits=("test",),
        configs=("ax",),
        extra_columns=("hypothesis", "label", "idx"),
    ),
    "apollo-research/roneneldan-TinyStories-tokenizer-gpt2": _pretokenized(
        "input_ids", 512, 256, GPT2_TOKENIZER
    ),
    "apollo-research/Skylion007-openwebtext-tokenizer-gpt2": _pretokenized(
        "input_ids", 1024, 128, GPT2_TOKENIZER
    ),
    "apollo-research/monology-pile-uncopyrighted-tokenizer-gpt2": _pretokenized(
        "input_ids", 1024, 16, GPT2_TOKENIZER
    ),
    "NeelNanda/c4-tokenized-2b": _pretokenized("tokens", 1024, 128, NEOX_DIGITS_TOKENIZER),
    "chanind/c4-10k-mini-tokenized-16-ctx-gelu-1l-tests": _pretokenized(
        "input_ids", 16, 1024, NEOX_DIGITS_TOKENIZER
    ),
    "chanind/openwebtext-gpt2": DatasetSpec(
        column="input_ids",
        context=128,
        rows=256,
        tokenizer=GPT2_TOKENIZER,
        files={
            "sae_lens.json": {
                "sae_lens_version": "3.3.0",
                "tokenizer_name": "gpt2",
                "original_dataset": "Skylion007/openwebtext",
                "original_split": "train",
                "original_data_files": None,
                "original_column_name": "text",
                "context_size": 128,
                "shuffled": True,
                "seed": None,
                "begin_batch_token": "bos",
                "begin_sequence_token": None,
                "sequence_separator_token": "eos",
            }
        },
    ),
}


# --- building the stand-ins ----------------------------------------------------------------


def cache_root() -> Path:
    """Where this interpreter's stand-ins live: `$SAELENS_STANDIN_CACHE/<interpreter key>`."""
    base = os.environ.get(ENV_CACHE)
    if not base:
        raise RuntimeError(f"set {ENV_CACHE} to the folder for the stand-in models and datasets")
    import transformers

    key = f"{STANDIN_VERSION}|{sys.executable}|{transformers.__version__}"
    return Path(base) / hashlib.sha256(key.encode()).hexdigest()[:16]


def _seed_for(name: str) -> int:
    return SEED + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _build_once(folder: Path, build: Callable[[Path], None], spec: Any) -> Path:
    """Build `folder` with `build(tmp)` in a temporary sibling, renamed into place; rebuilt
    when `spec` (what it is built from) or this file changes. Safe when two runs build the
    same folder at once: the first complete one wins."""
    stamp = hashlib.sha256(Path(__file__).read_bytes() + repr(spec).encode()).hexdigest()

    def complete() -> bool:
        done = folder / ".complete"
        return done.exists() and done.read_text().strip() == stamp

    if complete():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        build(tmp)
        (tmp / ".complete").write_text(stamp + "\n")
        if folder.exists() and not complete():  # a stale build: move it aside first
            stale = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                folder.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            except OSError:
                pass
        try:
            tmp.rename(folder)
        except OSError:
            if not complete():  # not another run's finished build either
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _base_tokenizer() -> dict[str, Any]:
    path = os.environ.get(ENV_TOKENIZER)
    if not path or not Path(path).is_file():
        raise RuntimeError(f"set {ENV_TOKENIZER} to a byte-level BPE tokenizer.json")
    return json.loads(Path(path).read_text())


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _filler(i: int) -> str:
    """A vocabulary entry that BPE never produces (no merge leads to it)."""
    table = _bytes_to_unicode()
    return "".join(table[b] for b in f"<|standin_{i}|>".encode())


def write_tokenizer(spec: TokenizerSpec, folder: Path) -> None:
    """Write tokenizer.json (+ vocab.json/merges.txt, tokenizer_config.json,
    special_tokens_map.json) for `spec`: the base tokenizer's regular tokens on the free ids
    in order, the special tokens on their real ids, unused fillers up to `vocab_size`."""
    base = _base_tokenizer()
    base_specials = {t["content"] for t in base.get("added_tokens", [])}
    regular = [
        tok
        for tok, _ in sorted(base["model"]["vocab"].items(), key=lambda kv: kv[1])
        if tok not in base_specials
    ]
    taken = set(spec.specials.values())
    free = (i for i in range(spec.vocab_size) if i not in taken)
    vocab: dict[str, int] = dict(spec.specials)
    for tok in regular:
        vocab[tok] = next(free)
    for n, i in enumerate(free):
        vocab[_filler(n)] = i
    if len(vocab) != spec.vocab_size:
        raise RuntimeError(f"tokenizer {spec.name}: built {len(vocab)} ids, not {spec.vocab_size}")

    tok_json = dict(base)
    tok_json["model"] = dict(base["model"], vocab=vocab)
    _add_whole_words(tok_json, n_fillers=spec.vocab_size - len(spec.specials) - len(regular))
    tok_json["added_tokens"] = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t, i in sorted(spec.specials.items(), key=lambda kv: kv[1])
    ]
    if spec.prepend is not None:
        first = {"SpecialToken": {"id": spec.prepend, "type_id": 0}}
        seq = {"Sequence": {"id": "A", "type_id": 0}}
        tok_json["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [first, seq],
            "pair": [first, seq, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                spec.prepend: {
                    "id": spec.prepend,
                    "ids": [spec.specials[spec.prepend]],
                    "tokens": [spec.prepend],
                }
            },
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in base["model"]["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": spec.tokenizer_class,
        "model_max_length": spec.model_max_length,
        "clean_up_tokenization_spaces": False,
        **spec.roles,
        **spec.extra_config,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(spec.roles, indent=2))


def _add_whole_words(tok_json: dict[str, Any], n_fillers: int) -> None:
    """Append merges (lowest priority) that join each of WHOLE_WORDS into one token; the
    new tokens take the ids of the last fillers."""
    from tokenizers import Tokenizer

    model = tok_json["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list[Any] = list(model["merges"])
    as_pairs = bool(merges) and not isinstance(merges[0], str)
    tokenizer = Tokenizer.from_str(json.dumps(tok_json))
    fillers = [_filler(n) for n in reversed(range(n_fillers))]
    for word in WHOLE_WORDS:
        pieces = tokenizer.encode(word, add_special_tokens=False).tokens
        acc = pieces[0]
        for piece in pieces[1:]:
            merges.append([acc, piece] if as_pairs else f"{acc} {piece}")
            acc += piece
            if acc not in vocab:
                vocab[acc] = vocab.pop(fillers.pop(0))
    model["merges"] = merges


def _write_hf_model(spec: HFModelSpec, name: str, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(spec.model_type, **spec.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(name))
        model = AutoModelForCausalLM.from_config(config)
    if spec.embed_row_norm is not None:
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight.mul_(spec.embed_row_norm / weight.norm(dim=-1, keepdim=True))
    model.save_pretrained(str(folder), safe_serialization=True)
    write_tokenizer(spec.tokenizer, folder)


def _write_neel_model(spec: NeelModelSpec, name: str, folder: Path) -> None:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = spec.config
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    cfg = HookedTransformerConfig(
        d_model=c["d_model"],
        n_layers=c["n_layers"],
        d_mlp=c["d_mlp"],
        d_head=c["d_head"],
        n_heads=c["n_heads"],
        n_ctx=c["n_ctx"],
        d_vocab=c["d_vocab"],
        act_fn=c["act_fn"],
        normalization_type=c["normalization"],
        attn_only=c["attn_only"],
        original_architecture="neel",
        device="cpu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(name))
        model = HookedTransformer(cfg)
    state = model.state_dict()
    # Weights that write to the residual stream are mean-free over d_model, so that loading
    # with TransformerLens's processing (center_writing_weights) changes no activation, as
    # the real checkpoints' tests assume.
    for key, value in state.items():
        if key.split(".")[-1] in ("W_E", "W_pos", "W_O", "b_O", "W_out", "b_out"):
            state[key] = value - value.mean(dim=-1, keepdim=True)
    torch.save(state, folder / "model_final.pth")


def model_dir(name: str) -> Path:
    """The local folder standing in for hub model (or tokenizer) repo `name`."""
    folder = cache_root() / "models" / name
    spec = MODELS.get(name)
    if isinstance(spec, HFModelSpec):
        return _build_once(folder, lambda tmp: _write_hf_model(spec, name, tmp), spec)
    if isinstance(spec, NeelModelSpec):
        return _build_once(folder, lambda tmp: _write_neel_model(spec, name, tmp), spec)
    tok = TOKENIZER_REPOS[name]
    return _build_once(folder, lambda tmp: write_tokenizer(tok, tmp), tok)


def _paragraphs() -> list[str]:
    """Deterministic English text: the paragraphs of CPython's pydoc help topics."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return [
        " ".join(p.split())
        for key in sorted(topics)
        for p in topics[key].split("\n\n")
        if len(p.strip()) > 40
    ]


def _documents(docs_per_row: int) -> list[str]:
    paras = _paragraphs()
    return ["\n\n".join(paras[i : i + docs_per_row]) for i in range(0, len(paras), docs_per_row)]


def _token_rows(spec: DatasetSpec) -> list[list[int]]:
    """`spec.rows` rows of `spec.context` ids: documents tokenized with the stand-in
    tokenizer, joined with its end-of-text token, cut into rows (cycling the text)."""
    from tokenizers import Tokenizer

    assert spec.tokenizer is not None
    tok_dir = cache_root() / "tokenizers" / spec.tokenizer.name
    tok_spec = spec.tokenizer
    _build_once(tok_dir, lambda tmp: write_tokenizer(tok_spec, tmp), tok_spec)
    tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    eot = spec.tokenizer.specials[
        "<|endoftext|>" if "<|endoftext|>" in spec.tokenizer.specials else "</s>"
    ]
    stream: list[int] = []
    for doc in _documents(3):
        stream += tokenizer.encode(doc, add_special_tokens=False).ids + [eot]
    need = spec.rows * spec.context
    while len(stream) < need:
        stream += stream
    return [stream[i * spec.context : (i + 1) * spec.context] for i in range(spec.rows)]


def _write_dataset(spec: DatasetSpec, folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, content in spec.files.items():
        (folder / name).write_text(json.dumps(content, indent=2))
    for config in spec.configs or ("",):
        if spec.context:
            rows: list[Any] = _token_rows(spec)
            col = pa.array(rows, type=pa.list_(pa.int64()))
        else:
            rows = _documents(spec.docs_per_row)
            col = pa.array(rows, type=pa.string())
        columns: dict[str, Any] = {spec.column: col}
        for extra in spec.extra_columns:
            if extra in ("label", "idx"):
                columns[extra] = pa.array(
                    [-1 if extra == "label" else i for i in range(len(rows))], pa.int64()
                )
            elif extra == "meta":
                columns[extra] = pa.array([{"pile_set_name": "Pile-CC"}] * len(rows))
            else:
                columns[extra] = pa.array([f"standin-{extra}-{i}" for i in range(len(rows))])
        table = pa.table(columns)
        n = table.num_rows
        held_out = [i for i in range(n) if i % 20 == 0]
        for split in spec.splits:
            if len(spec.splits) > 1 and split != "train":
                part = table.take(held_out)
            elif len(spec.splits) > 1:
                part = table.take([i for i in range(n) if i % 20 != 0])
            else:
                part = table
            out = folder / config / "data" if config else folder / "data"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, out / f"{split}-00000-of-00001.parquet")


def dataset_root(name: str) -> Path:
    """The local folder standing in for hub dataset repo `name` (built on first use)."""
    spec = DATASETS[name]
    folder = cache_root() / "datasets" / name
    return _build_once(folder, lambda tmp: _write_dataset(spec, tmp), spec)


def dataset_dir(name: str, config: str | None = None) -> Path:
    """The local folder to load hub dataset `name` (config `config`) from."""
    spec = DATASETS[name]
    folder = dataset_root(name)
    if spec.configs:
        if config is None:
            raise ValueError(
                f"Config name is missing. Please pick one among the available configs: "
                f"{list(spec.configs)}"
            )
        if config not in spec.configs:
            raise ValueError(f"BuilderConfig '{config}' not found. Available: {list(spec.configs)}")
        return folder / config
    return folder


# --- network guard -------------------------------------------------------------------------

# What the running test asked of the hub or the network (reset before each test). A test
# that fails after such a request is reported as skipped: "needs hub: <first request>".
ATTEMPTS: list[str] = []
# Probes that libraries make on import and whose failure they handle themselves.
_BENIGN_PROBES = (f"{os.sep}kernels{os.sep}",)


def record_hub_use(what: str) -> None:
    """Note that the running test needs the hub or the network for `what`."""
    frames = [f.filename for f in traceback.extract_stack(limit=60)]
    if any(marker in name for name in frames for marker in _BENIGN_PROBES):
        return
    ATTEMPTS.append(what)


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    return host in ("", "localhost", "::1", "0.0.0.0") or host.startswith("127.")


def _refuse(host: Any) -> NoReturn:
    record_hub_use(f"network access to {host}")
    raise socket.gaierror(socket.EAI_NONAME, f"stand-in harness: no network access to {host}")


_orig_getaddrinfo = socket.getaddrinfo
_orig_connect = socket.socket.connect


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_local_host(host):
        _refuse(host)
    return _orig_getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if isinstance(address, tuple) and not _is_local_host(address[0]):
        _refuse(address[0])
    return _orig_connect(self, address)


# --- hub functions -------------------------------------------------------------------------


def _repo_folder(repo_id: str, repo_type: str | None) -> Path | None:
    if repo_type == "dataset":
        return dataset_root(repo_id) if repo_id in DATASETS else None
    if repo_type in (None, "model") and (repo_id in MODELS or repo_id in TOKENIZER_REPOS):
        return model_dir(repo_id)
    return None


def _hub_error(kind: str, message: str) -> Exception:
    """A hub 404 of class `kind` (RepositoryNotFoundError, EntryNotFoundError)."""
    from huggingface_hub import errors

    cls = (
        getattr(errors, "RemoteEntryNotFoundError", None) if kind == "EntryNotFoundError" else None
    )
    cls = cls or getattr(errors, kind)
    url = "https://huggingface.co/standin"
    try:
        import httpx

        response: Any = httpx.Response(404, request=httpx.Request("GET", url))
        return cls(message, response=response)
    except Exception:
        pass
    try:
        import requests

        response = requests.Response()
        response.status_code = 404
        response.url = url
        return cls(message, response=response)
    except Exception:
        return cls(message)


_orig_list_repo_files: Callable[..., Any] | None = None
# (original function, stand-in) pairs; module-level copies of the originals are re-pointed.
_REPLACED: list[tuple[Any, Any]] = []


def standin_hf_hub_download(
    repo_id: str,
    filename: str,
    *,
    subfolder: str | None = None,
    repo_type: str | None = None,
    **kwargs: Any,
) -> str:
    """`hf_hub_download` for stand-in repos; a 404 for repos known not to exist; anything
    else fails as offline and marks the test "needs hub"."""
    folder = _repo_folder(repo_id, repo_type)
    if folder is not None:
        path = folder / (subfolder or ".") / filename
        if path.is_file():
            return str(path.resolve())
        raise _hub_error("EntryNotFoundError", f"404: {filename} not in stand-in repo {repo_id}")
    if repo_id in MISSING_REPOS:
        raise _hub_error("RepositoryNotFoundError", f"404: repository {repo_id} not found")
    record_hub_use(f"hf_hub_download({repo_id!r}, {filename!r}, repo_type={repo_type!r})")
    # What the real function raises offline, after its retries (about 20 s) are spent.
    from huggingface_hub.errors import LocalEntryNotFoundError

    raise LocalEntryNotFoundError(
        "An error happened while trying to locate the file on the Hub and we cannot find the "
        "requested files in the local cache. (stand-in harness: no network)"
    )


def standin_snapshot_download(repo_id: str, *, repo_type: str | None = None, **kwargs: Any) -> str:
    """`snapshot_download` for stand-in repos (their folder); else as `hf_hub_download`."""
    folder = _repo_folder(repo_id, repo_type)
    if folder is not None:
        return str(folder.resolve())
    if repo_id in MISSING_REPOS:
        raise _hub_error("RepositoryNotFoundError", f"404: repository {repo_id} not found")
    record_hub_use(f"snapshot_download({repo_id!r}, repo_type={repo_type!r})")
    from huggingface_hub.errors import LocalEntryNotFoundError

    raise LocalEntryNotFoundError(
        "Cannot find an appropriate cached snapshot folder for the specified revision on the "
        "local disk and outgoing traffic has been disabled. (stand-in harness: no network)"
    )


def _standin_list_repo_files(
    self: Any, repo_id: str, *args: Any, repo_type: str | None = None, **kwargs: Any
) -> list[str]:
    folder = _repo_folder(repo_id, repo_type)
    if folder is not None:
        return sorted(
            str(p.relative_to(folder))
            for p in folder.rglob("*")
            if p.is_file() and p.name != ".complete"
        )
    if repo_id in MISSING_REPOS:
        raise _hub_error("RepositoryNotFoundError", f"404: repository {repo_id} not found")
    record_hub_use(f"list_repo_files({repo_id!r}, repo_type={repo_type!r})")
    assert _orig_list_repo_files is not None
    return _orig_list_repo_files(self, repo_id, *args, repo_type=repo_type, **kwargs)


def _module_list_repo_files(repo_id: str, *args: Any, **kwargs: Any) -> list[str]:
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(repo_id, *args, **kwargs)


def _rebind(original: Any, replacement: Any) -> None:
    """Point every module-level name bound to `original` (in the packages that load models
    and data) at `replacement`."""
    for mod_name, module in list(sys.modules.items()):
        if module is None or not mod_name.startswith(_REBIND_PREFIXES):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is original:
                setattr(module, attr, replacement)


def rebind_all() -> None:
    """Re-point module-level copies of the patched functions (newly imported modules)."""
    for original, replacement in _REPLACED:
        _rebind(original, replacement)


# --- transformers and datasets -------------------------------------------------------------


def redirect_name(name: Any) -> Any:
    """A hub model/tokenizer name with a stand-in -> its local folder; anything else as is."""
    if isinstance(name, str) and (name in MODELS or name in TOKENIZER_REPOS):
        return str(model_dir(name))
    return name


def _patch_from_pretrained(cls: type) -> None:
    original = cls.__dict__.get("from_pretrained")
    func = original.__func__ if isinstance(original, classmethod) else None
    if func is None:
        bound = cls.from_pretrained  # inherited classmethod
        func = bound.__func__

    def from_pretrained(klass: type, name: Any, *args: Any, **kwargs: Any) -> Any:
        return func(klass, redirect_name(name), *args, **kwargs)

    from_pretrained.__doc__ = func.__doc__
    cls.from_pretrained = classmethod(from_pretrained)  # type: ignore[attr-defined]


_orig_load_dataset: Callable[..., Any] | None = None


def standin_load_dataset(path: Any, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset` with known hub datasets read from local parquet files."""
    assert _orig_load_dataset is not None
    if not (isinstance(path, str) and path in DATASETS):
        return _orig_load_dataset(path, *args, **kwargs)
    name = kwargs.pop("name", None)
    if args:
        name, args = args[0], args[1:]
    local = dataset_dir(path, name)
    return _orig_load_dataset(str(local), *args, **kwargs)


def _mamba_lens_stub() -> types.ModuleType:
    """`mamba_lens` is not installed: a stub, so that test modules importing it load; its
    `HookedMamba.from_pretrained` fails and marks the test "needs hub"."""
    import torch

    module = types.ModuleType("mamba_lens")

    class HookedMamba(torch.nn.Module):
        """Stand-in: loading a Mamba model needs mamba_lens and the hub."""

        @classmethod
        def from_pretrained(cls, *args: Any, **kwargs: Any) -> HookedMamba:
            record_hub_use("HookedMamba.from_pretrained (mamba_lens is not installed)")
            raise OSError("stand-in harness: mamba_lens is not installed")

    module.HookedMamba = HookedMamba  # type: ignore[attr-defined]
    module.__standin__ = True  # type: ignore[attr-defined]
    return module


def _patch_pytest_approx() -> None:
    """pytest 9's approx iterates the expected value looking for Decimals, which fails on a
    0-d tensor (`pytest.approx(loss.detach())`); pytest 8, which 5.6.0's tests were written
    for, compared it as a scalar. Restore that."""
    try:
        from _pytest import approx
    except ImportError:
        return
    original = getattr(approx, "_contains_decimal", None)
    if original is None:
        return

    def contains_decimal(expected: object) -> bool:
        try:
            return bool(original(expected))
        except TypeError:
            return False

    approx._contains_decimal = contains_decimal  # type: ignore[attr-defined]


class MissingName:
    """Stands for a name a test module imports that the package lacks: any use of it raises
    AttributeError, so only the tests that use it fail (SAELENS_STANDIN_STUB_MISSING=1)."""

    def __init__(self, module: str, name: str) -> None:
        self._where = (module, name)

    def _fail(self) -> NoReturn:
        module, name = self._where
        raise AttributeError(f"module '{module}' has no attribute '{name}' (stubbed import)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._fail()


_CANNOT_IMPORT = re.compile(r"cannot import name '(\w+)' from '([\w.]+)'")


def _patch_test_module_import() -> None:
    """Import test modules even when they import names the package lacks (stubbed)."""
    from _pytest import python

    original = python.importtestmodule

    def importtestmodule(path: Any, config: Any) -> Any:
        for _ in range(20):
            try:
                return original(path, config)
            except python.nodes.Collector.CollectError as error:
                cause = error.__cause__
                match = _CANNOT_IMPORT.search(str(cause)) if cause is not None else None
                module = sys.modules.get(match.group(2)) if match else None
                if match is None or module is None or hasattr(module, match.group(1)):
                    raise
                setattr(module, match.group(1), MissingName(match.group(2), match.group(1)))
        return original(path, config)

    python.importtestmodule = importtestmodule  # type: ignore[assignment]


def _patch_wandb() -> None:
    try:
        import wandb
    except ImportError:
        return

    def init(*args: Any, **kwargs: Any) -> Any:
        record_hub_use("wandb.init without a mock (an online run)")
        raise RuntimeError("stand-in harness: wandb.init needs the network")

    wandb.init = init  # type: ignore[assignment]


def install() -> None:
    """Install all stand-ins (idempotent)."""
    global _orig_list_repo_files, _orig_load_dataset
    if _REPLACED:
        return
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]

    import datasets
    import huggingface_hub
    import huggingface_hub._snapshot_download
    import huggingface_hub.file_download
    import huggingface_hub.hf_api
    import transformers

    _REPLACED.append((huggingface_hub.file_download.hf_hub_download, standin_hf_hub_download))
    _REPLACED.append(
        (huggingface_hub._snapshot_download.snapshot_download, standin_snapshot_download)
    )
    huggingface_hub.hf_hub_download = standin_hf_hub_download  # type: ignore[assignment]
    huggingface_hub.snapshot_download = standin_snapshot_download  # type: ignore[assignment]
    _orig_list_repo_files = huggingface_hub.HfApi.list_repo_files
    huggingface_hub.HfApi.list_repo_files = _standin_list_repo_files  # type: ignore[method-assign]
    huggingface_hub.list_repo_files = _module_list_repo_files  # type: ignore[assignment]
    huggingface_hub.hf_api.list_repo_files = _module_list_repo_files  # type: ignore[assignment]

    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "AutoModel"):
        _patch_from_pretrained(getattr(transformers, cls_name))

    _orig_load_dataset = datasets.load_dataset
    _REPLACED.append((_orig_load_dataset, standin_load_dataset))
    datasets.load_dataset = standin_load_dataset  # type: ignore[assignment]

    if importlib.util.find_spec("mamba_lens") is None:
        sys.modules["mamba_lens"] = _mamba_lens_stub()
    _patch_wandb()
    _patch_pytest_approx()
    if os.environ.get(ENV_STUB_MISSING) == "1":
        _patch_test_module_import()
    for arch in ("gpt2", "gpt_neo", "gpt_neox", "opt"):  # their import probes the hub once
        try:
            importlib.import_module(f"transformers.models.{arch}.modeling_{arch}")
        except Exception:
            pass
    rebind_all()


# --- pytest hooks --------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Install the stand-ins before any test module is imported."""
    config.addinivalue_line("markers", "anyio: async test (not run by this harness)")
    install()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Re-point names that test and package modules imported during collection."""
    rebind_all()


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """A new test: forget the hub requests of the previous one."""
    ATTEMPTS.clear()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Re-point names imported since (lazy imports inside functions)."""
    rebind_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that failed after asking the hub or the network is skipped: "needs hub"."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and ATTEMPTS and not hasattr(report, "wasxfail"):
        report.outcome = "skipped"
        line = item.location[1] if item.location[1] is not None else 0
        report.longrepr = (str(item.path), line + 1, f"Skipped: {NEEDS_HUB}: {ATTEMPTS[0]}")
