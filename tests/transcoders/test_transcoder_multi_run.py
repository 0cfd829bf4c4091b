"""A transcoder in a multi-SAE run: its fields are per-SAE fields, and it trains to exactly
the weights a single run of it reaches, beside an SAE fed by the same model pass."""

from __future__ import annotations

from pathlib import Path

from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens.sae import SAE
from tests.multi_sae_training_runner.test_multi_sae_training_runner import (
    assert_same_weights,
    multi_cfg,
    train_alone,
)

SAES = {
    "mlp0_tc": {
        "hook_name": "blocks.0.ln2.hook_normalized",
        "hook_name_out": "blocks.0.hook_mlp_out",
        "skip_connection": True,
        "architecture": "topk",
        "activation_fn_kwargs": {"k": 8},
        "d_sae": 128,
    },
    "resid1": {"hook_name": "blocks.1.hook_resid_post", "d_sae": 64, "l1_coefficient": 2.0},
}


def test_a_transcoder_of_a_multi_run_equals_the_transcoder_trained_alone(tmp_path: Path) -> None:
    cfg = multi_cfg(tmp_path, SAES)
    saes = MultiSAETrainingRunner(cfg).run()
    for name, fields in SAES.items():
        assert_same_weights(saes[name], train_alone(tmp_path, name, fields))
    loaded = SAE.load_from_pretrained(str(cfg.run_dir / "mlp0_tc" / "final_2048"))
    assert loaded.cfg.hook_name_out == "blocks.0.hook_mlp_out" and loaded.cfg.d_out == 128
