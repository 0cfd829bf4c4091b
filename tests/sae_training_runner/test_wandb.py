import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sae_lens.sae_training_runner import InterruptedException
from sae_lens.training.metrics_log import read_metrics
from tests.sae_training_runner.runner_helpers import signal_at_batch, tiny_cfg, tiny_runner
from tests.sae_training_runner.wandb_history import offline_history


@pytest.fixture(autouse=True)
def fresh_wandb_settings() -> Iterator[None]:
    """wandb reads its environment (WANDB_DIR, credentials) once per process: reset it."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_offline_wandb_run_holds_the_logged_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg(tmp_path, log_to_wandb=True, training_tokens=32 * 20, n_checkpoints=1)
    tiny_runner(cfg).run()

    history = offline_history(tmp_path)
    logged = read_metrics(Path(cfg.checkpoint_path) / "metrics.jsonl")
    train_rows = [r for r in history if "losses/overall_loss" in r]
    assert [r["_step"] for r in train_rows] == [r["step"] for r in logged] == [4, 9, 14, 19]
    for row, record in zip(train_rows, logged, strict=True):
        assert row["losses/overall_loss"] == pytest.approx(record["losses/overall_loss"])
        assert row["metrics/l0"] == pytest.approx(record["metrics/l0"])
    (run_folder,) = tmp_path.glob("wandb/offline-run-*")
    assert run_folder.name.endswith(Path(cfg.checkpoint_path).name)  # wandb id = run folder


def test_without_credentials_wandb_goes_offline_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb-config"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg(tmp_path, log_to_wandb=True, training_tokens=32 * 5)
    with caplog.at_level(logging.WARNING, logger="sae_lens"):
        tiny_runner(cfg).run()
    (run_folder,) = tmp_path.glob("wandb/offline-run-*")
    notes = [r.getMessage() for r in caplog.records if "offline" in r.getMessage()]
    assert len(notes) == 1
    assert f"logs offline to {run_folder}" in notes[0]
    assert f"wandb sync {run_folder}" in notes[0]
    assert offline_history(tmp_path)  # something was logged


def test_a_resumed_run_continues_its_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sae_lens.sae_training_runner as runner_module

    started: list[tuple[str, bool]] = []
    active: list[str] = []

    def fake_start(cfg: object, run_id: str, resume: bool) -> str:
        started.append((run_id, resume))
        active.append(run_id)
        return run_id

    monkeypatch.setattr(runner_module, "start_wandb_run", fake_start)
    monkeypatch.setattr(runner_module, "current_wandb_run_id", lambda: active[-1])
    monkeypatch.setattr(runner_module, "finish_wandb_run", lambda succeeded: None)
    monkeypatch.setattr(runner_module, "log_sae_artifacts", lambda *args: None)
    monkeypatch.setattr(runner_module.SAETrainer, "_log", lambda self, metrics, step: None)

    cfg = tiny_cfg(tmp_path, log_to_wandb=True, wandb_id="wandb-run-7", training_tokens=32 * 8)
    with signal_at_batch(monkeypatch, 3), pytest.raises(InterruptedException):
        tiny_runner(cfg).run()
    resumed = tiny_cfg(tmp_path, log_to_wandb=True, training_tokens=32 * 8, resume=True,
                       checkpoint_path=cfg.checkpoint_path)  # fmt: skip
    tiny_runner(resumed).run()
    assert started == [("wandb-run-7", False), ("wandb-run-7", True)]


def test_artifact_metadata_fits_wandbs_key_limit_and_keeps_every_value(tmp_path: Path) -> None:
    import json

    import wandb

    from sae_lens.training.wandb_logging import MAX_ARTIFACT_METADATA_KEYS, artifact_metadata

    cfg = tiny_cfg(tmp_path, d_sae=48, lr=1e-3)
    metadata = artifact_metadata(cfg)
    assert len(metadata) <= MAX_ARTIFACT_METADATA_KEYS
    wandb.Artifact("sae", type="model", metadata=metadata)  # wandb's own check passes
    assert metadata["d_sae"] == 48 and metadata["lr"] == 1e-3  # changed fields stay on top
    flat = {**metadata.pop("fields_at_default", {}), **metadata}
    assert json.loads(json.dumps(flat)) == json.loads(json.dumps(cfg.to_dict()))
