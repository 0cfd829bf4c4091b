"""CacheActivationsRunner: the cache holds the store's activations and token ids, trains
the same as streaming, survives a kill, refuses to overwrite, uploads (faked), has a CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset, load_from_disk
from huggingface_hub import HfApi

from sae_lens.cache_activations_runner import CacheActivationsRunner, main
from sae_lens.config import CacheActivationsRunnerConfig, LanguageModelSAERunnerConfig
from sae_lens.training.activations_store import ActivationsStore

HOOK = "blocks.0.hook_resid_post"
CTX = 16
# two model batches of 2 sequences per shard (d_in 128 float32 = 512 bytes per token)
SHARD_GB = 2 * 2 * CTX * 512 / 1e9


@pytest.fixture
def texts_file(tmp_path: Path) -> str:
    texts = [f"def f{i}(x):\n    return x * {i} + {i * i}  # value {i % 7}" for i in range(60)]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


def cache_config(texts_file: str, path: Path, **overrides: Any) -> CacheActivationsRunnerConfig:
    kwargs: dict[str, Any] = dict(
        dataset_path=texts_file,
        model_name="tiny-pydoc-gpt2",
        model_batch_size=2,
        hook_name=HOOK,
        hook_layer=0,
        d_in=128,
        training_tokens=5 * 64,
        context_size=CTX,
        new_cached_activations_path=str(path),
        buffer_size_gb=SHARD_GB,
        device="cpu",
        shuffle=False,
    )
    kwargs.update(overrides)
    return CacheActivationsRunnerConfig(**kwargs)


def streaming_store(model: Any, texts_file: str, **overrides: Any) -> ActivationsStore:
    kwargs: dict[str, Any] = dict(
        model=model,
        dataset=texts_file,
        streaming=True,
        hook_name=HOOK,
        hook_layer=0,
        hook_head_index=None,
        context_size=CTX,
        d_in=128,
        n_batches_in_buffer=4,
        total_training_tokens=10**4,
        store_batch_size_prompts=2,
        train_batch_size_tokens=16,
        prepend_bos=True,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
        seed=7,
    )
    kwargs.update(overrides)
    return ActivationsStore(**kwargs)


def columns(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    rows = dataset.with_format("torch")[:]
    return rows[HOOK], rows["token_ids"]


def test_cache_holds_the_streaming_activations_and_trains_the_same(
    texts_file: str, tmp_path: Path
) -> None:
    cfg = cache_config(texts_file, tmp_path / "cache")
    runner = CacheActivationsRunner(cfg)
    cached = runner.run()
    assert cached.num_rows == 20 and cached.features[HOOK].shape == (CTX, 128)

    live = streaming_store(runner.model, texts_file)
    acts, token_ids = live.get_buffer(10, shuffle=False)
    cached_acts, cached_tokens = columns(cached)
    assert torch.equal(cached_acts.reshape(-1, 1, 128), acts)
    assert torch.equal(cached_tokens.reshape(-1).long(), token_ids)

    reread = ActivationsStore.from_config(runner.model, cfg)  # the cache config itself
    assert reread.cached_activations_path == str(tmp_path / "cache")
    assert torch.equal(reread.get_buffer(10, shuffle=False)[0], acts)

    train_cfg = LanguageModelSAERunnerConfig(
        hook_name=HOOK,
        hook_layer=0,
        d_in=128,
        context_size=CTX,
        store_batch_size_prompts=2,
        n_batches_in_buffer=4,
        train_batch_size_tokens=16,
        seed=7,
        use_cached_activations=True,
        cached_activations_path=str(tmp_path / "cache"),
        dataset_path=texts_file,
        log_to_wandb=False,
        verbose=False,
    )
    from_cache = ActivationsStore.from_config(runner.model, train_cfg)
    live = streaming_store(runner.model, texts_file)
    for _ in range(6):
        assert torch.equal(from_cache.next_batch(), live.next_batch())


def test_shuffled_cache_holds_the_same_rows_in_another_order(
    texts_file: str, tmp_path: Path
) -> None:
    plain = CacheActivationsRunner(cache_config(texts_file, tmp_path / "plain")).run()
    shuffled = CacheActivationsRunner(
        cache_config(texts_file, tmp_path / "shuf", shuffle=True)
    ).run()
    plain_acts, plain_tokens = columns(plain)
    shuf_acts, shuf_tokens = columns(shuffled)
    assert not torch.equal(plain_tokens, shuf_tokens)
    order = [plain_tokens.tolist().index(row) for row in shuf_tokens.tolist()]
    assert sorted(order) == list(range(len(order)))
    assert torch.equal(shuf_acts, plain_acts[order])
    loaded = load_from_disk(str(tmp_path / "shuf"))
    assert torch.equal(columns(loaded)[1], shuf_tokens)  # the shuffle is on disk


def test_a_killed_run_resumes_from_its_complete_shards(
    texts_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = CacheActivationsRunner(cache_config(texts_file, tmp_path / "reference")).run()

    cfg = cache_config(texts_file, tmp_path / "cache")
    original_write = CacheActivationsRunner._write_shard

    def write_then_die_on_third(
        self: CacheActivationsRunner, table: Any, index: int, tmp_dir: Path
    ) -> None:
        if index == 2:  # killed half way through writing the shard
            (tmp_dir / "shard_00002.partial").mkdir()
            (tmp_dir / "shard_00002.partial" / "data-00000-of-00001.arrow").write_bytes(b"trunc")
            raise KeyboardInterrupt
        original_write(self, table, index, tmp_dir)

    monkeypatch.setattr(CacheActivationsRunner, "_write_shard", write_then_die_on_third)
    with pytest.raises(KeyboardInterrupt):
        CacheActivationsRunner(cfg).run()
    tmp_dir = tmp_path / "cache" / ".tmp_shards"
    assert sorted(p.name for p in tmp_dir.iterdir() if p.name.startswith("shard")) == [
        "shard_00000",
        "shard_00001",
        "shard_00002.partial",
    ]
    monkeypatch.setattr(CacheActivationsRunner, "_write_shard", original_write)

    with pytest.raises(ValueError, match=r"different config \(fields \['seed'\]\)"):
        CacheActivationsRunner(cache_config(texts_file, tmp_path / "cache", seed=1)).run()
    resumed = CacheActivationsRunner(cfg).run()
    for got, want in zip(columns(resumed), columns(expected), strict=True):
        assert torch.equal(got, want)
    assert not tmp_dir.exists()


def test_existing_output_is_never_overwritten(texts_file: str, tmp_path: Path) -> None:
    cfg = cache_config(texts_file, tmp_path / "cache", training_tokens=64)
    CacheActivationsRunner(cfg).run()
    with pytest.raises(FileExistsError, match="already holds a finished activation cache"):
        CacheActivationsRunner(cfg).run()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"is not empty \(\['notes.txt'\]\)"):
        CacheActivationsRunner(cache_config(texts_file, tmp_path / "other")).run()


def test_running_out_of_data_keeps_every_sequence_once(
    texts_file: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = cache_config(texts_file, tmp_path / "cache", training_tokens=10**5)
    runner = CacheActivationsRunner(cfg)
    with caplog.at_level(logging.WARNING):
        cached = runner.run()
    n_sequences = sum(1 for _ in _all_sequences(runner.model, texts_file))
    assert cached.num_rows == n_sequences - n_sequences % 2  # whole model batches only
    assert "The dataset ran out" in caplog.text


def _all_sequences(model: Any, texts_file: str) -> list[torch.Tensor]:
    store = streaming_store(model, texts_file)
    sequences = []
    while store.epoch == 0:
        sequences.append(store.get_batch_tokens(1)[0])
    return sequences[:-1]  # the last one came from the next epoch


def test_push_to_hub_uploads_the_cache_and_its_config(
    texts_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[dict[str, Any]] = []
    uploaded: list[dict[str, Any]] = []
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, **kw: pushed.append({"rows": len(self), **kw})
    )
    monkeypatch.setattr(
        HfApi,
        "upload_file",
        lambda self, **kw: uploaded.append(
            {**kw, "content": kw["path_or_fileobj"].read().decode()}
        ),
    )
    cfg = cache_config(
        texts_file, tmp_path / "cache", training_tokens=64, hf_repo_id="me/acts", hf_num_shards=2
    )
    CacheActivationsRunner(cfg).run()
    assert pushed == [
        {"rows": 4, "repo_id": "me/acts", "num_shards": 2, "private": False, "revision": "main"}
    ]
    assert [u["path_in_repo"] for u in uploaded] == ["cache_activations_runner_cfg.json"]
    assert json.loads(uploaded[0]["content"])["hook_name"] == HOOK


def test_command_line_help_lists_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--new_cached_activations_path" in out and "--buffer_size_gb" in out


def test_a_run_killed_while_moving_its_shards_into_place_resumes(
    texts_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sae_lens.cache_activations_runner as runner_module

    expected = CacheActivationsRunner(cache_config(texts_file, tmp_path / "reference")).run()
    cfg = cache_config(texts_file, tmp_path / "cache")
    moves = 0
    original_replace = runner_module.os.replace

    def replace_then_die_on_second_shard(src: Any, dst: Any) -> None:
        nonlocal moves
        if str(dst).endswith(".arrow") and Path(dst).parent == tmp_path / "cache":
            moves += 1
            if moves == 2:
                raise KeyboardInterrupt
        original_replace(src, dst)

    monkeypatch.setattr(runner_module.os, "replace", replace_then_die_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        CacheActivationsRunner(cfg).run()
    monkeypatch.setattr(runner_module.os, "replace", original_replace)
    moved = sorted(p.name for p in (tmp_path / "cache").glob("data-*.arrow"))
    assert len(moved) == 1 and moved[0].startswith("data-00000-of-")  # moved before the kill
    assert not (tmp_path / "cache" / "state.json").exists()  # not finished

    resumed = CacheActivationsRunner(cfg).run()
    for got, want in zip(columns(resumed), columns(expected), strict=True):
        assert torch.equal(got, want)
    assert not (tmp_path / "cache" / ".tmp_shards").exists()
