"""The streaming pass gives the numbers a brute-force computation over all tokens gives:
top examples are the true maxima (with their context), density and histogram count every
token once, quantile groups sit in order, and the logit tables are W_dec @ W_U's extremes."""

from __future__ import annotations

import pytest
import torch

from sae_lens.dashboard import DashboardSettings, collect, gather_dashboard_data
from tests.dashboard.conftest import random_sae

FEATURES = [0, 3, 7, 19]


def all_latent_acts(model, sae, tokens: torch.Tensor) -> torch.Tensor:
    """[sequences, pos, d_sae] by running the model and the SAE on everything at once."""
    _, cache = model.run_with_cache(tokens, names_filter=sae.cfg.hook_name)
    with torch.no_grad():
        return sae.encode(cache[sae.cfg.hook_name])


SETTINGS = dict(
    batch_size_prompts=5,  # batches of 5 sequences, the last one short
    n_top_examples=6,
    n_quantile_groups=3,
    examples_per_quantile=2,
    context_left=3,
    context_right=2,
    n_histogram_bins=10,
    n_logit_tokens=4,
)


@pytest.fixture(scope="module")
def gathered(tiny_setup):
    model, sae, tokens = tiny_setup
    settings = DashboardSettings(n_tokens=tokens.numel(), **SETTINGS)
    data = gather_dashboard_data(sae, model, FEATURES, settings, tokens=tokens, progress=False)
    return data, all_latent_acts(model, sae, tokens)


def test_top_examples_are_the_true_maxima_with_their_context(gathered, tiny_setup):
    data, acts = gathered
    _, _, tokens = tiny_setup
    for latent in data.latents:
        column = acts[..., latent.index]
        expected = torch.sort(column.flatten(), descending=True).values[:6]
        got = torch.tensor([e.activation for e in latent.top_examples])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert latent.max_activation == pytest.approx(float(column.max()), rel=1e-5)
        for example in latent.top_examples:
            seq, pos = example.sequence_index, example.sequence_position
            start = pos - example.position
            assert example.token_ids == tokens[seq, start : start + len(example.token_ids)].tolist()
            window = column[seq, start : start + len(example.activations)]
            torch.testing.assert_close(
                torch.tensor(example.activations), window, rtol=1e-5, atol=1e-5
            )
            assert example.position == min(pos, 3)  # the window is cut at the sequence start
            assert len(example.tokens) == min(pos, 3) + 1 + min(tokens.shape[1] - 1 - pos, 2)


def test_density_and_histogram_count_every_token_once(gathered):
    assert_density_and_histograms(*gathered)


