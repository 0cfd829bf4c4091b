"""Weights & Biases for training runs: the real wandb library, online when credentials
are configured, otherwise offline (said in one log line, with where the run is kept)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sae_lens import logger
from sae_lens.config import LanguageModelSAERunnerConfig


def _offline_unless_configured() -> str | None:
    """The wandb mode to force: None when WANDB_MODE is set or credentials exist (wandb
    decides), "offline" when neither (no prompt, no network call)."""
    import wandb

    if os.environ.get("WANDB_MODE"):
        return None
    if wandb.login(prompt=False, verify=False):
        return None
    return "offline"


def start_wandb_run(
    cfg: LanguageModelSAERunnerConfig,
    run_id: str,
    resume: bool,
    config: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Start (or, with `resume`, continue) the wandb run `run_id`; returns its id. The run
    records `config` (default: `cfg.to_dict()`) under `name` (default: `cfg.run_name`)."""
    import wandb

    forced_mode = _offline_unless_configured()
    run = wandb.init(
        project=cfg.wandb_project,
        entity=cfg.wandb_entity,
        name=cfg.run_name if name is None else name,
        id=run_id,
        config=cfg.to_dict() if config is None else config,
        resume="allow" if resume else None,
        mode=forced_mode,  # type: ignore[arg-type]
    )
    if forced_mode == "offline":
        run_folder = Path(run.dir).parent
        logger.warning(
            "wandb: no API key is configured and WANDB_MODE is not set, so this run logs "
            f"offline to {run_folder} (upload it later with `wandb sync {run_folder}`)"
        )
    return run.id


def current_wandb_run_id() -> str | None:
    """The id of the active wandb run, if any."""
    import wandb

    return wandb.run.id if wandb.run is not None else None


# wandb refuses artifact metadata with more top-level keys than this
MAX_ARTIFACT_METADATA_KEYS = 100
DEFAULTS_KEY = "fields_at_default"


def artifact_metadata(cfg: LanguageModelSAERunnerConfig) -> dict[str, Any]:
    """The run config as artifact metadata: one key per field, as 5.6.0 logged it, while
    that fits wandb's limit; past it, the fields at their default value are grouped under
    `fields_at_default`, so every value is still there."""
    metadata = cfg.to_dict()
    if len(metadata) <= MAX_ARTIFACT_METADATA_KEYS:
        return metadata
    defaults = LanguageModelSAERunnerConfig().to_dict()
    at_default = {k: v for k, v in metadata.items() if k in defaults and defaults[k] == v}
    changed = {k: v for k, v in metadata.items() if k not in at_default}
    return {**changed, DEFAULTS_KEY: at_default}


def log_sae_artifacts(
    sae_name: str, folder: Path, metadata: dict[str, Any], aliases: list[str] | None
) -> None:
    """Log a saved SAE folder as wandb artifacts: the model (weights + config) and its
    feature sparsity, as 5.6.0 does. `metadata` comes from `artifact_metadata`."""
    import wandb

    name = sae_name.replace("/", "__")  # artifact names cannot hold slashes
    model = wandb.Artifact(name, type="model", metadata=metadata)
    for filename in ("sae_weights.safetensors", "cfg.json"):
        model.add_file(str(folder / filename))
    wandb.log_artifact(model, aliases=aliases)
    sparsity_path = folder / "sparsity.safetensors"
    if sparsity_path.is_file():
        sparsity = wandb.Artifact(
            f"{name}_log_feature_sparsity", type="log_feature_sparsity", metadata=metadata
        )
        sparsity.add_file(str(sparsity_path))
        wandb.log_artifact(sparsity)


def finish_wandb_run(succeeded: bool) -> None:
    """Close the active wandb run (marking it failed when training did not finish)."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=0 if succeeded else 1)
