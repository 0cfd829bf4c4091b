"""`PretokenizeRunner` and `pretokenize_dataset` results (and the activation cache) used
the way sae-lens 5.6.0 and its tests use them: `dataset["input_ids"]` is a tensor after
the torch format is set (the `datasets` pin keeps `dataset[column]` eager: 4.0 made it a
lazy Column), a saved dataset reads back the same, and a streamed one stays lazy.

The decoded strings were recorded by running 5.6.0's `pretokenize_dataset` on the same
texts with the embedded tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerFast

from sae_lens import __version__
from sae_lens.cache_activations_runner import CacheActivationsRunner
from sae_lens.config import CacheActivationsRunnerConfig, PretokenizeRunnerConfig
from sae_lens.embedded import embedded_model_dir
from sae_lens.pretokenize_runner import PretokenizeRunner, pretokenize_dataset

# From sae-lens 5.6.0: (n_rows, decoded first row) of "hello world" x 30 at context 10.
EXPECTED_HELLO_WORLD = {
    "none": (18, "hello worldhello w"),
    "begin_batch": (20, "<|endoftext|>hello worldhello"),
    "separator": (20, "hello world<|endoftext|>hello"),
    "begin_sequence": (21, "<|endoftext|>hello world<|endoftext|>hel"),
    "all": (22, "<|endoftext|>hello world<|endoftext|>hel"),
}
SPECIAL_TOKENS = {
    "none": (None, None, None),
    "begin_batch": ("bos", None, None),
    "separator": (None, None, "bos"),
    "begin_sequence": (None, "bos", None),
    "all": ("bos", "bos", "bos"),
}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(embedded_model_dir()))


@pytest.fixture
def texts_file(tmp_path: Path) -> str:
    texts = [f"def f{i}(x):\n    return x * {i}" for i in range(40)]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "premise": t.upper()}) + "\n" for t in texts))
    return str(path)


@pytest.mark.parametrize("name", list(EXPECTED_HELLO_WORLD))
def test_pretokenize_dataset_rows_index_as_5_6_0_tensors(tokenizer: Any, name: str) -> None:
    begin_batch, begin_sequence, separator = SPECIAL_TOKENS[name]
    cfg = PretokenizeRunnerConfig(
        context_size=10,
        num_proc=1,
        shuffle=False,
        begin_batch_token=begin_batch,
        sequence_separator_token=separator,
        begin_sequence_token=begin_sequence,
    )
    dataset = Dataset.from_list([{"text": "hello world"}] * 30)
    tokenized_dataset: Any = pretokenize_dataset(dataset, tokenizer, cfg)
    n_rows, first_row = EXPECTED_HELLO_WORLD[name]
    assert isinstance(tokenized_dataset["input_ids"], torch.Tensor)
    assert tokenized_dataset["input_ids"].shape == (n_rows, cfg.context_size)
    assert tokenizer.decode(tokenized_dataset["input_ids"][0]) == first_row
    if begin_batch == "bos":
        for batch in tokenized_dataset["input_ids"]:
            assert tokenizer.decode(batch[0]) == "<|endoftext|>"


def test_pretokenize_dataset_can_shuffle(tokenizer: Any) -> None:
    dataset = Dataset.from_list(
        [{"text": "hello world1"}, {"text": "hello world2"}, {"text": "hello world3"}] * 500
    )
    cfg = PretokenizeRunnerConfig(context_size=10, num_proc=1, shuffle=True)
    tokenized_dataset1: Any = pretokenize_dataset(dataset, tokenizer, cfg)
    tokenized_dataset2: Any = pretokenize_dataset(dataset, tokenizer, cfg)
    assert len(tokenized_dataset1) == len(tokenized_dataset2)
    assert tokenized_dataset1["input_ids"].tolist() != tokenized_dataset2["input_ids"].tolist()


@pytest.mark.parametrize("column_name", ["text", "premise"])
def test_pretokenize_runner_save_dataset_locally(
    tmp_path: Path, texts_file: str, column_name: str
) -> None:
    save_path = tmp_path / "ds"
    cfg = PretokenizeRunnerConfig(
        tokenizer_name="tiny-pydoc-gpt2",
        context_size=10,
        num_proc=2,
        shuffle=True,
        save_path=str(save_path),
        dataset_path=texts_file,
        split="train",  # 5.6.0's test slices a hub split ("train[:20]")
        column_name=column_name,
        begin_batch_token="bos",
        sequence_separator_token="eos",
    )
    dataset: Any = PretokenizeRunner(cfg).run()
    assert save_path.exists()
    loaded_dataset = Dataset.load_from_disk(str(save_path))
    assert len(dataset) == len(loaded_dataset)
    assert dataset["input_ids"].tolist() == loaded_dataset["input_ids"].tolist()  # type: ignore
    with open(save_path / "sae_lens.json") as f:
        metadata_dict = json.load(f)
    assert metadata_dict["original_dataset"] == texts_file
    assert metadata_dict["original_split"] == "train"
    assert metadata_dict["original_column_name"] == column_name
    assert metadata_dict["context_size"] == 10
    assert metadata_dict["shuffled"] is True
    assert metadata_dict["begin_batch_token"] == "bos"
    assert metadata_dict["begin_sequence_token"] is None
    assert metadata_dict["sequence_separator_token"] == "eos"
    assert metadata_dict["sae_lens_version"] == __version__


def test_pretokenize_runner_streaming_dataset(texts_file: str) -> None:
    def run(streaming: bool, num_proc: int) -> Any:
        cfg = PretokenizeRunnerConfig(
            tokenizer_name="tiny-pydoc-gpt2",
            context_size=10,
            num_proc=num_proc,
            dataset_path=texts_file,
            split="train",
            streaming=streaming,
        )
        return PretokenizeRunner(cfg).run()

    streamed = run(streaming=True, num_proc=1)
    assert isinstance(streamed, IterableDataset)
    first = next(iter(streamed))["input_ids"]
    assert isinstance(first, torch.Tensor) and first.shape == (10,)
    assert not isinstance(run(streaming=False, num_proc=2), IterableDataset)


def test_streamed_rows_equal_the_unstreamed_ones_and_save_in_full(
    tmp_path: Path, texts_file: str
) -> None:
    options: dict[str, Any] = dict(
        tokenizer_name="tiny-pydoc-gpt2", context_size=10, num_proc=1, shuffle=False
    )
    cfg = PretokenizeRunnerConfig(dataset_path=texts_file, streaming=True, **options)
    streamed = torch.stack([row["input_ids"] for row in PretokenizeRunner(cfg).run()])
    cfg = PretokenizeRunnerConfig(dataset_path=texts_file, **options)
    assert torch.equal(streamed, PretokenizeRunner(cfg).run()["input_ids"])  # type: ignore[index]
    save_path = tmp_path / "streamed"
    cfg = PretokenizeRunnerConfig(
        dataset_path=texts_file, streaming=True, save_path=str(save_path), **options
    )
    saved: Any = PretokenizeRunner(cfg).run()  # a stream is saved in full
    assert torch.equal(saved["input_ids"], streamed)
    assert torch.equal(Dataset.load_from_disk(str(save_path))["input_ids"], streamed)


def test_pretokenize_runner_raises_error_when_num_proc_is_greater_than_1_and_streaming_is_true(
    texts_file: str,
) -> None:
    cfg = PretokenizeRunnerConfig(
        tokenizer_name="tiny-pydoc-gpt2",
        context_size=10,
        num_proc=2,
        dataset_path=texts_file,
        split="train",
        streaming=True,
    )
    with pytest.raises(ValueError):
        PretokenizeRunner(cfg).run()


def test_cache_activations_runner_result_columns_index_as_tensors(
    tmp_path: Path, texts_file: str
) -> None:
    cfg = CacheActivationsRunnerConfig(
        dataset_path=texts_file,
        model_name="tiny-pydoc-gpt2",
        model_batch_size=2,
        hook_name="blocks.0.hook_mlp_out",
        hook_layer=0,
        d_in=128,
        training_tokens=4 * 16,
        context_size=16,
        new_cached_activations_path=str(tmp_path / "cache"),
        device="cpu",
    )
    dataset = CacheActivationsRunner(cfg).run()
    dataset.set_format("torch")
    assert "token_ids" in dataset.features
    assert dataset["token_ids"].shape[1] == cfg.context_size  # type: ignore
    assert dataset["blocks.0.hook_mlp_out"].shape[:2] == dataset["token_ids"].shape  # type: ignore