def assert_density_and_histograms(data, acts: torch.Tensor) -> None:
    assert data.n_tokens == acts.shape[0] * acts.shape[1]
    for latent in data.latents:
        column = acts[..., latent.index].flatten()
        active = column[column > 0]
        assert latent.n_tokens == data.n_tokens
        assert latent.n_active == active.numel()
        assert latent.density == pytest.approx(active.numel() / column.numel())
        histogram = latent.histogram
        assert histogram.n_tokens == data.n_tokens
        assert histogram.n_inactive == column.numel() - active.numel()
        edges = histogram.bin_edges
        expected = [
            int(((active.double() >= lo) & (active.double() < hi)).sum())
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        assert histogram.counts == expected


@pytest.mark.parametrize(("batch_size_prompts", "group_tokens"), [(1, 1), (2, 30), (24, 30)])
def test_how_forward_batches_are_grouped_for_the_statistics_changes_no_number(
    gathered, tiny_setup, monkeypatch, batch_size_prompts, group_tokens
):
    """The statistics take forward batches in groups of about `_GROUP_TOKENS` tokens: any
    grouping gives the same top examples and exact histograms (the bin width may differ,
    as it follows the first group's maximum)."""
    monkeypatch.setattr(collect, "_GROUP_TOKENS", group_tokens)
    model, sae, tokens = tiny_setup
    settings = DashboardSettings(
        n_tokens=tokens.numel(), **{**SETTINGS, "batch_size_prompts": batch_size_prompts}
    )
    data = gather_dashboard_data(sae, model, FEATURES, settings, tokens=tokens, progress=False)
    reference, acts = gathered
    assert data.n_sequences == reference.n_sequences == tokens.shape[0]
    for mine, theirs in zip(data.latents, reference.latents, strict=True):
        # equal activations (a token at position 0 of two sequences) may swap places
        assert [e.activation for e in mine.top_examples] == pytest.approx(
            [e.activation for e in theirs.top_examples], rel=1e-5
        )
        for e in mine.top_examples:
            true = acts[e.sequence_index, e.sequence_position, mine.index]
            assert e.activation == pytest.approx(float(true), rel=1e-5)
    assert_density_and_histograms(data, acts)


def test_quantile_groups_are_ordered_and_hold_real_active_tokens(gathered):
    data, acts = gathered
    for latent in data.latents:
        groups = latent.quantile_groups
        assert [g.upper_quantile for g in groups] == pytest.approx([1.0, 2 / 3, 1 / 3])
        for higher, lower in zip(groups, groups[1:], strict=False):
            assert lower.max_activation <= higher.min_activation
        for group in groups:
            assert 1 <= len(group.examples) <= 2
            for example in group.examples:
                assert group.min_activation <= example.activation <= group.max_activation
                true = acts[example.sequence_index, example.sequence_position, latent.index]
                assert example.activation == pytest.approx(float(true), rel=1e-5)
                assert example.activation > 0


def test_logit_tables_are_the_extremes_of_the_decoder_direction_times_the_unembedding(
    gathered, tiny_setup
):
    data, _ = gathered
    model, sae, _ = tiny_setup
    effects = sae.W_dec.detach() @ model.W_U.detach()
    for latent in data.latents:
        row = effects[latent.index]
        top = torch.topk(row, 4)
        bottom = torch.topk(row, 4, largest=False)
        assert [t.token_id for t in latent.top_logits] == top.indices.tolist()
        assert [t.token_id for t in latent.bottom_logits] == bottom.indices.tolist()
        assert [t.value for t in latent.top_logits] == pytest.approx(top.values.tolist(), rel=1e-5)
        assert latent.top_logits[0].token == f"<{top.indices[0]}>"  # no tokenizer: ids shown
        assert latent.logit_histogram is not None
        assert sum(latent.logit_histogram.counts) == model.cfg.d_vocab


def test_n_tokens_stops_the_pass_and_a_dead_latent_has_no_examples(tiny_setup):
    model, sae, tokens = tiny_setup
    dead = random_sae(model.cfg.d_model, 4)
    with torch.no_grad():
        dead.b_enc[2] = -1e4  # latent 2 can never fire
    settings = DashboardSettings(n_tokens=30, batch_size_prompts=2)
    data = gather_dashboard_data(dead, model, [1, 2], settings, tokens=tokens, progress=False)
    assert data.n_tokens == 36 and data.n_sequences == 3  # whole sequences of 12, >= 30 tokens
    latent = data[2]
    assert (latent.n_active, latent.top_examples, latent.quantile_groups) == (0, [], [])
    assert latent.max_activation == 0.0 and latent.histogram.n_inactive == 36
    with pytest.raises(KeyError, match="latent 5 is not in this dashboard"):
        data[5]


def test_special_tokens_are_left_out_of_every_statistic(embedded_model):
    sae = random_sae(embedded_model.cfg.d_model, 8)
    bos = embedded_model.tokenizer.bos_token_id
    tokens = torch.randint(300, 3000, (6, 10), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = bos
    tokens[2, 5] = bos
    data = gather_dashboard_data(
        sae, embedded_model, range(8), DashboardSettings(n_tokens=60), tokens=tokens, progress=False
    )
    assert data.n_tokens == 60 - 7
    for latent in data.latents:
        for example in latent.top_examples:
            assert example.token_ids[example.position] != bos
    kept = gather_dashboard_data(
        sae,
        embedded_model,
        [0],
        DashboardSettings(n_tokens=60, exclude_special_tokens=False),
        tokens=tokens,
        progress=False,
    )
    assert kept.n_tokens == 60


def test_token_text_comes_from_the_tokenizer(embedded_model):
    sae = random_sae(embedded_model.cfg.d_model, 8)
    tokens = embedded_model.to_tokens(["def parse(text):\n    return text.split()"] * 2)
    data = gather_dashboard_data(sae, embedded_model, [0], tokens=tokens, progress=False)
    example = data.latents[0].top_examples[0]
    texts = embedded_model.to_str_tokens(tokens[example.sequence_index])
    start = example.sequence_position - example.position
    assert example.tokens == texts[start : start + len(example.tokens)]


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            [0, 20],
            "feature index 20 is out of range: this SAE has d_sae=20 latents, numbered 0 to 19",
        ),
        ([-1], "feature index -1 is out of range"),
        ([], "no features"),
        ([3, 3], "feature indices repeat: [3]"),
    ],
)
def test_bad_feature_indices_are_refused_before_any_work(tiny_setup, features, message):
    model, sae, tokens = tiny_setup
    with pytest.raises(ValueError) as error:
        gather_dashboard_data(sae, model, features, tokens=tokens, progress=False)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (DashboardSettings(n_tokens=0), "n_tokens must be at least 1, got 0"),
        (DashboardSettings(n_histogram_bins=7), "n_histogram_bins must be even, got 7"),
        (DashboardSettings(context_left=-1), "context_left must be at least 0"),
    ],
)
def test_bad_settings_are_refused(tiny_setup, settings, message):
    model, sae, tokens = tiny_setup
    with pytest.raises(ValueError, match=message):
        gather_dashboard_data(sae, model, [0], settings, tokens=tokens, progress=False)


def test_a_hook_the_model_lacks_is_named_with_the_closest(tiny_setup):
    model, _, tokens = tiny_setup
    sae = random_sae(model.cfg.d_model, 4, hook_name="blocks.0.hook_resid_pots")
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post"):
        gather_dashboard_data(sae, model, [0], tokens=tokens, progress=False)


def test_a_hugging_face_model_read_at_a_module_path():
    from sae_lens.load_model import load_model

    model = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2", device="cpu")
    sae = random_sae(128, 16, hook_name="transformer.h.0")
    tokens = model.tokenizer(["def f(x):\n    return x + 1\n"] * 2, return_tensors="pt").input_ids
    data = gather_dashboard_data(sae, model, [2, 5], tokens=tokens, progress=False)
    with torch.no_grad():
        effects = sae.W_dec[[2, 5]] @ model.model.get_output_embeddings().weight.T
    for row, latent in enumerate(data.latents):
        assert [t.token_id for t in latent.top_logits] == torch.topk(
            effects[row], 10
        ).indices.tolist()
        assert latent.n_tokens == tokens.numel()  # no BOS here: every token is counted
        for example in latent.top_examples:
            start = example.sequence_position - example.position
            ids = tokens[example.sequence_index, start : start + len(example.token_ids)]
            assert example.token_ids == ids.tolist()
    assert any(latent.top_examples for latent in data.latents)
