"""Write a model's activations at one hook to disk, for training SAEs without re-running the
model (`use_cached_activations=True`).

Format (as SAELens 5.6.0): a Hugging Face dataset saved with `save_to_disk` holding one row
per sequence, a column named after the hook ([context positions, d_in]) and `token_ids`
([context positions], int32). The run writes shards of at most `buffer_size_gb` into
`<path>/.tmp_shards/`, each under a temporary name renamed when complete, and records its
progress (shards done, data position) after each one; rerunning the same config after a
kill resumes from the last complete shard. At the end the shards' arrow files are moved
into `<path>` (no copy) beside `cache_activations_runner_cfg.json`.

Command line: `python -m sae_lens.cache_activations_runner --help` (every config field is a
flag, `--config FILE` supplies values that flags override).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from datasets import Array2D, Dataset, Features, Value
from datasets import Sequence as SequenceFeature
from tqdm import tqdm
from transformer_lens import HookedRootModule

from sae_lens import logger
from sae_lens.allocator import freed_memory_reused
from sae_lens.cli_support import (
    CommandLineParser,
    check_dataset_path,
    check_device,
    check_model_name,
    exit_code,
    layer_of_hook,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import CacheActivationsRunnerConfig, LanguageModelSAERunnerConfig
from sae_lens.config_help import CACHE_FIELD_HELP
from sae_lens.dataset_sources import tokenized_row_length
from sae_lens.dtypes import DTYPE_MAP as DTYPE_MAP  # 5.6.0 re-export
from sae_lens.load_model import load_model
from sae_lens.training.activations_store import ActivationsStore, EndOfEpoch
from sae_lens.training.dataset_metadata import push_dataset_with_metadata
from sae_lens.training.shared_forward import SharedForward, SharedForwardStore
from sae_lens.training.store_arguments import cache_store_arguments

CONFIG_FILE = "cache_activations_runner_cfg.json"
TMP_DIR = ".tmp_shards"
PROGRESS_FILE = "progress.json"
STORE_STATE_FILE = "store_state.pt"
_SHARD_FILE = "data-00000-of-00001.arrow"
# What the final folder holds before state.json marks it finished.
_CONSOLIDATED = re.compile(
    rf"data-\d{{5}}-of-\d{{5}}\.arrow|dataset_info\.json|{re.escape(CONFIG_FILE)}"
)
_ROWS_PER_WRITE = 256
# Config fields that do not change what is written: a resumed run may differ in these.
_FIELDS_FREE_ON_RESUME = frozenset(
    {
        "device",
        "compile_llm",
        "llm_compilation_mode",
        "reuse_freed_memory",
        "new_cached_activations_path",
        "hf_repo_id",
        "hf_num_shards",
        "hf_revision",
        "hf_is_private_repo",
    }
)


class CacheActivationsRunner:
    """Caches the activations a `CacheActivationsRunnerConfig` describes; `run()` writes
    them and returns the cached dataset."""

    def __init__(self, cfg: CacheActivationsRunnerConfig, override_dataset: Dataset | None = None):
        self.cfg = cfg
        assert cfg.new_cached_activations_path is not None
        _refuse_output_dir(Path(cfg.new_cached_activations_path))  # before loading the model
        self.model: HookedRootModule = load_model(
            model_class_name=cfg.model_class_name,
            model_name=cfg.model_name,
            device=cfg.device,
            model_from_pretrained_kwargs=cfg.model_from_pretrained_kwargs,
        )
        # with extra_hooks: one store per hook, fed by one model forward (the first store's
        # token stream and position are the cache's)
        store_class = SharedForwardStore if cfg.extra_hooks else ActivationsStore
        hooks = {cfg.hook_name: (cfg.hook_layer, cfg.d_in)}
        hooks |= {h: (layer_of_hook(h), width) for h, width in cfg.extra_hooks.items()}
        self.stores = [
            store_class(
                model=self.model,
                dataset=override_dataset if override_dataset is not None else cfg.dataset_path,
                streaming=cfg.streaming,
                train_batch_size_tokens=-1,
                prepend_bos=cfg.prepend_bos,
                device=torch.device("cpu"),  # written to disk from here
                model_kwargs=cfg.model_kwargs,
                autocast_lm=cfg.autocast_lm,
                dataset_trust_remote_code=cfg.dataset_trust_remote_code,
                # what the store reading the cache back uses too
                **{
                    **cache_store_arguments(cfg),
                    "hook_name": hook,
                    "hook_layer": layer,
                    "d_in": d_in,
                },
            )
            for hook, (layer, d_in) in hooks.items()
        ]
        if cfg.extra_hooks:
            SharedForward(self.stores)  # type: ignore[arg-type]
        self.activations_store = self.stores[0]
        self._check_d_in()
        if cfg.compile_llm:
            self.activations_store.compile_model_forward(cfg.llm_compilation_mode)
        self.context_size = cfg.sliced_context_size
        self.features = Features(
            {
                **{
                    store.hook_name: Array2D(shape=(self.context_size, store.d_in), dtype=cfg.dtype)
                    for store in self.stores
                },
                "token_ids": SequenceFeature(Value(dtype="int32"), length=self.context_size),
            }
        )

    def _check_d_in(self) -> None:
        """Fail before anything is written when `d_in` is not the width of the activation
        at the hook: one forward of one sequence of token 0 (the data stream is untouched)."""
        tokens = torch.zeros((1, self.cfg.context_size), dtype=torch.long, device=self.cfg.device)
        for store in self.stores:
            store.get_activations(tokens)

    def __str__(self) -> str:
        cfg = self.cfg
        n_tokens = cfg.n_seq_in_dataset * self.context_size
        return (
            "Activation cache runner:\n"
            f"  tokens to cache: {n_tokens}\n"
            f"  shards: {cfg.n_buffers} of {cfg.n_tokens_in_buffer} tokens\n"
            f"  disk space: {n_tokens * cfg.bytes_per_token / 1e9:.2f} GB\n"
            f"  configuration: {cfg}"
        )

    def run(self) -> Dataset:
        """Write (or finish writing) the cache and return it as a Dataset."""
        cfg = self.cfg
        assert cfg.new_cached_activations_path is not None
        final_dir = Path(cfg.new_cached_activations_path)
        tmp_dir = final_dir / TMP_DIR
        created = not final_dir.exists()
        _refuse_output_dir(final_dir)
        final_dir.mkdir(parents=True, exist_ok=True)
        try:
            first_shard = self._resume_or_start(tmp_dir)
            with freed_memory_reused(cfg.device, cfg.reuse_freed_memory):
                self._write_shards(first_shard, tmp_dir)
            dataset = self._consolidate(tmp_dir, final_dir)
        except BaseException:
            _remove_if_nothing_cached(tmp_dir, final_dir if created else None)
            raise
        if cfg.hf_repo_id is not None:
            self._push_to_hub(dataset)
        return dataset

    # ------------------------------------------------------------------ shards

    def _collect_shard(self) -> tuple[pa.Table | None, bool]:
        """The next buffer of sequences as an arrow table (None if empty), and whether the
        dataset ran out while filling it."""
        cfg = self.cfg
        parts: list[pa.Table] = []
        exhausted = False
        for _ in range(cfg.n_batches_in_buffer):
            columns = {}
            try:
                for store in self.stores:  # the first store ends the epoch, before the others
                    acts, token_ids = store.get_buffer(1, raise_on_epoch_end=True, shuffle=False)
                    columns[store.hook_name] = acts.view(-1, self.context_size, store.d_in).numpy()
            except EndOfEpoch:
                exhausted = True
                break
            assert token_ids is not None
            columns["token_ids"] = token_ids.view(-1, self.context_size).to(torch.int32).numpy()
            parts.append(Dataset.from_dict(columns, features=self.features).data.table)
        return (pa.concat_tables(parts) if parts else None), exhausted

    def _write_shard(self, table: pa.Table, index: int, tmp_dir: Path) -> None:
        """Write the shard (rows permuted if `shuffle`) under a temporary name, rename it,
        then record the progress."""
        partial = tmp_dir / f"shard_{index:05d}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        order = (
            torch.randperm(
                table.num_rows, generator=torch.Generator().manual_seed(self.cfg.seed + index)
            )
            if self.cfg.shuffle
            else torch.arange(table.num_rows)
        )
        _write_arrow_dataset(table, order, self._legacy_features(), partial)
        os.replace(partial, tmp_dir / f"shard_{index:05d}")
        _atomic_torch_save(self.activations_store.checkpoint_state(), tmp_dir / STORE_STATE_FILE)
        _atomic_write_text(
            tmp_dir / PROGRESS_FILE,
            json.dumps(
                {"config": _content_config(self.cfg), "completed_shards": index + 1}, indent=2
            ),
        )

    def _write_shards(self, first_shard: int, tmp_dir: Path) -> None:
        """Cache shards `first_shard`... until `n_buffers` or the end of the dataset."""
        cfg = self.cfg
        for index in tqdm(
            range(first_shard, cfg.n_buffers),
            desc="Caching activations",
            initial=first_shard,
            total=cfg.n_buffers,
        ):
            table, exhausted = self._collect_shard()
            if table is not None:
                self._write_shard(table, index, tmp_dir)
            if exhausted:
                n_written = index + (table is not None)
                logger.warning(f"The dataset ran out after {n_written} of {cfg.n_buffers} shards")
                break

    def _legacy_features(self) -> dict[str, Any]:
        """The features as `datasets` < 4 writes them ("Sequence", not "List"), which every
        `datasets` version reads: SAELens 5.6.0 needs datasets < 3."""
        return {
            **{
                store.hook_name: {
                    "shape": [self.context_size, store.d_in],
                    "dtype": self.cfg.dtype,
                    "_type": "Array2D",
                }
                for store in self.stores
            },
            "token_ids": {
                "feature": {"dtype": "int32", "_type": "Value"},
                "length": self.context_size,
                "_type": "Sequence",
            },
        }

    def _resume_or_start(self, tmp_dir: Path) -> int:
        """The index of the first shard to write: 0 for a fresh run, or after the shards a
        killed run completed (its data position is restored)."""
        progress_file = tmp_dir / PROGRESS_FILE
        if not progress_file.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_dir.mkdir(parents=True)
            return 0
        progress = json.loads(progress_file.read_text())
        saved, current = progress["config"], _content_config(self.cfg)
        differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differing:
            raise ValueError(
                f"{tmp_dir.parent} holds an unfinished cache made with a different config "
                f"(fields {differing}): use the same config to resume, or another path"
            )
        completed = int(progress["completed_shards"])
        for entry in tmp_dir.iterdir():
            if entry.name.startswith("shard_") and (
                entry.name.endswith(".partial") or int(entry.name[6:11]) >= completed
            ):
                shutil.rmtree(entry)
        state = torch.load(tmp_dir / STORE_STATE_FILE, weights_only=True)
        self.activations_store.load_checkpoint_state(state)
        logger.info(f"Resuming the activation cache after {completed} complete shards")
        return completed

    # ------------------------------------------------------------------ final dataset

    def _consolidate(self, tmp_dir: Path, final_dir: Path) -> Dataset:
        """Move every shard's arrow file into `final_dir` and describe them all in one
        state.json, so the shards load as one dataset without being rewritten."""
        shards = sorted(
            p for p in tmp_dir.iterdir() if p.is_dir() and not p.name.endswith(".partial")
        )
        if not shards:
            raise ValueError(
                "no activations were cached: the dataset yielded no full batch of sequences"
            )
        names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
        for shard, name in zip(shards, names, strict=True):
            _move_once(shard / _SHARD_FILE, final_dir / name)
        shutil.copyfile(shards[0] / "dataset_info.json", final_dir / "dataset_info.json")
        (final_dir / CONFIG_FILE).write_text(json.dumps(_json_config(self.cfg), indent=2))
        fingerprint = hashlib.sha256(
            json.dumps([_json_config(self.cfg), names]).encode()
        ).hexdigest()[:16]
        _write_state(final_dir, names, fingerprint)
        shutil.rmtree(tmp_dir)
        return Dataset.load_from_disk(str(final_dir))

    def _push_to_hub(self, dataset: Dataset) -> None:
        logger.info(f"Pushing the activation cache to {self.cfg.hf_repo_id}")
        push_dataset_with_metadata(
            dataset,
            self.cfg,
            CONFIG_FILE,
            json.dumps(_json_config(self.cfg), indent=2),
            commit_message="Add cache_activations_runner metadata",
        )


def _write_arrow_dataset(
    table: pa.Table, order: torch.Tensor, features: dict[str, Any], folder: Path
) -> None:
    """Write `table`'s rows in `order` as a one-file dataset that `load_from_disk` reads
    (an arrow stream, dataset_info.json, state.json), `features` in the schema metadata.
    Rows are taken in chunks, so no second copy of the table is made."""
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    schema = table.schema.with_metadata(metadata)
    with (
        pa.OSFile(str(folder / _SHARD_FILE), "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
    ):
        for chunk in order.split(_ROWS_PER_WRITE):
            writer.write_table(
                table.take(pa.array(chunk.numpy())).replace_schema_metadata(metadata)
            )
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    fingerprint = hashlib.sha256(f"{folder.name}:{table.num_rows}".encode()).hexdigest()[:16]
    _write_state(folder, [_SHARD_FILE], fingerprint)


def _write_state(folder: Path, data_files: list[str], fingerprint: str) -> None:
    state = {
        "_data_files": [{"filename": name} for name in data_files],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    _atomic_write_text(folder / "state.json", json.dumps(state, indent=2))


def _move_once(source: Path, target: Path) -> None:
    """Move `source` to `target`, where a run killed while moving the shards may already
    have moved it."""
    if source.exists():
        os.replace(source, target)
    elif not target.exists():
        raise FileNotFoundError(f"cached shard {source} is missing: delete {target.parent}")


def _refuse_output_dir(final_dir: Path) -> None:
    """Refuse a path that is a file, a finished cache, or a folder holding anything but an
    unfinished cache's temporary shards and the files a killed run had already moved out of
    them. Reads only: nothing is created."""
    if final_dir.exists() and not final_dir.is_dir():
        raise FileExistsError(
            f"new_cached_activations_path {str(final_dir)!r} is a file: give a folder"
        )
    for parent in final_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(
                    f"new_cached_activations_path {str(final_dir)!r} lies under "
                    f"{str(parent)!r}, which is a file: give a folder"
                )
            break
    if not final_dir.is_dir():
        return
    if (final_dir / "state.json").exists():
        raise FileExistsError(
            f"{final_dir} already holds a finished activation cache: delete it or choose another path"
        )
    unfinished = (final_dir / TMP_DIR / PROGRESS_FILE).exists()
    others = [
        p.name
        for p in final_dir.iterdir()
        if p.name != TMP_DIR and not (unfinished and _CONSOLIDATED.fullmatch(p.name))
    ]
    if others:
        raise FileExistsError(
            f"{final_dir} is not empty ({sorted(others)[:5]}): delete it or choose another path"
        )


def _remove_if_nothing_cached(tmp_dir: Path, created_dir: Path | None) -> None:
    """After a failed run that completed no shard: remove the temporary folder, and the
    output folder where this run created it, so nothing half-made is left behind."""
    if (tmp_dir / PROGRESS_FILE).exists():
        return  # complete shards to resume from
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if created_dir is not None and created_dir.is_dir() and not any(created_dir.iterdir()):
        created_dir.rmdir()


def _json_config(cfg: CacheActivationsRunnerConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def _content_config(cfg: CacheActivationsRunnerConfig) -> dict[str, Any]:
    return {k: v for k, v in _json_config(cfg).items() if k not in _FIELDS_FREE_ON_RESUME}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------ command line

PROG = "python -m sae_lens.cache_activations_runner"
_TEXT_CONTEXT_SIZE = 128  # context_size -1 on a text dataset, on the command line


def _cli_defaults() -> dict[str, Any]:
    """Where the config class has no default, the command line takes the training command
    line's: the embedded model and corpus, its hook, d_in, batch size and token count."""
    training = {f.name: f.default for f in fields(LanguageModelSAERunnerConfig)}
    names = ("dataset_path", "model_name", "hook_name", "d_in", "training_tokens")
    return {
        **{name: training[name] for name in names},
        "model_batch_size": training["store_batch_size_prompts"],
        "reuse_freed_memory": True,  # on the command line a long CPU run is the common case
    }


