"""Pretokenizing: rows built by the 5.6.0 concatenation rules, shuffling, the saved folder
and its metadata (read back by the ActivationsStore), the hub upload (faked) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset, IterableDataset, load_from_disk
from huggingface_hub import HfApi
from transformers import PreTrainedTokenizerFast

from sae_lens.config import PretokenizeRunnerConfig
from sae_lens.embedded import load_embedded_tokenizer
from sae_lens.pretokenize_runner import (
    PretokenizeRunner,
    get_special_token_from_cfg,
    main,
    metadata_from_config,
    pretokenize_dataset,
    pretokenize_runner,
    push_to_hugging_face_hub,
)
from sae_lens.tokenization_and_batching import concat_and_batch_sequences
from sae_lens.training.activations_store import ActivationsStore

TEXTS = [
    "def add(a, b):\n    return a + b",
    "The os module provides a portable way of using operating system dependent functionality.",
    "import sys",
    "for item in items:\n    print(item)",
] * 6


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return load_embedded_tokenizer()


def rows_of(dataset: Dataset) -> torch.Tensor:
    return dataset[:]["input_ids"]


def config(**overrides: Any) -> PretokenizeRunnerConfig:
    kwargs: dict[str, Any] = dict(
        tokenizer_name="tiny-pydoc-gpt2",
        context_size=16,
        num_proc=1,
        shuffle=False,
        pretokenize_batch_size=None,
    )
    kwargs.update(overrides)
    return PretokenizeRunnerConfig(**kwargs)


def test_rows_follow_the_concatenation_rules_with_tokenizer_special_tokens(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    cfg = config(begin_batch_token="bos", begin_sequence_token=7, sequence_separator_token="eos")
    out = pretokenize_dataset(Dataset.from_dict({"text": TEXTS}), tokenizer, cfg)
    sequences = (torch.tensor(tokenizer(t)["input_ids"]) for t in TEXTS)
    expected = list(concat_and_batch_sequences(sequences, 16, 0, 7, 0))
    assert len(out) == len(expected) > 5
    assert torch.equal(rows_of(out), torch.stack(expected))


def test_shuffle_is_a_seeded_permutation_of_the_rows(tokenizer: PreTrainedTokenizerFast) -> None:
    data = Dataset.from_dict({"text": TEXTS})
    plain = rows_of(pretokenize_dataset(data, tokenizer, config()))
    shuffled = rows_of(pretokenize_dataset(data, tokenizer, config(shuffle=True, seed=1)))
    again = rows_of(pretokenize_dataset(data, tokenizer, config(shuffle=True, seed=1)))
    assert torch.equal(shuffled, again) and not torch.equal(shuffled, plain)
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, plain.tolist()))


def test_streaming_gives_the_same_rows_and_needs_one_process(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    data = Dataset.from_dict({"text": TEXTS})
    streamed = pretokenize_dataset(data.to_iterable_dataset(), tokenizer, config(streaming=True))
    assert isinstance(streamed, IterableDataset)  # lazy, as in 5.6.0
    streamed_rows = torch.stack([row["input_ids"] for row in streamed])
    assert torch.equal(streamed_rows, rows_of(pretokenize_dataset(data, tokenizer, config())))
    with pytest.raises(ValueError, match="num_proc must be 1 when streaming"):
        pretokenize_dataset(
            data.to_iterable_dataset(), tokenizer, config(streaming=True, num_proc=2)
        )


def test_special_token_names_resolve_through_the_tokenizer(
    tokenizer: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture
) -> None:
    assert get_special_token_from_cfg("bos", tokenizer) == tokenizer.bos_token_id == 0
    assert get_special_token_from_cfg(42, tokenizer) == 42
    assert get_special_token_from_cfg(None, tokenizer) is None
    assert get_special_token_from_cfg("sep", tokenizer) is None
    assert "no sep token" in caplog.text
    with pytest.raises(ValueError, match="must be an int, 'bos', 'eos', 'sep' or None, got 'cls'"):
        get_special_token_from_cfg("cls", tokenizer)  # type: ignore[arg-type]


def test_runner_saves_rows_and_metadata_that_the_store_reads(
    tmp_path: Path, embedded_model: Any
) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    save_path = tmp_path / "tokenized"
    cfg = config(dataset_path=str(source), save_path=str(save_path), shuffle=True, seed=3)
    returned = PretokenizeRunner(cfg).run()
    saved = load_from_disk(str(save_path))
    assert torch.equal(rows_of(saved), rows_of(returned))
    metadata = json.loads((save_path / "sae_lens.json").read_text())
    assert metadata == json.loads(json.dumps(metadata_from_config(cfg).__dict__))
    assert metadata["tokenizer_name"] == "tiny-pydoc-gpt2" and metadata["seed"] == 3

    store = ActivationsStore(
        model=embedded_model,
        dataset=str(save_path),
        streaming=True,
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        hook_head_index=None,
        context_size=16,
        d_in=128,
        n_batches_in_buffer=2,
        total_training_tokens=1000,
        store_batch_size_prompts=2,
        train_batch_size_tokens=8,
        prepend_bos=True,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
    )
    assert store.tokens_column == "input_ids"
    assert torch.equal(store.get_batch_tokens(), rows_of(returned)[:2])
    with pytest.raises(ValueError, match="exists and is not empty"):
        PretokenizeRunner(cfg).run()


def test_push_to_hub_uploads_the_dataset_and_its_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: list[dict[str, Any]] = []
    uploaded: list[dict[str, Any]] = []
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, **kw: pushed.append({"rows": len(self), **kw})
    )

    def fake_upload(self: HfApi, **kw: Any) -> None:
        uploaded.append({**kw, "content": kw["path_or_fileobj"].read().decode()})

    monkeypatch.setattr(HfApi, "upload_file", fake_upload)
    cfg = config(hf_repo_id="me/tokens", hf_num_shards=3, hf_is_private_repo=True, hf_revision="v1")
    push_to_hugging_face_hub(Dataset.from_dict({"input_ids": [[1, 2]] * 5}), cfg)
    assert pushed == [
        {"rows": 5, "repo_id": "me/tokens", "num_shards": 3, "private": True, "revision": "v1"}
    ]
    assert len(uploaded) == 1
    upload = uploaded[0]
    assert (upload["path_in_repo"], upload["repo_id"], upload["repo_type"], upload["revision"]) == (
        "sae_lens.json",
        "me/tokens",
        "dataset",
        "v1",
    )
    assert json.loads(upload["content"])["tokenizer_name"] == "tiny-pydoc-gpt2"


def test_command_line_runs_the_runner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--begin_sequence_token" in capsys.readouterr().out
    source = tmp_path / "t.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    main(
        [
            "--tokenizer_name",
            "tiny-pydoc-gpt2",
            "--dataset_path",
            str(source),
            "--context_size",
            "8",
            "--num_proc",
            "1",
            "--save_path",
            str(tmp_path / "out"),
            "--seed",
            "0",
        ]
    )
    rows = rows_of(load_from_disk(str(tmp_path / "out"))).tolist()
    assert len(rows) > 10 and all(len(r) == 8 and r[0] == 0 for r in rows)


def test_deprecated_function_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PretokenizeRunner, "run", lambda self: "ran")
    with pytest.warns(DeprecationWarning, match="use PretokenizeRunner"):
        assert pretokenize_runner(config()) == "ran"
