"""The Neuronpedia export: SAEDashboard's batch file layout and field names, holding the
same numbers as the dashboard data, as strict JSON."""

from __future__ import annotations

import json

import pytest

from sae_lens.dashboard import to_neuronpedia, write_neuronpedia
from tests.dashboard.conftest import EMBEDDED_FEATURES

FEATURE_KEYS = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values",
    "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_l1",
    "correlated_neurons_pearson", "correlated_features_indices", "correlated_features_l1",
    "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights",
    "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "n_prompts_total",
    "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "activations",
}  # fmt: skip
ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values"}


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_the_batch_file_holds_every_feature_in_neuronpedias_fields(embedded_dashboard):
    data, folder = embedded_dashboard
    batch = strict_json((folder / "neuronpedia" / "batch-0.json").read_text())
    assert set(batch) == {"model_id", "layer", "sae_set", "features"}
    assert (batch["model_id"], batch["layer"], batch["sae_set"]) == (
        "tiny-pydoc-gpt2",
        0,
        "random-sae",
    )
    assert [f["feature_index"] for f in batch["features"]] == EMBEDDED_FEATURES
    for feature, latent in zip(batch["features"], data.latents, strict=True):
        assert set(feature) == FEATURE_KEYS
        assert feature["frac_nonzero"] == pytest.approx(latent.density)
        assert feature["pos_str"] == [t.token for t in latent.top_logits]
        assert feature["neg_values"] == pytest.approx(
            [t.value for t in latent.bottom_logits], abs=1e-3
        )
        assert sum(feature["freq_hist_data_bar_heights"]) == latent.n_active
        assert sum(feature["logits_hist_data_bar_heights"]) == 4096  # the embedded vocabulary
        assert feature["n_tokens_in_prompt"] == data.context_size
        assert feature["n_prompts_total"] == data.n_sequences == 3_000 // data.context_size + 1
        assert feature["dataset"] == "pydoc-corpus"
        n_quantile = sum(len(g.examples) for g in latent.quantile_groups)
        assert len(feature["activations"]) == len(latent.top_examples) + n_quantile
        top = feature["activations"][: len(latent.top_examples)]
        for record, example in zip(top, latent.top_examples, strict=True):
            assert set(record) == ACTIVATION_KEYS
            assert (record["bin_min"], record["bin_contains"]) == (-1, -1)
            assert record["bin_max"] == pytest.approx(latent.max_activation, abs=1e-3)
            assert record["tokens"] == example.tokens
            assert record["values"] == pytest.approx(example.activations, abs=1e-3)
        quantile = feature["activations"][len(latent.top_examples) :]
        examples = [e for g in latent.quantile_groups for e in g.examples]
        for record, example in zip(quantile, examples, strict=True):
            value = record["values"][example.position]
            assert record["bin_min"] - 1e-3 <= value <= record["bin_max"] + 1e-3
            assert record["bin_contains"] == pytest.approx(0.2)


def test_batches_split_and_settings_override(embedded_dashboard, tmp_path):
    data, _ = embedded_dashboard
    paths = write_neuronpedia(
        data, tmp_path, model_id="gpt2-small", layer=6, sae_set="res-mine", features_per_batch=5
    )
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    batches = [strict_json(p.read_text()) for p in paths]
    assert [len(b["features"]) for b in batches] == [5, 5, 2]
    assert {(b["model_id"], b["layer"], b["sae_set"]) for b in batches} == {
        ("gpt2-small", 6, "res-mine")
    }
    assert to_neuronpedia(data)["features"][3]["feature_index"] == EMBEDDED_FEATURES[3]
