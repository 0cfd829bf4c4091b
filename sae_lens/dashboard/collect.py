"""One streaming pass over tokens that gathers the dashboards of chosen latents of an SAE
(`gather_dashboard_data`): the model runs up to the SAE's hook, the SAE encodes, and the
running statistics of `running_stats` take the batch; nothing grows with the token count."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

from sae_lens.dashboard import logits as logit_tables
from sae_lens.dashboard.data import (
    ActivationExample,
    ActivationHistogram,
    DashboardData,
    LatentDashboard,
    QuantileGroup,
)
from sae_lens.dashboard.latent_subset import Encoder, latent_encoder
from sae_lens.dashboard.running_stats import ContextWindows, RunningHistogram, RunningTopK
from sae_lens.hook_activations import sae_view
from sae_lens.sae import SAE
from sae_lens.training.model_forward import fused_reader_for, model_device, run_model_to_hook
from sae_lens.training.store_inputs import check_hook_name

_GROUP_TOKENS = 8192  # tokens per update of the running statistics, at most
_GROUP_VALUES = 1 << 20  # and at most this many activations (tokens x latents) pending


@dataclass
class DashboardSettings:
    """How much the pass reads and how much each latent's dashboard keeps.

    Memory is bounded by latents x (n_top_examples + quantile_sample_size) x window tokens,
    whatever `n_tokens` is."""

    n_tokens: int = 100_000  # token positions read, rounded up to whole sequences
    # sequences per model forward: on CPU, 8 of 128 tokens keep a small model's tensors
    # small enough to reuse freed memory (16 page-faults fresh memory in every forward)
    batch_size_prompts: int = 8
    n_top_examples: int = 20
    n_quantile_groups: int = 5  # equal-mass groups of the nonzero activations
    examples_per_quantile: int = 5
    quantile_sample_size: int = 0  # active tokens sampled per latent; 0: 4 x groups x examples
    context_left: int = 12  # tokens shown before an example's token
    context_right: int = 4  # and after it
    n_histogram_bins: int = 48  # even: bins merge in pairs when the range doubles
    n_logit_tokens: int = 10  # top and bottom logit tokens shown
    exclude_special_tokens: bool = True  # leave BOS/EOS/pad tokens out of every statistic
    seed: int = 0  # of the quantile sample

    @property
    def sample_size(self) -> int:
        return self.quantile_sample_size or 4 * self.n_quantile_groups * self.examples_per_quantile

    def check(self) -> None:
        """A ValueError naming the first setting out of range."""
        at_least = {
            "n_tokens": 1,
            "batch_size_prompts": 1,
            "n_top_examples": 1,
            "n_quantile_groups": 0,
            "examples_per_quantile": 0,
            "quantile_sample_size": 0,
            "context_left": 0,
            "context_right": 0,
            "n_histogram_bins": 2,
            "n_logit_tokens": 0,
        }
        for name, low in at_least.items():
            value = getattr(self, name)
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if self.n_histogram_bins % 2:
            raise ValueError(f"n_histogram_bins must be even, got {self.n_histogram_bins}")


def check_features(features: Sequence[int], d_sae: int) -> list[int]:
    """The latent indices as a list; a ValueError for none, a repeat or one out of range."""
    chosen = [int(f) for f in features]
    if not chosen:
        raise ValueError("no features (latents) chosen: give at least one index")
    for index in chosen:
        if not 0 <= index < d_sae:
            raise ValueError(
                f"feature index {index} is out of range: this SAE has d_sae={d_sae} latents, "
                f"numbered 0 to {d_sae - 1}"
            )
    repeated = sorted({f for f in chosen if chosen.count(f) > 1})
    if repeated:
        raise ValueError(f"feature indices repeat: {repeated}; give each latent once")
    return chosen


def gather_dashboard_data(
    sae: SAE,
    model: Any,
    features: Sequence[int],
    settings: DashboardSettings | None = None,
    tokens: torch.Tensor | None = None,
    dataset: str | None = None,
    context_size: int | None = None,
    sae_name: str = "",
    progress: bool = True,
) -> DashboardData:
    """The dashboards of latents `features` of `sae`, from one pass over `settings.n_tokens`
    token positions: the sequences of `tokens` [n_sequences, context] when given, else
    sequences of `context_size` (default the SAE's) read from `dataset` (default the SAE's
    `dataset_path`) through an `ActivationsStore`. Activations are read at every position
    (the SAE's `seqpos_slice` is not applied)."""
    settings = settings or DashboardSettings()
    settings.check()
    chosen = check_features(features, sae.cfg.d_sae)
    check_hook_name(model, sae.cfg.hook_name, sae.cfg.hook_layer)
    if tokens is not None:
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be [n_sequences, context], got {tuple(tokens.shape)}")
        context_size, dataset_name = tokens.shape[1], dataset or "(given tokens)"
        batches = _tensor_batches(tokens, settings)
    else:
        context_size = context_size or sae.cfg.context_size
        dataset_name = dataset or sae.cfg.dataset_path
        batches = _dataset_batches(sae, model, dataset_name, context_size, settings)
    pass_ = _Pass(sae, model, chosen, settings)
    total = settings.n_tokens
    if tokens is not None:
        total = min(total, tokens.numel())
    with tqdm(total=total, desc="Dashboard tokens", unit="tok", disable=not progress) as bar:
        for batch in batches:
            pass_.add(batch)
            bar.update(batch.numel())
    return DashboardData(
        latents=pass_.finish(),
        n_tokens=pass_.histogram.n_tokens,
        sae_name=sae_name or sae.cfg.neuronpedia_id or sae.cfg.hook_name,
        model_name=sae.cfg.model_name,
        hook_name=sae.cfg.hook_name,
        dataset=dataset_name,
        context_size=context_size,
        settings=asdict(settings),
        n_sequences=pass_.sequences,
    )


def _tensor_batches(tokens: torch.Tensor, settings: DashboardSettings) -> Iterator[torch.Tensor]:
    rows = min(tokens.shape[0], math.ceil(settings.n_tokens / tokens.shape[1]))
    for start in range(0, rows, settings.batch_size_prompts):
        yield tokens[start : min(rows, start + settings.batch_size_prompts)]


def _dataset_batches(
    sae: SAE, model: Any, dataset: str, context_size: int, settings: DashboardSettings
) -> Iterator[torch.Tensor]:
    from sae_lens.training.activations_store import ActivationsStore

    store = ActivationsStore.from_sae(
        model,
        sae,
        context_size=context_size,
        dataset=dataset,
        store_batch_size_prompts=settings.batch_size_prompts,
        device=str(model_device(model)),
    )
    rows = math.ceil(settings.n_tokens / context_size)
    while rows > 0:
        batch = store.get_batch_tokens(min(rows, settings.batch_size_prompts))
        rows -= batch.shape[0]
        yield batch


class _Pass:
    """The running statistics of one pass, fed batch by batch."""

    def __init__(self, sae: SAE, model: Any, features: list[int], settings: DashboardSettings):
        self.sae, self.model, self.features, self.settings = sae, model, features, settings
        self.device = sae.W_dec.device
        self.model_device = model_device(model)
        self.feature_index = torch.tensor(features, device=self.device)
        width = settings.context_left + 1 + settings.context_right
        self.top = RunningTopK(len(features), settings.n_top_examples, width, self.device)
        self.sample = RunningTopK(len(features), settings.sample_size, width, self.device)
        self.histogram = RunningHistogram(len(features), settings.n_histogram_bins, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        self.sequences = 0
        # forward batches stay small (their tensors fit the cache) while the statistics,
        # whose cost is mostly per call, take groups of about `group_tokens` tokens
        self.group_tokens = max(1, min(_GROUP_TOKENS, _GROUP_VALUES // len(features)))
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.pending_tokens = 0
        self.encode: Encoder | None = None
        self.fused = fused_reader_for(model, sae.cfg.hook_name, sae.cfg.hook_layer, {})
        self.special = torch.tensor(
            sorted(_special_token_ids(model)) if settings.exclude_special_tokens else [],
            dtype=torch.long,
        )

    @torch.inference_mode()
    def latent_acts(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, pos, n_features] activations of the chosen latents, float32."""
        cfg = self.sae.cfg
        tokens = tokens.to(self.model_device)
        raw = run_model_to_hook(
            self.model, tokens, cfg.hook_name, cfg.hook_layer, self.fused, {}, False
        )
        x = sae_view(raw, cfg.hook_name, cfg.d_in, cfg.hook_head_index)  # [batch, pos, d_in]
        x = x.to(self.device)
        if self.encode is None:  # the first batch is the probe of `latent_encoder`
            self.encode = latent_encoder(self.sae, self.feature_index, x)
        return self.encode(x).float()  # [batch, pos, n_features]

    def add(self, tokens: torch.Tensor) -> None:
        """Run one forward batch; its activations join the pending group, which the running
        statistics take once it holds `group_tokens` tokens (or at `finish`)."""
        self.pending.append((tokens.to(self.device), self.latent_acts(tokens)))
        self.pending_tokens += tokens.numel()
        if self.pending_tokens >= self.group_tokens:
            self.flush()

    def flush(self) -> None:
        """Feed the pending forward batches to the running statistics as one batch."""
        if not self.pending:
            return
        tokens = torch.cat([t for t, _ in self.pending])  # [batch, pos]
        acts = torch.cat([a for _, a in self.pending])  # a normal tensor (not an inference one)
        self.pending, self.pending_tokens = [], 0
        counted = ~torch.isin(tokens, self.special.to(self.device))  # [batch, pos]
        flat_acts = acts.reshape(-1, acts.shape[-1])  # [tokens, n_features]
        flat_counted = counted.reshape(-1)
        windows = ContextWindows(
            tokens, acts, self.settings.context_left, self.settings.context_right
        )
        scores = flat_acts.T.masked_fill(~flat_counted, -torch.inf)  # [n_features, tokens]
        self.top.update(scores, windows, self.sequences)
        keys = torch.rand(scores.shape, generator=self.generator, device=self.device)
        keys = keys.masked_fill(~(scores > 0), -torch.inf)
        self.sample.update(keys, windows, self.sequences)
        self.histogram.update(flat_acts, flat_counted)
        self.sequences += tokens.shape[0]

    def finish(self) -> list[LatentDashboard]:
        self.flush()
        top, sample = _KeptWindows(self.top), _KeptWindows(self.sample)
        ids = set(self.top.tokens.unique().tolist()) | set(self.sample.tokens.unique().tolist())
        effects = logit_tables.logit_effects(
            self.sae.W_dec.detach()[self.feature_index], self.sae.cfg.hook_name, self.model
        )
        n_logits = self.settings.n_logit_tokens
        if effects is not None and n_logits:
            top_ids = torch.topk(effects, min(n_logits, effects.shape[1]), dim=1).indices
            bottom_ids = torch.topk(-effects, min(n_logits, effects.shape[1]), dim=1).indices
            ids |= set(top_ids.unique().tolist()) | set(bottom_ids.unique().tolist())
        strings = logit_tables.token_strings(self.model, ids)
        left = self.settings.context_left
        latents = []
        for row, index in enumerate(self.features):
            top_logits, bottom_logits, logit_hist = [], [], None
            if effects is not None:
                if n_logits:
                    top_logits, bottom_logits = logit_tables.top_and_bottom(
                        effects[row], n_logits, strings
                    )
                logit_hist = logit_tables.logit_histogram(effects[row])
            latents.append(
                LatentDashboard(
                    index=index,
                    n_tokens=self.histogram.n_tokens,
                    n_active=int(self.histogram.n_active[row]),
                    max_activation=max(0.0, float(self.top.scores[row, 0])),
                    top_examples=[
                        top.example(row, slot, left, strings) for slot in top.active(row, left)
                    ],
                    quantile_groups=self._quantile_groups(sample, row, strings),
                    histogram=self._histogram(row),
                    top_logits=top_logits,
                    bottom_logits=bottom_logits,
                    logit_histogram=logit_hist,
                )
            )
        return latents

    def _quantile_groups(
        self, sample: _KeptWindows, row: int, strings: dict[int, str]
    ) -> list[QuantileGroup]:
        """Equal-mass groups of the sampled active tokens, highest first, each with
        examples evenly spread over it (highest first)."""
        settings, left = self.settings, self.settings.context_left
        slots = sorted(sample.active(row, left), key=lambda slot: sample.acts[row][slot][left])
        n, n_groups = len(slots), settings.n_quantile_groups
        if n == 0 or n_groups == 0 or settings.examples_per_quantile == 0:
            return []
        groups = []
        for g in range(n_groups):
            members = slots[g * n // n_groups : (g + 1) * n // n_groups]
            if not members:
                continue
            per = min(settings.examples_per_quantile, len(members))
            picks = [members[(2 * j + 1) * len(members) // (2 * per)] for j in range(per)]
            groups.append(
                QuantileGroup(
                    lower_quantile=g / n_groups,
                    upper_quantile=(g + 1) / n_groups,
                    min_activation=sample.acts[row][members[0]][left],
                    max_activation=sample.acts[row][members[-1]][left],
                    examples=[sample.example(row, s, left, strings) for s in reversed(picks)],
                )
            )
        return groups[::-1]

    def _histogram(self, row: int) -> ActivationHistogram:
        counts = self.histogram.counts[row].tolist()
        n_active = int(self.histogram.n_active[row])
        return ActivationHistogram(
            bin_edges=self.histogram.edges(row),
            counts=counts,
            n_inactive=self.histogram.n_tokens - n_active,
        )


class _KeptWindows:
    """A `RunningTopK`'s windows as Python lists (read once, not one tensor call each)."""

    def __init__(self, kept: RunningTopK):
        self.kept_slots = [kept.kept(row) for row in range(kept.scores.shape[0])]
        self.tokens: list[list[list[int]]] = kept.tokens.tolist()
        self.acts: list[list[list[float]]] = kept.acts.tolist()
        self.where: list[list[list[int]]] = kept.where.tolist()

    def active(self, row: int, left: int) -> list[int]:
        """Kept slots of latent `row` whose own token has a positive activation."""
        return [slot for slot in self.kept_slots[row] if self.acts[row][slot][left] > 0]

    def example(self, row: int, slot: int, left: int, strings: dict[int, str]) -> ActivationExample:
        """Window `slot` of latent `row`, cut to the positions inside its sequence."""
        ids, values = self.tokens[row][slot], self.acts[row][slot]
        # positions outside the sequence (-1) pad only the window's two ends
        first = next(i for i, token in enumerate(ids) if token >= 0)
        last = len(ids) - next(i for i, token in enumerate(reversed(ids)) if token >= 0)
        sequence, position = self.where[row][slot]
        return ActivationExample(
            tokens=[strings.get(t, f"<{t}>") for t in ids[first:last]],
            token_ids=ids[first:last],
            activations=values[first:last],
            position=left - first,
            sequence_index=sequence,
            sequence_position=position,
        )


def _special_token_ids(model: Any) -> set[int]:
    """BOS, EOS and pad ids of the model's tokenizer (none without a tokenizer)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return set()
    ids = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return {i for i in ids if i is not None}
