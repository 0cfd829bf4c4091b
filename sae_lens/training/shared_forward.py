"""One model forward for many activation stores: the data path of a multi-SAE run.

Each SAE of a multi-SAE run keeps an activations store of its own (its own shuffle buffer
and random generator, seeded like a single run's), so it is served exactly the batches a
single run of it would be. What they share is the expensive part: a `SharedForward` reads
the token batches from one store (the leader), runs the model once per batch for every hook
the stores read, stopping after the deepest, and hands each store its hook's activations.
That forward is the fused pass (`FusedMultiHookReader`) where it serves every hook, else the
model's own forward with capture hooks; either computes each hook exactly as a single store's
forward would.

The stores ask for batches in the same order (they are configured alike), but not at the
same moment: one store refills its buffer before the next. The shared forward keeps a batch
until every store has taken it, so between training steps nothing is held. Token batches a
store's user reads directly (`get_batch_tokens`, as periodic evaluation does) come from the
same shared sequence, so every store reads exactly the tokens a single run's store would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.config import HfDataset
from sae_lens.fused_forward import FusedMultiHookReader
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.model_forward import model_device, run_model_to_hook, run_model_to_hooks
from sae_lens.training.token_stream import EndOfEpoch

_END_OF_EPOCH = "end of epoch"


# A batch the shared forward computed: tokens [batch, context] and, per hook name, the
# hook's activation [batch, context, ...].
_Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass
class _Entry:
    """One batch of the shared sequence, as its first reader asked for it."""

    raise_on_epoch_end: bool
    batch_size: int  # prompts
    with_activations: bool  # read by a store's forward (else its tokens only)
    tokens: torch.Tensor | None  # None: the end of an epoch
    activations: dict[str, torch.Tensor] | None = None  # computed when first read


class SharedForward:
    """Computes the activations at every hook of `stores` from one model forward per token
    batch (see the module docstring). `stores[0]` supplies the tokens."""

    def __init__(self, stores: list[SharedForwardStore]):
        leader = stores[0]
        self.model = leader.model
        self._leader = leader
        self._model_kwargs = leader.model_kwargs
        self._autocast_lm = leader.autocast_lm
        self._layers = {name: layer for s in stores for name, layer in s.hook_layers.items()}
        # a single hook: the same pass (fused where it can) as a single run's store; several:
        # one fused pass computing each exactly as that pass would, where it serves them all
        self._fused_reader = leader._fused_reader if len(self._layers) == 1 else None
        self._multi_reader = (
            FusedMultiHookReader.for_model(self.model, list(self._layers))
            if len(self._layers) > 1 and all(s._fused_reader or s._multi_reader for s in stores)
            else None
        )
        self._batches: deque[_Entry] = deque()
        self._first_index = 0  # index of _batches[0] in the sequence of batches
        self._positions = [0] * len(stores)
        for consumer, store in enumerate(stores):
            store._shared_forward, store._consumer = self, consumer

    @property
    def n_pending(self) -> int:
        """Batches computed that some store has not taken yet."""
        return len(self._batches)

    def next_batch(self, consumer: int, raise_on_epoch_end: bool) -> _Batch:
        """The next batch of activations of the store numbered `consumer`; at the end of the
        token stream, `EndOfEpoch` when `raise_on_epoch_end`, as a store reading its own
        stream would."""
        size = self._leader.store_batch_size_prompts
        entry = self._take(consumer, raise_on_epoch_end, size, with_activations=True)
        if entry.activations is None:
            entry.activations = self.activations(entry.tokens)  # type: ignore[arg-type]
        return entry.tokens, entry.activations  # type: ignore[return-value]

    def next_tokens(self, consumer: int, batch_size: int, raise_on_epoch_end: bool) -> torch.Tensor:
        """The next `batch_size` sequences the store numbered `consumer` reads directly."""
        entry = self._take(consumer, raise_on_epoch_end, batch_size, with_activations=False)
        return entry.tokens  # type: ignore[return-value]

    def _take(
        self, consumer: int, raise_on_epoch_end: bool, batch_size: int, with_activations: bool
    ) -> _Entry:
        """The store `consumer`'s next entry (read from the leader's stream when it is the
        first to ask); raises `EndOfEpoch` at the end of an epoch."""
        index = self._positions[consumer] - self._first_index
        if index == len(self._batches):
            self._batches.append(self._read(raise_on_epoch_end, batch_size, with_activations))
        entry = self._batches[index]
        asked = (raise_on_epoch_end, batch_size, with_activations)
        if (entry.raise_on_epoch_end, entry.batch_size, entry.with_activations) != asked:
            raise RuntimeError(
                "the stores of a multi-SAE run fell out of step (they must be configured "
                "alike in every field that moves the data stream)"
            )
        self._positions[consumer] += 1
        self._drop_taken()
        if entry.tokens is None:
            raise EndOfEpoch(_END_OF_EPOCH)
        return entry

    def _drop_taken(self) -> None:
        while self._batches and min(self._positions) > self._first_index:
            self._batches.popleft()
            self._first_index += 1

    def _read(self, raise_on_epoch_end: bool, batch_size: int, with_activations: bool) -> _Entry:
        try:
            tokens = self._leader.read_tokens(batch_size, raise_on_epoch_end)
        except EndOfEpoch:
            tokens = None
        return _Entry(raise_on_epoch_end, batch_size, with_activations, tokens)

    def activations(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """{hook name: activation [batch, context, ...]} for `tokens` [batch, context], from
        one forward that stops after the deepest hook (inference-mode tensors)."""
        if len(self._layers) == 1:
            ((hook_name, layer),) = self._layers.items()
            return {
                hook_name: run_model_to_hook(
                    self.model,
                    tokens,
                    hook_name,
                    layer,
                    self._fused_reader,
                    self._model_kwargs,
                    self._autocast_lm,
                )
            }
        return run_model_to_hooks(
            self.model,
            tokens,
            self._layers,
            self._multi_reader,
            self._model_kwargs,
            self._autocast_lm,
        )


class SharedForwardStore(ActivationsStore):
    """An activations store whose activations come from a `SharedForward` (built over it
    and the run's other stores) instead of a model forward of its own. Everything else
    (shuffle buffer, generator, scaling, checkpoint state) is the store's own."""

    _shared_forward: SharedForward
    _consumer: int

    @classmethod
    def group(
        cls,
        model: HookedRootModule,
        cfgs: list[Any],
        override_dataset: HfDataset | None = None,
    ) -> list[SharedForwardStore]:
        """One store per run config of `cfgs` (`LanguageModelSAERunnerConfig`s), all fed by
        one shared forward (reading `override_dataset` instead of the configured one)."""
        stores = [cls.from_config(model, cfg, override_dataset=override_dataset) for cfg in cfgs]
        SharedForward(stores)  # type: ignore[arg-type]
        return stores  # type: ignore[return-value]

    def get_batch_tokens(
        self, batch_size: int | None = None, raise_at_epoch_end: bool = False
    ) -> torch.Tensor:
        """As `ActivationsStore.get_batch_tokens`, from the shared sequence of batches."""
        size = batch_size or self.store_batch_size_prompts
        tokens = self._shared_forward.next_tokens(self._consumer, size, raise_at_epoch_end)
        return tokens.to(model_device(self.model))

    def read_tokens(self, batch_size: int, raise_at_epoch_end: bool) -> torch.Tensor:
        """The next `batch_size` sequences of this store's own stream (the leader's, read
        by the shared forward)."""
        return ActivationsStore.get_batch_tokens(self, batch_size, raise_at_epoch_end)

    def _next_activation_batch(
        self, raise_on_epoch_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._cache_reader is not None:
            return self._next_cached_batch(self._cache_reader, raise_on_epoch_end)
        tokens, raw = self._shared_forward.next_batch(self._consumer, raise_on_epoch_end)
        positions = slice(*self.seqpos_slice)
        acts = self._rows_from_hooks(raw, positions)
        token_ids = tokens[:, positions].reshape(-1).to(self.device)
        return acts.reshape(-1, self.row_width), token_ids