def build_cli_parser() -> CommandLineParser:
    """The parser of `python -m sae_lens.cache_activations_runner`."""
    parser = CommandLineParser(
        prog=PROG,
        description="Write a model's activations at one hook to disk, for training SAEs "
        "without re-running the model (use_cached_activations). Every "
        "CacheActivationsRunnerConfig field is a flag; with no flags it caches the embedded "
        "model's activations on the embedded corpus. Rerunning a killed run resumes it. "
        "Mistakes exit with code 2 and one line naming the culprit.",
    )
    parser.add_config_option()
    shown = {**_cli_defaults(), "hook_layer": "the first number in hook_name"}
    parser.add_fields(CacheActivationsRunnerConfig, CACHE_FIELD_HELP, shown_defaults=shown)
    return parser


def parse_cli_config(argv: Sequence[str]) -> CacheActivationsRunnerConfig:
    """The cache config from command-line arguments (`--config FILE`, then flags)."""
    values = parse_command_line(build_cli_parser(), argv, defaults=_cli_defaults())
    values.setdefault("hook_layer", layer_of_hook(values["hook_name"]))
    check_device(values.get("device", _default_device()))
    check_model_name(values.get("model_class_name", "HookedTransformer"), values["model_name"])
    check_dataset_path(values["dataset_path"])
    if values.get("new_cached_activations_path") is not None:
        _refuse_output_dir(Path(values["new_cached_activations_path"]))
    if values.get("context_size", -1) == -1:
        length = tokenized_row_length(
            values["dataset_path"], bool(values.get("dataset_trust_remote_code"))
        )
        values["context_size"] = _TEXT_CONTEXT_SIZE if length is None else length
        source = "its rows" if length is not None else "text dataset: the training default"
        print(f"context_size: {values['context_size']} ({source})")
    return CacheActivationsRunnerConfig(**values)


