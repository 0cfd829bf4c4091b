"""The dashboard data in Neuronpedia's upload format: the batch files that SAEDashboard's
`NeuronpediaRunner` writes (`batch-<n>.json`, each `{"model_id", "layer", "sae_set",
"features": [...]}`), one feature object per latent with the fields Neuronpedia reads:

- `feature_index`; `pos_str`/`pos_values` and `neg_str`/`neg_values`: the top and bottom
  logit tokens; `frac_nonzero`: the density;
- `freq_hist_data_bar_values`/`_heights`: the activation histogram (bin centres, counts);
  `logits_hist_data_bar_values`/`_heights`: the histogram of logit effects;
- `activations`: one object per example, `tokens` (strings) and `values` (per token), with
  `bin_min`, `bin_max`, `bin_contains`: -1, the latent's max activation and -1 for the top
  examples, and the group's activation range and share of active tokens for the quantile
  examples;
- `n_prompts_total`, `n_tokens_in_prompt`, `dataset`; the neuron-alignment and correlation
  tables, which this dashboard does not compute, are empty lists.

Numbers are rounded to 3 decimals, as SAEDashboard writes them. Examples hold the context
window around their token, not the whole prompt."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from sae_lens.dashboard.data import (
    ActivationExample,
    ActivationHistogram,
    DashboardData,
    LatentDashboard,
)

_EMPTY_TABLES = (
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_l1",
    "correlated_neurons_pearson",
    "correlated_features_indices",
    "correlated_features_l1",
    "correlated_features_pearson",
    "decoder_weights_dist",
)


def _round(values: list[float]) -> list[float]:
    return [_finite(round(v, 3)) for v in values]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _bars(histogram: ActivationHistogram | None) -> tuple[list[float], list[float]]:
    """(bin centres, counts) of the bins up to the last non-empty one."""
    if histogram is None:
        return [], []
    last = max((i for i, c in enumerate(histogram.counts) if c > 0), default=-1)
    edges = histogram.bin_edges
    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(last + 1)]
    return _round(centres), [float(c) for c in histogram.counts[: last + 1]]


def _activation(
    example: ActivationExample, bin_min: float, bin_max: float, bin_contains: float
) -> dict[str, Any]:
    return {
        "bin_min": bin_min,
        "bin_max": bin_max,
        "bin_contains": bin_contains,
        "tokens": list(example.tokens),
        "values": _round(example.activations),
    }


def feature_json(latent: LatentDashboard, data: DashboardData) -> dict[str, Any]:
    """The Neuronpedia feature object of one latent."""
    freq_values, freq_heights = _bars(latent.histogram)
    logit_values, logit_heights = _bars(latent.logit_histogram)
    activations = [
        _activation(e, -1, round(latent.max_activation, 3), -1) for e in latent.top_examples
    ]
    for group in latent.quantile_groups:
        share = round(group.upper_quantile - group.lower_quantile, 3)
        low, high = round(group.min_activation, 3), round(group.max_activation, 3)
        activations += [_activation(e, low, high, share) for e in group.examples]
    feature: dict[str, Any] = {"feature_index": latent.index}
    feature.update({name: [] for name in _EMPTY_TABLES})
    feature.update(
        neg_str=[t.token for t in latent.bottom_logits],
        neg_values=_round([t.value for t in latent.bottom_logits]),
        pos_str=[t.token for t in latent.top_logits],
        pos_values=_round([t.value for t in latent.top_logits]),
        frac_nonzero=latent.density,
        freq_hist_data_bar_values=freq_values,
        freq_hist_data_bar_heights=freq_heights,
        logits_hist_data_bar_heights=logit_heights,
        logits_hist_data_bar_values=logit_values,
        n_prompts_total=data.n_sequences or math.ceil(data.n_tokens / max(data.context_size, 1)),
        n_tokens_in_prompt=data.context_size,
        dataset=data.dataset,
        activations=activations,
    )
    return feature


def to_neuronpedia(
    data: DashboardData, model_id: str | None = None, layer: int = 0, sae_set: str | None = None
) -> dict[str, Any]:
    """One Neuronpedia batch object holding every latent of `data`."""
    return {
        "model_id": model_id or data.model_name,
        "layer": layer,
        "sae_set": sae_set or data.sae_name,
        "features": [feature_json(latent, data) for latent in data.latents],
    }


def write_neuronpedia(
    data: DashboardData,
    output_dir: str | Path,
    model_id: str | None = None,
    layer: int | None = None,
    sae_set: str | None = None,
    features_per_batch: int = 128,
) -> list[Path]:
    """Write `output_dir/batch-0.json`, `batch-1.json`, ... (`features_per_batch` latents
    each) and return their paths. `layer` defaults to the layer in the hook name."""
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be at least 1, got {features_per_batch}")
    if layer is None:
        parts = data.hook_name.split(".")
        layer = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, len(data.latents), features_per_batch)):
        part = replace(data, latents=data.latents[start : start + features_per_batch])
        batch = to_neuronpedia(part, model_id, layer, sae_set)
        path = output_dir / f"batch-{number}.json"
        path.write_text(json.dumps(batch, allow_nan=False))
        paths.append(path)
    return paths
