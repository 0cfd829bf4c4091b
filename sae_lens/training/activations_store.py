"""The activations store: streams token sequences from a dataset, runs the model up to the
hooked layer, and serves the activations at one hook point in shuffled training batches.

Data path: dataset rows -> `_TokenSequences` (pretokenized rows, or text tokenized on the
fly and concatenated into rows of `context_size`) -> model batches of
`store_batch_size_prompts` sequences -> activations [tokens, d_in] (seqpos slice, head
index, special tokens dropped) -> `_MixingBuffer`, which keeps a random half of what it
holds and serves the other half as batches [train_batch_size_tokens, 1, d_in].

Everything random comes from one private `torch.Generator` seeded with `seed`, and
`checkpoint_state()` / `load_checkpoint_state()` capture the whole position, so a resumed
store serves exactly the batches an uninterrupted one would have served.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import datasets
import torch
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from safetensors.torch import save_file
from tqdm import tqdm
from transformer_lens import HookedRootModule
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sae_lens import logger
from sae_lens.config import (
    CacheActivationsRunnerConfig,
    HfDataset,
    LanguageModelSAERunnerConfig,
)
from sae_lens.dataset_sources import find_tokens_column, load_any_dataset
from sae_lens.dtypes import dtype_from_name
from sae_lens.embedded import is_embedded_dataset, is_embedded_model, load_embedded_tokenizer
from sae_lens.fused_forward import FusedHookReader
from sae_lens.hook_activations import sae_view
from sae_lens.load_model import tokenizer_prepends_bos
from sae_lens.tokenization_and_batching import SequenceConcatenator

PRETOKENIZE_METADATA_FILE = "sae_lens.json"
CHECKPOINT_STATE_VERSION = 1
_NORMALIZE_WITH_FACTOR = "expected_average_only_in"
_TEXT_ROWS_PER_READ = 64  # text rows read from the dataset at once
_CHARS_PER_TOKEN = 4  # rough guess, to tokenize about one model batch of text at a time


class EndOfEpoch(StopIteration):
    """The dataset ran out; the store has already restarted it for the next epoch."""


class _StopForward(Exception):
    """Raised from the capture hook: nothing after the hooked activation is computed."""


class ActivationsStore:
    """Streams tokens, generates activations at `hook_name` and serves shuffled batches
    of them for SAE training (or reads them back from a disk cache)."""

    model: HookedRootModule
    dataset: HfDataset
    cached_activations_path: str | None
    cached_activation_dataset: Dataset | None = None
    tokens_column: Literal["tokens", "input_ids", "text", "problem"]
    hook_name: str
    hook_layer: int
    hook_head_index: int | None
    _dataloader: Iterator[Any] | None = None
    exclude_special_tokens: torch.Tensor | None = None
    device: torch.device

    @classmethod
    def from_cache_activations(
        cls, model: HookedRootModule, cfg: CacheActivationsRunnerConfig
    ) -> ActivationsStore:
        """A store reading the activations that `CacheActivationsRunner` wrote for `cfg`."""
        return cls(
            model=model,
            dataset=cfg.dataset_path,
            streaming=False,
            hook_name=cfg.hook_name,
            hook_layer=cfg.hook_layer,
            hook_head_index=None,
            context_size=cfg.context_size,
            d_in=cfg.d_in,
            n_batches_in_buffer=max(cfg.n_batches_in_buffer, 2),
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.model_batch_size,
            train_batch_size_tokens=cfg.model_batch_size,
            prepend_bos=False,
            normalize_activations="none",
            device=torch.device(cfg.device),
            dtype=cfg.dtype,
            cached_activations_path=cfg.new_cached_activations_path,
            seqpos_slice=cfg.seqpos_slice,
            seed=cfg.seed,
        )

    @classmethod
    def from_config(
        cls,
        model: HookedRootModule,
        cfg: LanguageModelSAERunnerConfig | CacheActivationsRunnerConfig,
        override_dataset: HfDataset | None = None,
    ) -> ActivationsStore:
        """A store for a training config (or a cache config: see `from_cache_activations`)."""
        if isinstance(cfg, CacheActivationsRunnerConfig):
            return cls.from_cache_activations(model, cfg)
        if override_dataset is None and cfg.dataset_path == "":
            raise ValueError("no dataset: set dataset_path in the config or pass override_dataset")
        device = torch.device(cfg.act_store_device)
        store = cls(
            model=model,
            dataset=override_dataset if override_dataset is not None else cfg.dataset_path,
            streaming=cfg.streaming,
            hook_name=cfg.hook_name,
            hook_layer=cfg.hook_layer,
            hook_head_index=cfg.hook_head_index,
            context_size=cfg.context_size,
            d_in=cfg.d_in,
            n_batches_in_buffer=cfg.n_batches_in_buffer,
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            prepend_bos=cfg.prepend_bos,
            normalize_activations=cfg.normalize_activations,
            device=device,
            dtype=cfg.dtype,
            cached_activations_path=cfg.cached_activations_path
            if cfg.use_cached_activations
            else None,
            model_kwargs=cfg.model_kwargs,
            autocast_lm=cfg.autocast_lm,
            dataset_trust_remote_code=cfg.dataset_trust_remote_code,
            seqpos_slice=cfg.seqpos_slice,
            exclude_special_tokens=_resolve_excluded_tokens(model, cfg.exclude_special_tokens),
            seed=cfg.seed,
        )
        store._check_train_batch_fits()
        return store

    @classmethod
    def from_sae(
        cls,
        model: HookedRootModule,
        sae: Any,
        context_size: int | None = None,
        dataset: HfDataset | str | None = None,
        streaming: bool = True,
        store_batch_size_prompts: int = 8,
        n_batches_in_buffer: int = 8,
        train_batch_size_tokens: int = 4096,
        total_tokens: int = 10**9,
        device: str = "cpu",
    ) -> ActivationsStore:
        """A store matching an SAE's config (hook, context size, dataset, normalisation)."""
        return cls(
            model=model,
            dataset=sae.cfg.dataset_path if dataset is None else dataset,
            d_in=sae.cfg.d_in,
            hook_name=sae.cfg.hook_name,
            hook_layer=sae.cfg.hook_layer,
            hook_head_index=sae.cfg.hook_head_index,
            context_size=sae.cfg.context_size if context_size is None else context_size,
            prepend_bos=sae.cfg.prepend_bos,
            streaming=streaming,
            store_batch_size_prompts=store_batch_size_prompts,
            train_batch_size_tokens=train_batch_size_tokens,
            n_batches_in_buffer=n_batches_in_buffer,
            total_training_tokens=total_tokens,
            normalize_activations=sae.cfg.normalize_activations,
            dataset_trust_remote_code=sae.cfg.dataset_trust_remote_code,
            dtype=sae.cfg.dtype,
            device=torch.device(device),
            seqpos_slice=tuple(sae.cfg.seqpos_slice),
        )

    def __init__(
        self,
        model: HookedRootModule,
        dataset: HfDataset | str,
        streaming: bool,
        hook_name: str,
        hook_layer: int,
        hook_head_index: int | None,
        context_size: int,
        d_in: int,
        n_batches_in_buffer: int,
        total_training_tokens: int,
        store_batch_size_prompts: int,
        train_batch_size_tokens: int,
        prepend_bos: bool,
        normalize_activations: str,
        device: torch.device | str,
        dtype: str | torch.dtype,
        cached_activations_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        autocast_lm: bool = False,
        dataset_trust_remote_code: bool | None = None,
        seqpos_slice: tuple[int | None, ...] = (None,),
        exclude_special_tokens: torch.Tensor | list[int] | None = None,
        seed: int = 42,
    ):
        self.model = model
        self.model_kwargs = model_kwargs or {}
        self.hook_name = hook_name
        self.hook_layer = hook_layer
        self.hook_head_index = hook_head_index
        self.context_size = context_size
        self.d_in = d_in
        self.n_batches_in_buffer = n_batches_in_buffer
        self.half_buffer_size = n_batches_in_buffer // 2
        self.total_training_tokens = total_training_tokens
        self.store_batch_size_prompts = store_batch_size_prompts
        self.train_batch_size_tokens = train_batch_size_tokens
        self.prepend_bos = prepend_bos
        self.normalize_activations = normalize_activations
        self.device = torch.device(device)
        self.dtype = dtype if isinstance(dtype, torch.dtype) else dtype_from_name(dtype)
        self.cached_activations_path = cached_activations_path
        self.autocast_lm = autocast_lm
        self.seqpos_slice = tuple(seqpos_slice)
        self.seed = seed
        self.exclude_special_tokens = (
            None
            if exclude_special_tokens is None
            else torch.as_tensor(exclude_special_tokens, dtype=torch.long, device=self.device)
        )
        self.estimated_norm_scaling_factor: float | None = None
        self._validate_sizes()
        self.sliced_context_size = len(range(context_size)[slice(*self.seqpos_slice)])
        if self.sliced_context_size == 0:
            raise ValueError(
                f"seqpos_slice {self.seqpos_slice} selects no positions of a context of {context_size}"
            )
        _check_hook_name(model, hook_name)
        _check_context_fits_model(model, context_size)

        self._generator = torch.Generator().manual_seed(seed)
        self._input_shuffles: list[tuple[int, int]] = []
        self._base_dataset = _single_split(
            load_any_dataset(
                dataset,
                split="train",
                streaming=streaming,
                trust_remote_code=bool(dataset_trust_remote_code),
            )
            if isinstance(dataset, str)
            else dataset
        )
        self.dataset = self._base_dataset
        self.tokens_column, self.is_dataset_tokenized = self._inspect_dataset(dataset)
        self.iterable_dataset: Iterator[Any] = iter(self.dataset)
        self._sequences = self._new_sequence_stream()
        self.cached_activation_dataset = self.load_cached_activation_dataset()
        self._cache_row = 0
        self._mixer: _MixingBuffer | None = None
        self._dataloader = None
        self._fused_reader = self._make_fused_reader()

    # ------------------------------------------------------------------ setup helpers

    def _make_fused_reader(self) -> FusedHookReader | None:
        """The fused forward for HookedTransformers it reproduces (see
        sae_lens.fused_forward); None means the model's own forward is used."""
        if self.model_kwargs:
            return None  # forward kwargs only the model's own forward understands
        reader = FusedHookReader.for_model(self.model, self.hook_name)
        if reader is None or reader.layer > self.hook_layer:
            return None  # the model's forward reports a wrong hook_layer clearly
        return reader

    def _validate_sizes(self) -> None:
        for name in ("context_size", "d_in", "store_batch_size_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_batches_in_buffer < 2:
            raise ValueError(
                f"n_batches_in_buffer must be at least 2 (half is kept for mixing), got {self.n_batches_in_buffer}"
            )
        if self.hook_head_index is not None and self.hook_head_index < 0:
            raise ValueError(f"hook_head_index must be >= 0, got {self.hook_head_index}")

    def _check_train_batch_fits(self) -> None:
        half_tokens = (
            self.half_buffer_size * self.store_batch_size_prompts * self.sliced_context_size
        )
        if not 0 < self.train_batch_size_tokens <= half_tokens:
            raise ValueError(
                f"train_batch_size_tokens ({self.train_batch_size_tokens}) must be between 1 and the "
                f"tokens in half the shuffle buffer ({half_tokens} = n_batches_in_buffer // 2 * "
                "store_batch_size_prompts * context positions): raise n_batches_in_buffer or "
                "store_batch_size_prompts"
            )

    def _inspect_dataset(self, dataset_arg: HfDataset | str) -> tuple[str, bool]:
        try:
            first = next(iter(self.dataset))
        except StopIteration:
            raise ValueError("the dataset is empty: it has no rows") from None
        column, is_tokenized = find_tokens_column(first.keys())
        if is_tokenized:
            row_length = len(first[column])
            if row_length < self.context_size:
                raise ValueError(
                    f"pretokenized dataset rows have {row_length} tokens, fewer than context_size "
                    f"{self.context_size}: lower context_size or pretokenize with a larger one"
                )
            if row_length > self.context_size:
                warnings.warn(
                    f"pretokenized dataset rows have {row_length} tokens but context_size is "
                    f"{self.context_size}: the end of each row is discarded",
                    RuntimeWarning,
                    stacklevel=2,
                )
            tokenizer = getattr(self.model, "tokenizer", None)
            if isinstance(dataset_arg, str) and tokenizer is not None:
                validate_pretokenized_dataset_tokenizer(dataset_arg, tokenizer)
        elif getattr(self.model, "tokenizer", None) is None:
            raise ValueError(
                f"the dataset holds text (column {column!r}) but the model has no tokenizer: "
                "give the model a tokenizer or use a pretokenized dataset"
            )
        else:
            logger.info("Dataset is not tokenized: tokenizing on the fly (pretokenizing is faster)")
        return column, is_tokenized

    def _new_sequence_stream(self) -> _TokenSequences:
        tokenize = None
        concatenator_factory = None
        if not self.is_dataset_tokenized:
            tokenizer = self.model.tokenizer  # type: ignore[attr-defined]
            tokenize = _text_tokenizer(tokenizer)
            bos = tokenizer.bos_token_id if self.prepend_bos else None
            size = self.context_size
            concatenator_factory = lambda: SequenceConcatenator(  # noqa: E731
                size, begin_batch_token_id=bos, sequence_separator_token_id=bos
            )
        return _TokenSequences(
            dataset=self.dataset,
            column=self.tokens_column,
            context_size=self.context_size,
            read_batch_size=max(self.store_batch_size_prompts, 1)
            if self.is_dataset_tokenized
            else _TEXT_ROWS_PER_READ,
            tokenize=tokenize,
            tokenize_chars=_CHARS_PER_TOKEN * self.context_size * self.store_batch_size_prompts,
            concatenator_factory=concatenator_factory,
        )

    def load_cached_activation_dataset(self) -> Dataset | None:
        """The activation cache at `cached_activations_path` (None if not using one), checked
        to hold `hook_name` activations of shape [context positions, d_in]."""
        if self.cached_activations_path is None:
            return None
        if not os.path.exists(self.cached_activations_path):
            raise FileNotFoundError(
                f"activation cache {self.cached_activations_path!r} does not exist: run "
                "CacheActivationsRunner first or fix cached_activations_path"
            )
        cache = datasets.load_from_disk(self.cached_activations_path)
        if not isinstance(cache, Dataset):
            raise ValueError(
                f"activation cache {self.cached_activations_path!r} is not a single Dataset"
            )
        if self.hook_name not in cache.column_names:
            raise ValueError(
                f"activation cache has columns {cache.column_names}, not the hook {self.hook_name!r}"
            )
        expected = (self.sliced_context_size, self.d_in)
        found = tuple(cache.features[self.hook_name].shape)
        if found != expected:
            raise ValueError(
                f"activation cache rows have shape {found}, expected (context positions, d_in) = {expected}"
            )
        if len(cache) < self.store_batch_size_prompts:
            raise ValueError(
                f"activation cache holds {len(cache)} sequences, fewer than one batch of "
                f"{self.store_batch_size_prompts}"
            )
        columns = [self.hook_name] + (["token_ids"] if "token_ids" in cache.column_names else [])
        return cache.with_format("torch", columns=columns)

    # ------------------------------------------------------------------ normalisation

    def set_norm_scaling_factor_if_needed(
        self, n_batches_for_norm_estimate: int = int(1e3)
    ) -> None:
        """Estimate the scaling factor when normalize_activations is 'expected_average_only_in'."""
        if (
            self.normalize_activations == _NORMALIZE_WITH_FACTOR
            and self.estimated_norm_scaling_factor is None
        ):
            self.estimated_norm_scaling_factor = self.estimate_norm_scaling_factor(
                n_batches_for_norm_estimate
            )

    def apply_norm_scaling_factor(self, activations: torch.Tensor) -> torch.Tensor:
        if self.estimated_norm_scaling_factor is None:
            raise ValueError(
                "estimated_norm_scaling_factor is not set: call set_norm_scaling_factor_if_needed() first"
            )
        return activations * self.estimated_norm_scaling_factor

    def unscale(self, activations: torch.Tensor) -> torch.Tensor:
        if self.estimated_norm_scaling_factor is None:
            raise ValueError(
                "estimated_norm_scaling_factor is not set: call set_norm_scaling_factor_if_needed() first"
            )
        return activations / self.estimated_norm_scaling_factor

    def get_norm_scaling_factor(self, activations: torch.Tensor) -> torch.Tensor:
        """sqrt(d_in) / mean L2 norm of `activations` [..., d_in]."""
        return (self.d_in**0.5) / activations.norm(dim=-1).mean()

    @torch.no_grad()
    def estimate_norm_scaling_factor(self, n_batches_for_norm_estimate: int = int(1e3)) -> float:
        """The factor that makes the mean activation norm sqrt(d_in), averaged over
        `n_batches_for_norm_estimate` training batches (which are consumed)."""
        if n_batches_for_norm_estimate < 1:
            raise ValueError(
                f"n_batches_for_norm_estimate must be >= 1, got {n_batches_for_norm_estimate}"
            )
        total = 0.0
        for _ in tqdm(
            range(n_batches_for_norm_estimate), desc="Estimating norm scaling factor", delay=2.0
        ):
            total += self._next_unscaled_batch().norm(dim=-1).mean().item()
        return self.d_in**0.5 / (total / n_batches_for_norm_estimate)

    def _check_scaling_ready(self) -> None:
        if (
            self.normalize_activations == _NORMALIZE_WITH_FACTOR
            and self.estimated_norm_scaling_factor is None
        ):
            raise ValueError(
                "estimated_norm_scaling_factor is not set: call set_norm_scaling_factor_if_needed() first"
            )

    def _scale_for_serving(self, activations: torch.Tensor) -> torch.Tensor:
        if self.normalize_activations == _NORMALIZE_WITH_FACTOR:
            return self.apply_norm_scaling_factor(activations)
        return activations

    # ------------------------------------------------------------------ input dataset

    def shuffle_input_dataset(self, seed: int, buffer_size: int = 1) -> None:
        """Shuffle the input dataset (and its shards; `buffer_size` matters for streaming
        datasets only) and read it from the start."""
        self._input_shuffles.append((seed, buffer_size))
        self.dataset = _shuffled(self.dataset, seed, buffer_size)
        self.reset_input_dataset()

    def reset_input_dataset(self) -> None:
        """Read the input dataset from its first row again."""
        self.iterable_dataset = iter(self.dataset)
        self._sequences = self._new_sequence_stream()

    @property
    def n_dataset_processed(self) -> int:
        """Dataset rows read so far, over all epochs."""
        return self._sequences.total_rows_read

    @property
    def epoch(self) -> int:
        """How many times the dataset was restarted after running out."""
        return self._sequences.epoch

    # ------------------------------------------------------------------ tokens and activations

    def get_batch_tokens(
        self, batch_size: int | None = None, raise_at_epoch_end: bool = False
    ) -> torch.Tensor:
        """The next `batch_size` (default `store_batch_size_prompts`) sequences, on the
        model's device. At the end of the dataset it restarts it (a new epoch); with
        `raise_at_epoch_end` it then raises `EndOfEpoch` (a StopIteration)."""
        batch_size = batch_size or self.store_batch_size_prompts
        rows: list[torch.Tensor] = []
        while len(rows) < batch_size:
            sequence = self._sequences.next()
            if sequence is not None:
                rows.append(sequence)
                continue
            rows_read = self._sequences.rows_read
            self._sequences.start_new_epoch()
            message = f"Ran out of tokens in the dataset after {rows_read} rows; starting epoch {self.epoch}"
            logger.info(message)
            if raise_at_epoch_end:
                raise EndOfEpoch(message)
        return torch.stack(rows).to(_model_device(self.model))

    @torch.no_grad()
    def get_activations(self, batch_tokens: torch.Tensor) -> torch.Tensor:
        """Activations at the hook for `batch_tokens` [batch, context]: [batch, context
        positions after seqpos_slice, 1, d_in], in the store's dtype and on its device."""
        acts = self._hook_activations(batch_tokens)
        out = torch.empty(acts.shape, dtype=self.dtype, device=self.device)
        out.copy_(acts)  # a normal tensor, usable in autograd
        return out.unsqueeze(2)

    def _hook_activations(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, positions after seqpos_slice, d_in] for tokens [batch, context], in the
        model's dtype and on its device: often a view of the model's inference-mode output,
        so callers copy it into their own buffers."""
        raw = self._run_model_to_hook(tokens)  # [batch, pos, ...] an inference tensor
        acts = raw[:, slice(*self.seqpos_slice)]
        return sae_view(acts, self.hook_name, self.d_in, self.hook_head_index)

    def _run_model_to_hook(self, tokens: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast(device_type=tokens.device.type, dtype=torch.bfloat16)
            if self.autocast_lm
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            if self._fused_reader is not None and self._fused_reader.can_run():
                return self._fused_reader(tokens)
            return self._run_hooked_forward(tokens)

    def _run_hooked_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own forward with a hook that captures the activation and stops."""
        captured: list[torch.Tensor] = []

        def capture(activation: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
            captured.append(activation)
            raise _StopForward

        try:
            self.model.run_with_hooks(
                tokens,
                fwd_hooks=[(self.hook_name, capture)],
                stop_at_layer=self.hook_layer + 1,
                prepend_bos=False,
                **self.model_kwargs,
            )
        except _StopForward:
            pass
        if not captured:
            raise ValueError(
                f"hook {self.hook_name!r} did not run before layer {self.hook_layer + 1}: "
                f"check that hook_layer ({self.hook_layer}) is the layer of hook_name"
            )
        return captured[0]

    def _next_activation_batch(
        self, raise_on_epoch_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activations [tokens, d_in] and token ids [tokens] (or None) of the next model
        batch (or cache chunk). The activations may be a view of the model's output: copy
        them before keeping them."""
        if self.cached_activation_dataset is not None:
            return self._next_cached_batch(raise_on_epoch_end)
        tokens = self.get_batch_tokens(raise_at_epoch_end=raise_on_epoch_end)
        acts = self._hook_activations(tokens).reshape(-1, self.d_in)  # copied by the callers
        token_ids = tokens[:, slice(*self.seqpos_slice)].reshape(-1).to(self.device)
        return acts, token_ids

    def _next_cached_batch(
        self, raise_on_epoch_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = self.cached_activation_dataset
        assert cache is not None
        n_rows = self.store_batch_size_prompts
        if self._cache_row + n_rows > len(cache):
            self._cache_row = 0
            self._sequences.epoch += 1
            message = f"Read the whole activation cache; starting epoch {self.epoch}"
            logger.info(message)
            if raise_on_epoch_end:
                raise EndOfEpoch(message)
        rows = cache[self._cache_row : self._cache_row + n_rows]
        self._cache_row += n_rows
        acts = rows[self.hook_name].to(device=self.device, dtype=self.dtype).reshape(-1, self.d_in)
        token_ids = rows.get("token_ids")
        if token_ids is not None:
            token_ids = token_ids.to(device=self.device, dtype=torch.long).reshape(-1)
        return acts, token_ids

    @torch.no_grad()
    def get_buffer(
        self,
        n_batches_in_buffer: int,
        raise_on_epoch_end: bool = False,
        shuffle: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activations of the next `n_batches_in_buffer` model batches, [tokens, 1, d_in],
        with their token ids [tokens] (None for a cache without token ids); shuffled
        together unless `shuffle=False`, and scaled when normalisation needs it."""
        n_per_batch = self.store_batch_size_prompts * self.sliced_context_size
        total = n_batches_in_buffer * n_per_batch
        acts = torch.empty((total, 1, self.d_in), dtype=self.dtype, device=self.device)
        token_ids: torch.Tensor | None = torch.empty(total, dtype=torch.long, device=self.device)
        for i in tqdm(range(n_batches_in_buffer), desc="Refilling buffer", leave=False, delay=2.0):
            batch_acts, batch_tokens = self._next_activation_batch(raise_on_epoch_end)
            acts[i * n_per_batch : (i + 1) * n_per_batch, 0] = batch_acts
            if batch_tokens is None:
                token_ids = None
            elif token_ids is not None:
                token_ids[i * n_per_batch : (i + 1) * n_per_batch] = batch_tokens
        if shuffle:
            permutation = torch.randperm(total, generator=self._generator).to(self.device)
            acts = acts[permutation]
            token_ids = None if token_ids is None else token_ids[permutation]
        if self.normalize_activations == _NORMALIZE_WITH_FACTOR:
            acts = self.apply_norm_scaling_factor(acts)
        return acts, token_ids

    # ------------------------------------------------------------------ shuffle buffer and batches

    def _get_mixer(self) -> _MixingBuffer:
        if self._mixer is None:
            half = self.half_buffer_size * self.store_batch_size_prompts * self.sliced_context_size
            capacity = 2 * half + 2 * max(self.train_batch_size_tokens, 1)
            self._mixer = _MixingBuffer(
                capacity, self.d_in, self.dtype, self.device, self._generator
            )
        return self._mixer

    def _fill_half(self, raise_on_epoch_end: bool) -> None:
        """Add `half_buffer_size` model batches of activations (special tokens dropped)."""
        mixer = self._get_mixer()
        for _ in tqdm(
            range(self.half_buffer_size), desc="Refilling buffer", leave=False, delay=2.0
        ):
            acts, token_ids = self._next_activation_batch(raise_on_epoch_end)
            if self.exclude_special_tokens is not None and token_ids is not None:
                acts = acts[~torch.isin(token_ids, self.exclude_special_tokens)]
            mixer.add(acts)

    @property
    def storage_buffer(self) -> torch.Tensor:
        """The half of the shuffle buffer kept back for mixing (scaled like served batches)."""
        mixer = self._get_mixer()
        if mixer.n_stored == 0:
            self._fill_half(raise_on_epoch_end=False)
        return self._scale_for_serving(mixer.stored_rows().unsqueeze(1))

    @property
    def dataloader(self) -> Iterator[torch.Tensor]:
        if self._dataloader is None:
            self._dataloader = self.get_data_loader()
        return self._dataloader

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        """Refill the shuffle buffer (keep half, add half) and return an iterator over
        the batches [train_batch_size_tokens, 1, d_in] of the half that is served."""
        self._check_train_batch_fits()
        mixer = self._get_mixer()
        mixer.release_served()
        if mixer.n_stored == 0:
            self._fill_half(raise_on_epoch_end=False)
        try:
            self._fill_half(raise_on_epoch_end=True)
        except EndOfEpoch:
            warnings.warn(
                "All samples in the training dataset have been used; starting a new epoch "
                "with the same samples (the shuffle buffer is emptied so epochs do not mix)",
                stacklevel=2,
            )
            mixer.clear()
            self._fill_half(raise_on_epoch_end=False)
            self._fill_half(raise_on_epoch_end=False)
        mixer.mix(self.train_batch_size_tokens)
        while mixer.n_queued == 0:  # special tokens dropped so many rows that no batch is full
            n_before = mixer.n_stored
            self._fill_half(raise_on_epoch_end=False)
            if mixer.n_stored == n_before:
                raise ValueError(
                    "exclude_special_tokens removed every token of a buffer refill: check the "
                    "excluded ids against the dataset"
                )
            mixer.mix(self.train_batch_size_tokens)
        return _ServedBatches(self)

    def next_batch(self) -> torch.Tensor:
        """The next training batch, [train_batch_size_tokens, 1, d_in]."""
        self._check_scaling_ready()
        try:
            return next(self.dataloader)
        except StopIteration:
            self._dataloader = self.get_data_loader()
            return next(self._dataloader)

    def _next_unscaled_batch(self) -> torch.Tensor:
        mixer = self._get_mixer()
        if self._dataloader is None or mixer.n_queued == 0:
            self._dataloader = self.get_data_loader()
        return mixer.next_rows(self.train_batch_size_tokens).unsqueeze(1)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A summary for logging (5.6.0 keys); use `checkpoint_state` to resume."""
        result = {"n_dataset_processed": torch.tensor(self.n_dataset_processed)}
        if self._mixer is not None and self._mixer.n_stored:
            result["storage_buffer_activations"] = self._mixer.stored_rows()
        if self.estimated_norm_scaling_factor is not None:
            result["estimated_norm_scaling_factor"] = torch.tensor(
                self.estimated_norm_scaling_factor
            )
        return result

    def save(self, file_path: str) -> None:
        """Write `state_dict()` to a safetensors file."""
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, file_path)

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this store is: a flat dict whose
        tensor values can go to safetensors and whose other values are JSON-serialisable
        (or the whole dict to `torch.save`)."""
        mixer = self._mixer
        empty = torch.zeros((0, self.d_in), dtype=self.dtype)
        state: dict[str, Any] = {
            "version": CHECKPOINT_STATE_VERSION,
            "compat": self._compat_signature(),
            "input_shuffles": [list(s) for s in self._input_shuffles],
            "cache_row": self._cache_row,
            "norm_scaling_factor": self.estimated_norm_scaling_factor,
            "generator_state": self._generator.get_state(),
            "dataloader_active": self._dataloader is not None,
            "buffer_stored": mixer.stored_rows().cpu() if mixer else empty,
            "buffer_queued": mixer.queued_rows().cpu() if mixer else empty,
        }
        for key, value in self._sequences.state_dict().items():
            state[f"sequences_{key}"] = value
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore `checkpoint_state()` output onto a freshly built store with the same
        configuration; afterwards it serves exactly the batches the saved one would have."""
        if state.get("version") != CHECKPOINT_STATE_VERSION:
            raise ValueError(
                f"activation store checkpoint has version {state.get('version')!r}, expected {CHECKPOINT_STATE_VERSION}"
            )
        found, expected = dict(state["compat"]), self._compat_signature()
        differing = sorted(k for k in expected if found.get(k) != expected[k])
        if differing:
            details = ", ".join(
                f"{k}: saved {found.get(k)!r} vs now {expected[k]!r}" for k in differing
            )
            raise ValueError(
                f"activation store checkpoint was made with a different configuration ({details})"
            )
        self.dataset = self._base_dataset
        self._input_shuffles = []
        for seed, buffer_size in state["input_shuffles"]:
            self._input_shuffles.append((int(seed), int(buffer_size)))
            self.dataset = _shuffled(self.dataset, int(seed), int(buffer_size))
        self.iterable_dataset = iter(self.dataset)
        self._sequences = self._new_sequence_stream()
        self._sequences.load_state_dict(
            {
                k.removeprefix("sequences_"): v
                for k, v in state.items()
                if k.startswith("sequences_")
            }
        )
        self._cache_row = int(state["cache_row"])
        factor = state["norm_scaling_factor"]
        self.estimated_norm_scaling_factor = None if factor is None else float(factor)
        self._generator.set_state(state["generator_state"])
        mixer = self._get_mixer()
        mixer.load(state["buffer_stored"].to(self.device), state["buffer_queued"].to(self.device))
        self._dataloader = _ServedBatches(self) if state["dataloader_active"] else None

    def _compat_signature(self) -> dict[str, Any]:
        return {
            "hook_name": self.hook_name,
            "hook_head_index": self.hook_head_index,
            "context_size": self.context_size,
            "d_in": self.d_in,
            "seqpos_slice": list(self.seqpos_slice),
            "store_batch_size_prompts": self.store_batch_size_prompts,
            "n_batches_in_buffer": self.n_batches_in_buffer,
            "train_batch_size_tokens": self.train_batch_size_tokens,
            "tokens_column": self.tokens_column,
            "dtype": str(self.dtype),
            "cached": self.cached_activations_path is not None,
        }


class _ServedBatches:
    """Iterator over the served half of the shuffle buffer: [batch, 1, d_in] batches."""

    def __init__(self, store: ActivationsStore):
        self._store = store
        self._mixer = store._get_mixer()

    def __iter__(self) -> _ServedBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self._mixer.n_queued == 0:
            raise StopIteration
        self._store._check_scaling_ready()
        rows = self._mixer.next_rows(self._store.train_batch_size_tokens)
        return self._store._scale_for_serving(rows.unsqueeze(1))


class _MixingBuffer:
    """Preallocated shuffle buffer of activation rows [capacity, d_in].

    `stored` lists the slots kept for mixing (in order), `queue` the slots of the served
    half still to be served, `free` the rest. New rows are written into free slots in
    place; `mix` permutes the stored rows and moves all full batches of the larger half
    to the queue, leaving the rest stored.
    """

    def __init__(
        self,
        capacity: int,
        d_in: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator,
    ):
        self.pool = torch.empty((capacity, d_in), dtype=dtype, device=device)
        self._generator = generator
        self._slots = torch.arange(capacity, device=device)
        self.clear()

    def clear(self) -> None:
        self.free = self._slots
        self.stored = self._slots[:0]
        self.queue = self._slots[:0]

    @property
    def n_stored(self) -> int:
        return int(self.stored.numel())

    @property
    def n_queued(self) -> int:
        return int(self.queue.numel())

    def release_served(self) -> None:
        """Drop what is left of the served half (its slots become free)."""
        self.free = torch.cat([self.queue, self.free])
        self.queue = self._slots[:0]

    def add(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        if n > self.free.numel():
            raise RuntimeError(f"shuffle buffer overflow: {n} rows, {self.free.numel()} free slots")
        slots, self.free = self.free[:n], self.free[n:]
        self.pool.index_copy_(0, slots, rows.to(device=self.pool.device, dtype=self.pool.dtype))
        self.stored = torch.cat([self.stored, slots])

    def mix(self, batch_size: int) -> None:
        total = self.n_stored
        permutation = torch.randperm(total, generator=self._generator).to(self.stored.device)
        mixed = self.stored[permutation]
        n_served = ((total - total // 2) // batch_size) * batch_size
        self.stored, self.queue = mixed[: total - n_served], mixed[total - n_served :]

    def next_rows(self, n: int) -> torch.Tensor:
        slots, self.queue = self.queue[:n], self.queue[n:]
        self.free = torch.cat([self.free, slots])
        return self.pool.index_select(0, slots)

    def stored_rows(self) -> torch.Tensor:
        return self.pool.index_select(0, self.stored)

    def queued_rows(self) -> torch.Tensor:
        return self.pool.index_select(0, self.queue)

    def load(self, stored: torch.Tensor, queued: torch.Tensor) -> None:
        """Put saved stored and queued rows back (their order is what matters)."""
        n_stored, n_queued = stored.shape[0], queued.shape[0]
        if n_stored + n_queued > self._slots.numel():
            raise ValueError("saved shuffle buffer is larger than this store's buffer")
        self.clear()
        self.pool[:n_stored] = stored
        self.pool[n_stored : n_stored + n_queued] = queued
        self.stored = self._slots[:n_stored]
        self.queue = self._slots[n_stored : n_stored + n_queued]
        self.free = self._slots[n_stored + n_queued :]


class _TokenSequences:
    """Sequences of `context_size` tokens read from a dataset, with a resumable position.

    Pretokenized rows are cut to `context_size`; text rows are tokenized in groups of about
    `tokenize_chars` characters (so long documents are not tokenized far ahead) and
    concatenated by a `SequenceConcatenator`. The position is the number of rows read
    in this epoch plus the concatenator's state; rows read ahead are not part of it.
    """

    def __init__(
        self,
        dataset: Dataset | IterableDataset,
        column: str,
        context_size: int,
        read_batch_size: int,
        tokenize: Callable[[list[str]], list[torch.Tensor]] | None,
        concatenator_factory: Callable[[], SequenceConcatenator] | None,
        tokenize_chars: int = 1,
    ):
        self._dataset = dataset
        self._column = column
        self._context_size = context_size
        self._read_batch_size = read_batch_size
        self._tokenize = tokenize
        self._tokenize_chars = tokenize_chars
        self._concatenator_factory = concatenator_factory
        self.epoch = 0
        self.total_rows_read = 0
        self._start(rows_read=0)

    def _start(self, rows_read: int) -> None:
        self.rows_read = rows_read
        self.sequences_this_epoch = 0
        self._ahead: list[torch.Tensor] = []  # converted rows, next one last
        self._unread: list[Any] = []  # raw rows read from the dataset, next one last
        self._batches = _iter_row_batches(
            self._dataset, self._column, rows_read, self._read_batch_size
        )
        self._concatenator = self._concatenator_factory() if self._concatenator_factory else None

    def start_new_epoch(self) -> None:
        if self.sequences_this_epoch == 0:
            raise ValueError(
                f"the dataset yields no sequence of {self._context_size} tokens: it is empty or "
                "its text is shorter than context_size"
            )
        self.epoch += 1
        self._start(rows_read=0)

    def next(self) -> torch.Tensor | None:
        """The next sequence, or None when this epoch's data is used up."""
        sequence = (
            self._next_tokenized() if self._concatenator is None else self._next_concatenated()
        )
        if sequence is not None:
            self.sequences_this_epoch += 1
        return sequence

    def _next_tokenized(self) -> torch.Tensor | None:
        row = self._next_row()
        if row is None:
            return None
        if row.shape[0] < self._context_size:
            raise ValueError(
                f"dataset row {self.rows_read} has {row.shape[0]} tokens, fewer than context_size {self._context_size}"
            )
        self._count_row()
        return row[: self._context_size]

    def _next_concatenated(self) -> torch.Tensor | None:
        concatenator = self._concatenator
        assert concatenator is not None
        while (sequence := concatenator.pop()) is None:
            tokens = self._next_row()
            if tokens is None:
                return None
            concatenator.push(tokens)
            self._count_row()
        return sequence

    def _count_row(self) -> None:
        self._ahead.pop()
        self.rows_read += 1
        self.total_rows_read += 1

    def _next_row(self) -> torch.Tensor | None:
        """The next unread row (tokens), read ahead in groups; None at the end."""
        if not self._ahead:
            if not self._unread:
                batch = next(self._batches, None)
                if batch is None:
                    return None
                self._unread = list(batch)[::-1]
            group = self._take_group()
            rows = self._tokenize(group) if self._tokenize else [_as_token_tensor(r) for r in group]
            self._ahead = rows[::-1]
        return self._ahead[-1]

    def _take_group(self) -> list[Any]:
        """The raw rows to convert next: every row read for tokens; for text, rows adding
        up to about `tokenize_chars` characters (at least one)."""
        if self._tokenize is None:
            group, self._unread = self._unread[::-1], []
            return group
        group: list[Any] = []
        n_chars = 0
        while self._unread and (not group or n_chars < self._tokenize_chars):
            group.append(self._unread.pop())
            n_chars += len(group[-1])
        return group

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "rows_read": self.rows_read,
            "total_rows_read": self.total_rows_read,
            "count_this_epoch": self.sequences_this_epoch,
        }
        if self._concatenator is not None:
            concat = self._concatenator.state_dict()
            state.update(
                concat_row=concat["row"],
                concat_pending=concat["pending"],
                concat_is_start=concat["is_start"],
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.total_rows_read = int(state["total_rows_read"])
        self._start(rows_read=int(state["rows_read"]))
        self.sequences_this_epoch = int(state["count_this_epoch"])
        if self._concatenator is not None:
            self._concatenator.load_state_dict(
                {
                    "row": state["concat_row"],
                    "pending": state["concat_pending"],
                    "is_start": state["concat_is_start"],
                }
            )


def _iter_row_batches(
    dataset: Dataset | IterableDataset, column: str, start: int, batch_size: int
) -> Iterator[Sequence[Any]]:
    """Values of `column` in groups of `batch_size` rows, from row `start` on."""
    if isinstance(dataset, Dataset):
        formatted = dataset.with_format("torch" if column in ("tokens", "input_ids") else None)
        for i in range(start, len(dataset), batch_size):
            yield formatted[i : i + batch_size][column]
        return
    source = dataset.skip(start) if start else dataset
    for batch in source.iter(batch_size=batch_size):
        yield batch[column]


def _as_token_tensor(row: Any) -> torch.Tensor:
    return torch.as_tensor(row, dtype=torch.long).reshape(-1)


def _text_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
) -> Callable[[list[str]], list[torch.Tensor]]:
    """Tokenize texts like TransformerLens' `to_tokens(text, prepend_bos=False)`."""
    strip_bos = tokenizer_prepends_bos(tokenizer)
    bos = tokenizer.bos_token_id

    def tokenize(texts: list[str]) -> list[torch.Tensor]:
        rows = tokenizer(texts, verbose=False)["input_ids"]
        if strip_bos:
            rows = [row[1:] if row and row[0] == bos else row for row in rows]
        return [torch.tensor(row, dtype=torch.long) for row in rows]

    return tokenize


def _shuffled(
    dataset: Dataset | IterableDataset, seed: int, buffer_size: int
) -> Dataset | IterableDataset:
    if isinstance(dataset, IterableDataset):
        return dataset.shuffle(seed=seed, buffer_size=buffer_size)
    return dataset.shuffle(seed=seed)


def _single_split(dataset: HfDataset) -> Dataset | IterableDataset:
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        if "train" not in dataset:
            raise ValueError(
                f"dataset has splits {list(dataset)} and no 'train' split: pass one split"
            )
        return dataset["train"]
    return dataset


def _model_device(model: HookedRootModule) -> torch.device:
    if hasattr(model, "W_E"):
        return model.W_E.device  # type: ignore[return-value]
    return next(model.parameters()).device


def _model_context_limit(model: HookedRootModule) -> int | None:
    cfg = getattr(model, "cfg", None)
    if isinstance(getattr(cfg, "n_ctx", None), int):
        return cfg.n_ctx  # type: ignore[union-attr]
    hf_config = getattr(getattr(model, "model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(hf_config, name, None), int):
            return getattr(hf_config, name)
    return None


def _check_context_fits_model(model: HookedRootModule, context_size: int) -> None:
    limit = _model_context_limit(model)
    if limit is not None and context_size > limit:
        raise ValueError(f"context_size {context_size} exceeds the model's context length {limit}")


def _check_hook_name(model: HookedRootModule, hook_name: str) -> None:
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None and hook_name not in hook_dict:
        examples = ", ".join(list(hook_dict)[:4])
        raise ValueError(
            f"hook_name {hook_name!r} is not a hook point of the model (e.g. {examples})"
        )


def _resolve_excluded_tokens(
    model: HookedRootModule, exclude: bool | list[int]
) -> list[int] | None:
    if exclude is False:
        return None
    if exclude is True:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(
                "exclude_special_tokens=True needs a model with a tokenizer; pass token ids instead"
            )
        return _special_token_ids(tokenizer)
    return list(exclude)


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """BOS, EOS, PAD and every other special token id of `tokenizer`."""
    ids = set(tokenizer.all_special_ids)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            ids.add(value)
    return sorted(ids)


def validate_pretokenized_dataset_tokenizer(
    dataset_path: str, model_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Raise if the pretokenize metadata (sae_lens.json) next to `dataset_path` names a
    tokenizer whose vocabulary differs from `model_tokenizer`'s. Does nothing when there
    is no metadata or the named tokenizer cannot be loaded."""
    metadata = _read_pretokenize_metadata(dataset_path)
    if metadata is None or not metadata.get("tokenizer_name"):
        return
    tokenizer_name = metadata["tokenizer_name"]
    try:
        dataset_tokenizer = (
            load_embedded_tokenizer()
            if is_embedded_model(tokenizer_name)
            else AutoTokenizer.from_pretrained(tokenizer_name)
        )
    except (OSError, ValueError) as error:
        logger.info(f"Cannot load tokenizer {tokenizer_name!r} to check the dataset: {error}")
        return
    if dataset_tokenizer.get_vocab() != model_tokenizer.get_vocab():
        raise ValueError(
            f"dataset {dataset_path!r} was tokenized with {tokenizer_name!r}, whose vocabulary "
            "differs from the model's tokenizer: pretokenize it with the model's tokenizer"
        )


def _read_pretokenize_metadata(dataset_path: str) -> dict[str, Any] | None:
    if is_embedded_dataset(dataset_path):
        return None
    if os.path.exists(dataset_path):
        folder = dataset_path if os.path.isdir(dataset_path) else os.path.dirname(dataset_path)
        path = os.path.join(folder, PRETOKENIZE_METADATA_FILE)
        if not os.path.isfile(path):
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(dataset_path, PRETOKENIZE_METADATA_FILE, repo_type="dataset")
        except Exception as error:  # hub unreachable, no such repo or file: nothing to check
            logger.info(f"No {PRETOKENIZE_METADATA_FILE} found for {dataset_path!r}: {error}")
            return None
    with open(path) as f:
        return json.load(f)


def permute_together(
    tensors: Sequence[torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """Apply one random permutation of the first dimension to all `tensors`."""
    permutation = torch.randperm(tensors[0].shape[0], generator=generator).to(tensors[0].device)
    return tuple(t[permutation] for t in tensors)
