"""The activations store: streams token sequences from a dataset, runs the model up to the
hooked layer, and serves the activations at one hook point in shuffled training batches.

Data path: dataset rows -> `TokenSequences` (token_stream: pretokenized rows, or text
tokenized on the fly and concatenated into rows of `context_size`) -> model batches of
`store_batch_size_prompts` sequences [batch, context] -> activations [tokens, d_in]
(model_forward; seqpos slice, head index, special tokens dropped), or rows read back from
a disk cache (cached_activations) -> `MixingBuffer` (mixing_buffer), which keeps a random
half of what it holds and serves the other half as batches [train_batch_size_tokens, 1,
d_in], scaled by the `ActivationScaler` (activation_scaler) when normalisation asks.
Inputs are checked before any work (store_inputs, dataset_metadata); configs map onto the
constructor through store_arguments; store_checkpoint holds the checkpoint format.
A transcoder's store (`output_hook`) serves rows of input and target (transcoder_rows).

Everything random comes from one private `torch.Generator` seeded with `seed`, and
`checkpoint_state()` / `load_checkpoint_state()` capture the whole position, so a resumed
store serves exactly the batches an uninterrupted one would have served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
from datasets import Dataset
from safetensors.torch import save_file
from tqdm import tqdm
from transformer_lens import HookedRootModule

from sae_lens import logger
from sae_lens.config import (
    CacheActivationsRunnerConfig,
    HfDataset,
    LanguageModelSAERunnerConfig,
)
from sae_lens.dataset_sources import load_any_dataset
from sae_lens.dtypes import DTYPE_MAP as DTYPE_MAP  # 5.6.0 re-export
from sae_lens.dtypes import dtype_from_name
from sae_lens.fused_forward import unsupported_reason
from sae_lens.hook_activations import sae_view
from sae_lens.sae import SAE as SAE  # 5.6.0 re-export
from sae_lens.tokenization_and_batching import (
    concat_and_batch_sequences as concat_and_batch_sequences,  # 5.6.0 re-export
)
from sae_lens.training import model_forward as forward
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.cached_activations import CachedActivationReader, load_activation_cache
from sae_lens.training.dataset_metadata import (
    PRETOKENIZE_METADATA_FILE,
    validate_pretokenized_dataset_tokenizer,
)
from sae_lens.training.mixing_buffer import MixingBuffer, ServedBatches, permute_together
from sae_lens.training.model_forward import fused_reader_for, model_device, run_model_to_hook
from sae_lens.training.store_arguments import cache_store_arguments, hook_settings
from sae_lens.training.store_checkpoint import (
    CHECKPOINT_STATE_VERSION,
    compat_signature,
    pack_checkpoint,
    unpack_checkpoint,
)
from sae_lens.training.store_inputs import (  # and 5.6.0's helpers, imported from here
    _filter_buffer_acts as _filter_buffer_acts,
)
from sae_lens.training.store_inputs import (
    _get_special_token_ids as _get_special_token_ids,
)
from sae_lens.training.store_inputs import (
    check_context_fits_model,
    check_hook_name,
    check_sizes,
    check_train_batch_fits,
    inspect_dataset,
    resolve_excluded_tokens,
    sliced_positions,
)
from sae_lens.training.token_stream import (
    EndOfEpoch,
    TokenSequences,
    dataset_shard,
    iter_row_tokens,
    shuffled,
    single_split,
)
from sae_lens.training.transcoder_rows import OutputHook, resolve_d_out, split_input_target

__all__ = [
    "CHECKPOINT_STATE_VERSION",
    "PRETOKENIZE_METADATA_FILE",
    "ActivationsStore",
    "EndOfEpoch",
    "permute_together",
    "validate_pretokenized_dataset_tokenizer",
]


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
            train_batch_size_tokens=cfg.model_batch_size,
            prepend_bos=False,
            device=torch.device(cfg.device),
            cached_activations_path=cfg.new_cached_activations_path,
            **cache_store_arguments(cfg),
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
        resolve_d_out(model, cfg)  # a transcoder's d_out defaults to its output hook's width
        store = cls(
            model=model,
            dataset=override_dataset if override_dataset is not None else cfg.dataset_path,
            streaming=cfg.streaming,
            context_size=cfg.context_size,
            n_batches_in_buffer=cfg.n_batches_in_buffer,
            total_training_tokens=cfg.training_tokens,
            store_batch_size_prompts=cfg.store_batch_size_prompts,
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            device=torch.device(cfg.act_store_device),
            cached_activations_path=cfg.cached_activations_path
            if cfg.use_cached_activations
            else None,
            model_kwargs=cfg.model_kwargs,
            autocast_lm=cfg.autocast_lm,
            exclude_special_tokens=resolve_excluded_tokens(model, cfg.exclude_special_tokens),
            seed=cfg.seed,
            fused_forward=cfg.fused_forward,
            **hook_settings(cfg),
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
            context_size=sae.cfg.context_size if context_size is None else context_size,
            streaming=streaming,
            store_batch_size_prompts=store_batch_size_prompts,
            train_batch_size_tokens=train_batch_size_tokens,
            n_batches_in_buffer=n_batches_in_buffer,
            total_training_tokens=total_tokens,
            device=torch.device(device),
            **hook_settings(sae.cfg),
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
        fused_forward: bool = True,
        output_hook: OutputHook | None = None,
    ):
        self.model = model
        self.model_kwargs = model_kwargs or {}
        self.hook_name = hook_name
        self.hook_layer = hook_layer
        self.hook_head_index = hook_head_index
        self.context_size = context_size
        self.d_in = d_in
        self.output_hook = output_hook  # a transcoder's: rows [input (d_in) | target (d_out)]
        self.row_width = d_in + (0 if output_hook is None else output_hook.width)
        self.n_batches_in_buffer = n_batches_in_buffer
        self.half_buffer_size = n_batches_in_buffer // 2
        self.total_training_tokens = total_training_tokens
        self.store_batch_size_prompts = store_batch_size_prompts
        self.train_batch_size_tokens = train_batch_size_tokens
        self.prepend_bos = prepend_bos
        self._scaler = ActivationScaler(normalize_activations, d_in)
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
        check_sizes(
            context_size, d_in, store_batch_size_prompts, n_batches_in_buffer, hook_head_index
        )
        self.sliced_context_size = sliced_positions(context_size, self.seqpos_slice)
        check_hook_name(model, hook_name, hook_layer)
        if output_hook is not None:
            output_hook.check(model, normalize_activations, cached_activations_path)
        check_context_fits_model(model, context_size)

        self._generator = torch.Generator().manual_seed(seed)
        self._input_shuffles: list[tuple[int, int]] = []
        self._base_dataset = single_split(
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
        self.tokens_column, self.is_dataset_tokenized = inspect_dataset(
            self.dataset, dataset, context_size, getattr(model, "tokenizer", None)
        )
        self.reset_input_dataset()
        self.cached_activation_dataset = self.load_cached_activation_dataset()
        self._cache_reader = (
            None
            if self.cached_activation_dataset is None
            else CachedActivationReader(
                self.cached_activation_dataset,
                hook_name,
                store_batch_size_prompts,
                d_in,
                self.dtype,
                self.device,
            )
        )
        self._mixer: MixingBuffer | None = None
        self._dataloader = None
        # The fused forward reproduces the model's own, and steps aside whenever the model
        # is patched; `fused_forward=False` always runs the model's own forward.
        self.fused_forward = fused_forward
        self._fused_reader = (
            fused_reader_for(model, hook_name, hook_layer, self.model_kwargs)
            if fused_forward and output_hook is None
            else None
        )
        self._multi_reader = (
            forward.multi_reader_for(model, list(self.hook_layers), self.model_kwargs)
            if fused_forward and output_hook is not None
            else None
        )

    @property
    def hook_layers(self) -> dict[str, int]:
        """{hook name: layer} of every hook this store reads (a transcoder's: two)."""
        out = self.output_hook
        return {self.hook_name: self.hook_layer, **(out.hook_layers() if out else {})}

    def split_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(inputs [..., d_in], a transcoder's targets [..., d_out] or None) of rows."""
        return split_input_target(rows, self.d_in, self.output_hook is not None)

    def compile_model_forward(self, mode: str | None = None) -> None:
        """Compile the pass that computes the activations (`compile_llm`): the fused forward
        goes through `torch.compile`. A ValueError, before any work, when the fused forward
        does not serve this model and hook (compiling the model object would not touch
        the hooked forward the store runs)."""
        if self._fused_reader is None:
            reason = (
                "fused_forward=False"
                if not self.fused_forward
                else ("a transcoder's two hooks are not compiled yet" if self.output_hook else None)
                or unsupported_reason(self.model, self.hook_name)
                or ("model_kwargs are set" if self.model_kwargs else "hook_layer is below the hook")
            )
            raise ValueError(
                f"compile_llm needs the fused forward pass, which cannot read {self.hook_name!r} "
                f"of this model ({reason}); set compile_llm=False"
            )
        self._fused_reader.compile(mode)

    # ------------------------------------------------------------------ setup helpers

    def _check_train_batch_fits(self) -> None:
        check_train_batch_fits(
            self.train_batch_size_tokens,
            self.half_buffer_size * self.store_batch_size_prompts * self.sliced_context_size,
        )

    def load_cached_activation_dataset(self) -> Dataset | None:
        """The activation cache at `cached_activations_path` (None if not using one), checked
        to hold `hook_name` activations of shape [context positions, d_in]."""
        if self.cached_activations_path is None:
            return None
        return load_activation_cache(
            self.cached_activations_path,
            self.hook_name,
            self.sliced_context_size,
            self.d_in,
            min_rows=self.store_batch_size_prompts,
        )

    # ------------------------------------------------------------------ normalisation

    @property
    def normalize_activations(self) -> str:
        """'expected_average_only_in' scales served activations by the estimated factor."""
        return self._scaler.normalize_activations

    @normalize_activations.setter
    def normalize_activations(self, value: str) -> None:
        self._scaler.normalize_activations = value

    @property
    def estimated_norm_scaling_factor(self) -> float | None:
        """The factor served activations are multiplied by (None until estimated)."""
        return self._scaler.scaling_factor

    @estimated_norm_scaling_factor.setter
    def estimated_norm_scaling_factor(self, value: float | None) -> None:
        self._scaler.scaling_factor = value

    def set_norm_scaling_factor_if_needed(
        self, n_batches_for_norm_estimate: int = int(1e3)
    ) -> None:
        """Estimate the scaling factor when normalize_activations is 'expected_average_only_in'."""
        if self._scaler.needs_estimate:
            self.estimated_norm_scaling_factor = self.estimate_norm_scaling_factor(
                n_batches_for_norm_estimate
            )

    def apply_norm_scaling_factor(self, activations: torch.Tensor) -> torch.Tensor:
        return self._scaler.scale(activations)

    def unscale(self, activations: torch.Tensor) -> torch.Tensor:
        return self._scaler.unscale(activations)

    def get_norm_scaling_factor(self, activations: torch.Tensor) -> torch.Tensor:
        """sqrt(d_in) / mean L2 norm of `activations` [..., d_in]."""
        return self._scaler.factor_for(activations)

    def estimate_norm_scaling_factor(self, n_batches_for_norm_estimate: int = int(1e3)) -> float:
        """The factor that makes the mean activation norm sqrt(d_in), averaged over
        `n_batches_for_norm_estimate` training batches (which are consumed)."""
        return self._scaler.estimate(self._next_unscaled_batch, n_batches_for_norm_estimate)

    # ------------------------------------------------------------------ input dataset

    def shuffle_input_dataset(self, seed: int, buffer_size: int = 1) -> None:
        """Shuffle the input dataset (and its shards; `buffer_size` matters for streaming
        datasets only) and read it from the start."""
        self._input_shuffles.append((seed, buffer_size))
        self.dataset = shuffled(self.dataset, seed, buffer_size)
        self.reset_input_dataset()

    def take_shard(self, index: int, n_shards: int) -> None:
        """Read only part `index` of `n_shards` of the input dataset, from its start (a
        data-parallel rank's part; before any shuffle or batch)."""
        self._base_dataset = self.dataset = dataset_shard(self._base_dataset, index, n_shards)
        self.reset_input_dataset()

    def reset_input_dataset(self) -> None:
        """Read the input dataset from its first row again."""
        self.iterable_dataset: Iterator[Any] = iter(self.dataset)
        self._sequences = self._iterate_tokenized_sequences()

    @property
    def iterable_sequences(self) -> Iterator[torch.Tensor]:
        """The store's stream of sequences [context_size] that `get_batch_tokens` reads
        from: taking a sequence from it advances the store."""
        return self._sequences

    def _iterate_tokenized_sequences(self) -> TokenSequences:
        """A new stream of sequences [context_size] over the input dataset from its first
        row (5.6.0 name; the store's own position is unchanged)."""
        return TokenSequences.for_store(
            self.dataset,
            self.tokens_column,
            self.context_size,
            self.store_batch_size_prompts,
            self._text_tokenizer(),
            self.prepend_bos,
        )

    def _iterate_raw_dataset(self) -> Iterator[Any]:
        """The token (or text) column of each input dataset row, in order (5.6.0 name)."""
        for row in self.dataset:
            yield row[self.tokens_column]  # type: ignore[index]

    def _iterate_raw_dataset_tokens(self) -> Iterator[torch.Tensor]:
        """Each input dataset row as 1D tokens, text tokenized without BOS (5.6.0 name)."""
        return iter_row_tokens(self._iterate_raw_dataset(), self._text_tokenizer())

    def _text_tokenizer(self) -> Any:
        """The model's tokenizer for a text dataset; None for a pretokenized one."""
        return None if self.is_dataset_tokenized else self.model.tokenizer  # type: ignore[attr-defined]

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
        tokens = self._sequences.next_batch(batch_size, raise_at_epoch_end)
        return tokens.to(model_device(self.model))

    @torch.no_grad()
    def get_activations(self, batch_tokens: torch.Tensor) -> torch.Tensor:
        """Activations at the hook for `batch_tokens` [batch, context]: [batch, context
        positions after seqpos_slice, 1, d_in] (a transcoder's: d_in + d_out, see
        `split_rows`), in the store's dtype and on its device."""
        acts = self._hook_activations(batch_tokens)
        out = torch.empty(acts.shape, dtype=self.dtype, device=self.device)
        out.copy_(acts)  # a normal tensor, usable in autograd
        return out.unsqueeze(2)

    def _hook_activations(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, positions after seqpos_slice, d_in (+ d_out)] for tokens [batch, context],
        in the model's dtype and on its device: often a view of the model's inference-mode
        output, so callers copy it into their own buffers."""
        if self.output_hook is not None:
            args = (self.hook_layers, self._multi_reader, self.model_kwargs, self.autocast_lm)
            raw_by_hook = forward.run_model_to_hooks(self.model, tokens, *args)
            return self._rows_from_hooks(raw_by_hook, slice(*self.seqpos_slice))
        raw = run_model_to_hook(
            self.model,
            tokens,
            self.hook_name,
            self.hook_layer,
            self._fused_reader,
            self.model_kwargs,
            self.autocast_lm,
        )  # [batch, pos, ...] an inference tensor
        acts = raw[:, slice(*self.seqpos_slice)]
        return sae_view(acts, self.hook_name, self.d_in, self.hook_head_index)

    def _rows_from_hooks(self, raw: dict[str, torch.Tensor], positions: slice) -> torch.Tensor:
        """[batch, positions, row_width] from one forward's hook activations: the input's
        view, and a transcoder's target beside it."""
        out, head_index = self.output_hook, self.hook_head_index
        if out is not None:  # a transcoder's input and target; a CLT's every layer
            return out.rows(raw, positions, self.hook_name, self.d_in, head_index)
        return sae_view(raw[self.hook_name][:, positions], self.hook_name, self.d_in, head_index)

    def _next_activation_batch(
        self, raise_on_epoch_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activations [tokens, row_width] and token ids [tokens] (or None) of the next model
        batch (or cache chunk). The activations may be a view of the model's output: copy
        them before keeping them."""
        if self._cache_reader is not None:
            return self._next_cached_batch(self._cache_reader, raise_on_epoch_end)
        tokens = self.get_batch_tokens(raise_at_epoch_end=raise_on_epoch_end)
        acts = self._hook_activations(tokens).reshape(-1, self.row_width)  # copied by callers
        token_ids = tokens[:, slice(*self.seqpos_slice)].reshape(-1).to(self.device)
        return acts, token_ids

    def _next_cached_batch(
        self, reader: CachedActivationReader, raise_on_epoch_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = reader.next_batch()
        if batch is None:  # the reader is back at the first row
            self._sequences.epoch += 1
            message = f"Read the whole activation cache; starting epoch {self.epoch}"
            logger.info(message)
            if raise_on_epoch_end:
                raise EndOfEpoch(message)
            batch = reader.next_batch()
            assert batch is not None  # the cache holds at least one batch (checked on load)
        return batch

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
        acts = torch.empty((total, 1, self.row_width), dtype=self.dtype, device=self.device)
        token_ids: torch.Tensor | None = torch.empty(total, dtype=torch.long, device=self.device)
        for i in tqdm(range(n_batches_in_buffer), desc="Refilling buffer", leave=False, delay=2.0):
            batch_acts, batch_tokens = self._next_activation_batch(raise_on_epoch_end)
            acts[i * n_per_batch : (i + 1) * n_per_batch, 0] = batch_acts
            if batch_tokens is None:
                token_ids = None
            elif token_ids is not None:
                token_ids[i * n_per_batch : (i + 1) * n_per_batch] = batch_tokens
        if shuffle:
            if token_ids is None:
                (acts,) = permute_together([acts], self._generator)
            else:
                acts, token_ids = permute_together([acts, token_ids], self._generator)
        return self._scaler.for_serving(acts), token_ids

    # ------------------------------------------------------------------ shuffle buffer and batches

    def _get_mixer(self) -> MixingBuffer:
        if self._mixer is None:
            half = self.half_buffer_size * self.store_batch_size_prompts * self.sliced_context_size
            capacity = 2 * half + 2 * max(self.train_batch_size_tokens, 1)
            self._mixer = MixingBuffer(
                capacity, self.row_width, self.dtype, self.device, self._generator
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
    def _storage_buffer(self) -> torch.Tensor | None:
        """The rows kept for mixing [n, 1, d_in] (scaled once a factor is set), or None
        while nothing is kept (5.6.0 name; `storage_buffer` fills it when empty)."""
        mixer = self._mixer
        if mixer is None or mixer.n_stored == 0:
            return None
        rows = mixer.stored_rows().unsqueeze(1)
        return rows if self._scaler.needs_estimate else self._scaler.for_serving(rows)

    @property
    def storage_buffer(self) -> torch.Tensor:
        """The half of the shuffle buffer kept back for mixing (scaled like served batches)."""
        mixer = self._get_mixer()
        if mixer.n_stored == 0:
            self._fill_half(raise_on_epoch_end=False)
        return self._scaler.for_serving(mixer.stored_rows().unsqueeze(1))

    def unserved_rows(self, max_rows: int) -> torch.Tensor:
        """Up to `max_rows` rows [n, 1, width] of the shuffle buffer that were never served
        (the rest of the half being served, then the half kept for mixing), scaled like
        served batches, without running the model; [0, 1, width] before the first fill."""
        mixer = self._mixer
        if mixer is None:
            return torch.empty((0, 1, self.row_width), dtype=self.dtype, device=self.device)
        rows = torch.cat([mixer.queued_rows(), mixer.stored_rows()])[:max_rows]
        return self._scaler.for_serving(rows.unsqueeze(1))

    @property
    def dataloader(self) -> Iterator[torch.Tensor]:
        if self._dataloader is None:
            self._dataloader = self.get_data_loader()
        return self._dataloader

    def get_data_loader(self) -> Iterator[torch.Tensor]:
        """Refill the shuffle buffer (keep half, add half) and return an iterator over
        the batches [train_batch_size_tokens, 1, d_in] of the half that is served."""
        self._check_train_batch_fits()
        self._get_mixer().refill(self._fill_half, self.train_batch_size_tokens)
        return self._served_batches()

    def _served_batches(self) -> ServedBatches:
        return ServedBatches(self._get_mixer(), self._scaler, self.train_batch_size_tokens)

    def next_batch(self) -> torch.Tensor:
        """The next training batch, [train_batch_size_tokens, 1, d_in]."""
        self._scaler.check_ready()
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
        empty = torch.zeros((0, self.row_width), dtype=self.dtype)
        parts = {
            "input_shuffles": [list(s) for s in self._input_shuffles],
            "cache_row": 0 if self._cache_reader is None else self._cache_reader.row,
            "norm_scaling_factor": self.estimated_norm_scaling_factor,
            "generator_state": self._generator.get_state(),
            "dataloader_active": self._dataloader is not None,
            "buffer_stored": mixer.stored_rows().cpu() if mixer else empty,  # [n, d_in]
            "buffer_queued": mixer.queued_rows().cpu() if mixer else empty,  # [n, d_in]
        }
        return pack_checkpoint(compat_signature(self), parts, self._sequences.state_dict())

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore `checkpoint_state()` output onto a freshly built store with the same
        configuration; afterwards it serves exactly the batches the saved one would have."""
        sequences = unpack_checkpoint(state, compat_signature(self))
        self.dataset = self._base_dataset
        self._input_shuffles = []
        for seed, buffer_size in state["input_shuffles"]:
            self._input_shuffles.append((int(seed), int(buffer_size)))
            self.dataset = shuffled(self.dataset, int(seed), int(buffer_size))
        self.reset_input_dataset()
        self._sequences.load_state_dict(sequences)
        if self._cache_reader is not None:
            self._cache_reader.row = int(state["cache_row"])
        factor = state["norm_scaling_factor"]
        self.estimated_norm_scaling_factor = None if factor is None else float(factor)
        self._generator.set_state(state["generator_state"])
        mixer = self._get_mixer()
        mixer.load(state["buffer_stored"].to(self.device), state["buffer_queued"].to(self.device))
        self._dataloader = self._served_batches() if state["dataloader_active"] else None
