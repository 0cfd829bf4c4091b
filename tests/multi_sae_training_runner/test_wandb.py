"""A multi-SAE run logs to one wandb run, each SAE's keys prefixed with its name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens.training.metrics_log import read_metrics
from tests.multi_sae_training_runner.test_multi_sae_training_runner import (
    multi_cfg,
    topk_sweep,
)
from tests.sae_training_runner.wandb_history import offline_history


@pytest.fixture(autouse=True)
def fresh_wandb_settings() -> Iterator[None]:
    """wandb reads its environment (WANDB_DIR, credentials) once per process: reset it."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_one_wandb_run_holds_every_saes_metrics_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    saes = {"r": {"hook_name": "blocks.*.hook_resid_post", "d_sae": 32}}
    cfg = multi_cfg(tmp_path, saes, log_to_wandb=True, wandb_log_frequency=4)
    MultiSAETrainingRunner(cfg).run()

    history = offline_history(tmp_path)  # one offline run: it fails on several
    for name in ("r_0", "r_1"):
        logged = read_metrics(cfg.run_dir / name / "metrics.jsonl")
        rows = [r for r in history if f"{name}/losses/overall_loss" in r]
        assert [r["_step"] for r in rows] == [r["step"] for r in logged] == [3, 7]
        for row, record in zip(rows, logged, strict=True):
            assert row[f"{name}/losses/overall_loss"] == pytest.approx(
                record["losses/overall_loss"]
            )
    assert not [key for row in history for key in row if key.startswith("losses/")]
    (run_folder,) = tmp_path.glob("wandb/offline-run-*")
    assert run_folder.name.endswith(cfg.run_dir.name)  # wandb id = run folder


def test_each_sae_logs_its_own_artifacts_even_in_a_sweep_on_one_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens import sae_training_runner

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged: list[tuple[str, Path]] = []
    monkeypatch.setattr(
        sae_training_runner,
        "log_sae_artifacts",
        lambda name, folder, metadata, aliases: logged.append((name, Path(folder))),
    )
    sweep = topk_sweep((4, 8), d_sae=32)
    cfg = multi_cfg(tmp_path, sweep, log_to_wandb=True, n_checkpoints=3)
    MultiSAETrainingRunner(cfg).run()
    # the checkpoints and the final SAE of each, under an artifact of its own
    for sae_name in sweep:
        mine = [(name, folder.name) for name, folder in logged if folder.parent.name == sae_name]
        assert {name for name, _ in mine} == {
            f"{sae_name}/sae_tiny-pydoc-gpt2_blocks.0.hook_resid_post_32"
        }
        assert len(mine) >= 2 and mine[-1][1] == "final_2048"