def _default_device() -> str:
    return next(f.default for f in fields(CacheActivationsRunnerConfig) if f.name == "device")


def main(args: Sequence[str] | None = None) -> int:
    """`python -m sae_lens.cache_activations_runner`; returns the exit code: 0 cached, 2 a
    mistake (one line on stderr, no finished-looking folder left), 130 interrupted."""
    argv = sys.argv[1:] if args is None else list(args)
    return exit_code(report_user_errors(lambda: _cache_from_command_line(argv)))


def _cache_from_command_line(argv: list[str]) -> int:
    cfg = parse_cli_config(argv)
    runner = CacheActivationsRunner(cfg)
    print(
        f"caching up to {cfg.n_seq_in_dataset * runner.context_size:,} tokens of "
        f"{cfg.dataset_path} at {cfg.model_name} {cfg.hook_name} into "
        f"{cfg.new_cached_activations_path} ({cfg.n_buffers} shard(s))",
        flush=True,
    )
    try:
        dataset = runner.run()
    except KeyboardInterrupt:
        print(
            "interrupted: rerun the same command to resume after the last complete shard",
            file=sys.stderr,
        )
        return 130
    n_tokens = len(dataset) * runner.context_size
    print(
        f"cached {len(dataset):,} sequences x {runner.context_size} tokens = {n_tokens:,} "
        f"activations of {cfg.hook_name} (d_in={cfg.d_in}, {cfg.dtype}, "
        f"{n_tokens * cfg.bytes_per_token / 1e9:.3f} GB) in {cfg.new_cached_activations_path}"
        + "".join(f"; {hook} (d_in={d_in}) beside it" for hook, d_in in cfg.extra_hooks.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
