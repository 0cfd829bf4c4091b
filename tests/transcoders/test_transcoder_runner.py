"""Training a transcoder end to end from the command line on the embedded model: the final
folder loads, names its output hook, predicts that hook's activation, and resumes."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer

from sae_lens.sae import SAE
from sae_lens.sae_training_runner import main
from sae_lens.training.sae_trainer import InterruptedException
from tests.sae_training_runner.runner_helpers import (
    final_state,
    signal_at_batch,
    tiny_cfg,
    tiny_runner,
)

IN_HOOK, OUT_HOOK = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
RUN = [
    "--hook_name", IN_HOOK,
    "--hook_name_out", OUT_HOOK,
    "--skip_connection", "true",
    "--architecture", "topk",
    "--activation_fn_kwargs", '{"k": 8}',
    "--d_sae", "128",
    "--context_size", "32",
    "--train_batch_size_tokens", "128",
    "--training_tokens", str(128 * 30),
    "--store_batch_size_prompts", "4",
    "--n_batches_in_buffer", "4",
    "--lr", "0.004",
    "--log_to_wandb", "false",
    "--verbose", "false",
]  # fmt: skip


def _fvu(sae: SAE, model: HookedTransformer) -> float:
    tokens = torch.randint(
        0, model.cfg.d_vocab, (4, 32), generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[IN_HOOK, OUT_HOOK])
        x, y = cache[IN_HOOK].flatten(0, 1), cache[OUT_HOOK].flatten(0, 1)
        residual = y - sae(x)
    return (residual.pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()


def test_the_cli_trains_a_skip_transcoder_whose_folder_predicts_the_output_hook(
    tmp_path: Path, embedded_model: HookedTransformer
) -> None:
    assert main([*RUN, "--checkpoint_path", str(tmp_path), "--wandb_id", "tc"]) == 0
    (final,) = glob.glob(str(tmp_path / "tc" / "final_*"))
    cfg = json.loads((Path(final) / "cfg.json").read_text())
    assert cfg["architecture"] == "topk_skip_transcoder" and cfg["d_out"] == 128
    sae = SAE.load_from_pretrained(final)
    assert sae.cfg.hook_name_out == OUT_HOOK and sae.cfg.hook_layer_out == 0
    assert torch.count_nonzero(sae.W_skip) > 0  # the skip path trained
    untrained = SAE.from_dict({**sae.cfg.to_dict(), "skip_connection": True})
    assert _fvu(sae, embedded_model) < 0.9 * _fvu(untrained, embedded_model)
    metrics = [json.loads(line) for line in (tmp_path / "tc" / "metrics.jsonl").open()]
    assert metrics[-1]["metrics/explained_variance"] > metrics[0]["metrics/explained_variance"]


def test_an_interrupted_and_resumed_transcoder_run_equals_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = dict(
        hook_name="blocks.1.ln2.hook_normalized",
        hook_name_out="blocks.1.mlp.hook_post",  # d_mlp = 32 wide, read from the model
        skip_connection=True,
        apply_b_dec_to_input=False,
        n_checkpoints=2,
    )
    reference = tiny_cfg(tmp_path / "a", **fields)
    tiny_runner(reference).run()
    assert reference.d_out == 32

    cfg = tiny_cfg(tmp_path / "b", **fields)
    with signal_at_batch(monkeypatch, 23), pytest.raises(InterruptedException):
        tiny_runner(cfg).run()
    resumed = tiny_cfg(tmp_path / "b", resume=True, **fields)
    tiny_runner(resumed).run()

    expected, actual = final_state(reference.checkpoint_path), final_state(cfg.checkpoint_path)
    assert expected["W_skip"].shape == (32, 16)  # saved [d_out, d_in]
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
