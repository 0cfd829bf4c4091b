"""Training checkpoints: written atomically, complete enough to continue a run exactly.

A checkpoint is a folder inside the run folder (`cfg.checkpoint_path`):

- the SAE in the `save_model` format (`sae_weights.safetensors`, `sparsity.safetensors`)
  with `cfg.json` holding the SAE config and the whole run config (as 5.6.0 writes it);
- `training_state.pt`: the SAE's exact parameters, the trainer's counters, feature
  statistics, optimizer and schedules, the RNG states (torch CPU and CUDA, `random`,
  numpy) and the activation store's data position (`ActivationsStore.checkpoint_state`);
- `checkpoint.json`, the completion marker, written last.

The folder is built as `<name>.tmp-XXXX` beside its final name, fsynced, then renamed in
one step, so a crash leaves either the previous state or the complete new checkpoint. A
folder without its marker is never used. The final SAE of a run (`final_<tokens>`) is
written the same way, without training state.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sae_lens import __version__
from sae_lens.config import LanguageModelSAERunnerConfig

if TYPE_CHECKING:
    from sae_lens.training.sae_trainer import SAETrainer

MARKER_FILENAME = "checkpoint.json"
TRAINING_STATE_FILENAME = "training_state.pt"
SAE_CFG_FILENAME = "cfg.json"
TRAINING_KIND = "training"
FINAL_KIND = "final"
STATE_FORMAT_VERSION = 1

# Run-config fields that may change between a checkpoint and the run resuming from it:
# they name, log, place or speed up the run but do not change what is computed.
RESUME_MAY_DIFFER = frozenset(
    {
        "resume",
        "checkpoint_path",
        "verbose",
        "log_to_wandb",
        "wandb_project",
        "wandb_entity",
        "wandb_id",
        "run_name",
        "log_activations_store_to_wandb",
        "log_optimizer_state_to_wandb",
        "n_checkpoints",
        "checkpoint_spacing",
        "device",
        "act_store_device",
        "compile_llm",
        "llm_compilation_mode",
        "reuse_freed_memory",
        "fused_forward",
        "compile_sae",
        "sae_compilation_mode",
        "sae_lens_version",
        "sae_lens_training_version",
        "tokens_per_buffer",
    }
)


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint folder and what its marker says about it."""

    path: Path
    kind: str
    n_training_steps: int
    n_training_tokens: int
    created: float


# --- atomic folders --------------------------------------------------------------------------
# A write that fails with less than this free on its disk is reported as a full disk.
_NEARLY_FULL = 64 * 2**20


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(final_path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final_path`; when the block succeeds, fsync
    its files and rename it to `final_path` (replacing an existing folder of that name).
    When the block raises, the temporary folder is removed and nothing else changes."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = final_path.with_name(f"{final_path.name}.tmp-{secrets.token_hex(4)}")
    tmp_path.mkdir()
    try:
        yield tmp_path
        for file in tmp_path.rglob("*"):
            if file.is_file():
                _fsync_path(file)
        _fsync_path(tmp_path)
        _replace_folder(tmp_path, final_path)
    except BaseException as error:
        written = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
        shutil.rmtree(tmp_path, ignore_errors=True)
        free = shutil.disk_usage(final_path.parent).free
        if isinstance(error, (OSError, RuntimeError)) and free < max(written, _NEARLY_FULL):
            # (torch.save reports a full disk as "unexpected pos ...")
            raise OSError(
                f"could not write {final_path}: its disk is full ({free:,} bytes free after "
                f"removing the {written:,} bytes written); free some space (a run resumes "
                f"from its last complete checkpoint). The write failed with: {error}"
            ) from error
        raise
    _fsync_path(final_path.parent)


def _replace_folder(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside first.
    old = dst.with_name(f"{dst.name}.old-{secrets.token_hex(4)}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


# --- RNG state ------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The global random states that training may draw from (noise, init, sampling)."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state`: the next random draws equal those after the capture."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _run_config_dict(cfg: LanguageModelSAERunnerConfig) -> dict[str, Any]:
    """The run config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(cfg.to_dict()))


# --- writing --------------------------------------------------------------------------------
def _write_marker(folder: Path, kind: str, trainer: SAETrainer) -> None:
    marker = {
        "kind": kind,
        "n_training_steps": trainer.n_training_steps,
        "n_training_tokens": trainer.n_training_tokens,
        "created": time.time(),
        "sae_lens_version": __version__,
    }
    with open(folder / MARKER_FILENAME, "w") as f:
        json.dump(marker, f, indent=2)


def _write_sae_folder(trainer: SAETrainer, folder: Path) -> None:
    """The SAE as `save_model` writes it, with the run config merged into `cfg.json`."""
    with trainer.evaluation_weights():  # schedule-free: the averaged weights, not the iterate
        trainer.sae.save_model(str(folder), trainer.saved_log_feature_sparsity)
    cfg_path = folder / SAE_CFG_FILENAME
    with open(cfg_path) as f:
        sae_cfg = json.load(f)
    # 5.6.0 writes the run config, a superset of the SAE config, as cfg.json.
    # Where both name a value, the SAE's wins: it describes the weights in this folder
    # (the SAE may come from `from_pretrained_path` or be passed in by the caller).
    merged = {**_run_config_dict(trainer.cfg), **sae_cfg}
    with open(cfg_path, "w") as f:
        json.dump(merged, f, indent=2)


def save_training_checkpoint(
    trainer: SAETrainer,
    folder: str | Path,
    extra_state: dict[str, Any] | None = None,
    rank_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a resumable checkpoint of `trainer` to `folder`, atomically.

    `extra_state` (plain values, e.g. the wandb run id) is stored beside the trainer state.
    Once `trainer.training_complete` is set, only the final SAE folder is written. Each
    rank's own state (`rank_state`) is gathered from the ranks of the trainer's run, or
    given as `rank_states` (rank order) by a caller that gathered it.
    """
    folder = Path(folder)
    distributed = trainer.distributed
    ranks = rank_states
    if ranks is None and not trainer.training_complete:  # a collective: all ranks call it
        store, eval_store = trainer.activations_store, trainer.eval_activations_store
        ranks = distributed.gather(rank_state(store, eval_store))
    if not distributed.is_main:  # only rank 0 writes
        return folder
    with atomic_folder(folder) as tmp:
        _write_sae_folder(trainer, tmp)
        if ranks is None:
            _write_marker(tmp, FINAL_KIND, trainer)
        else:
            state = {
                "format_version": STATE_FORMAT_VERSION,
                "run_config": _run_config_dict(trainer.cfg),
                "trainer": trainer.state_dict(),
                "sae_state_dict": trainer.sae.state_dict(),
                **ranks[0],
                "world_size": len(ranks),
                "other_ranks": ranks[1:],
                "extra": extra_state or {},
            }
            torch.save(state, tmp / TRAINING_STATE_FILENAME)
            _write_marker(tmp, TRAINING_KIND, trainer)
    return folder


def rank_state(store: Any, eval_store: Any | None) -> dict[str, Any]:
    """What each rank of a run keeps of its own for one SAE: its stores' positions (no
    evaluation store where the rank has none or evaluates on the training store) and its
    RNG states."""
    state = {"activations_store": store.checkpoint_state(), "rng": capture_rng_state()}
    if eval_store is not None and eval_store is not store:
        state["eval_activations_store"] = eval_store.checkpoint_state()
    return state


# --- finding and reading ------------------------------------------------------------------
def read_checkpoint_info(folder: str | Path) -> CheckpointInfo | None:
    """What the marker of `folder` says, or None when it is not a complete checkpoint."""
    folder = Path(folder)
    if ".tmp-" in folder.name or ".old-" in folder.name:
        return None
    try:
        with open(folder / MARKER_FILENAME) as f:
            marker = json.load(f)
        info = CheckpointInfo(
            path=folder,
            kind=marker["kind"],
            n_training_steps=int(marker["n_training_steps"]),
            n_training_tokens=int(marker["n_training_tokens"]),
            created=float(marker["created"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.kind == TRAINING_KIND and not (folder / TRAINING_STATE_FILENAME).is_file():
        return None
    return info


def list_checkpoints(run_dir: str | Path, kind: str | None = TRAINING_KIND) -> list[CheckpointInfo]:
    """Complete checkpoints directly inside `run_dir` (of `kind`, or all kinds when None),
    oldest first by training step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [read_checkpoint_info(child) for child in run_dir.iterdir() if child.is_dir()]
    infos = [i for i in found if i is not None and (kind is None or i.kind == kind)]
    return sorted(infos, key=lambda i: (i.n_training_steps, i.created))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete resumable checkpoint in `run_dir`, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1].path if checkpoints else None


def final_sae_folder(run_dir: str | Path) -> Path | None:
    """The final SAE folder of a finished run, or None."""
    finals = list_checkpoints(run_dir, kind=FINAL_KIND)
    return finals[-1].path if finals else None


def find_run_to_resume(checkpoint_path: str | Path) -> Path:
    """The run folder to resume: `checkpoint_path` itself when it holds checkpoints, else
    its most recently updated run subfolder that does."""
    path = Path(checkpoint_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"resume=True but checkpoint_path {str(path)!r} is not a folder: pass the run "
            "folder of the run to continue"
        )
    if list_checkpoints(path, kind=None):
        return path
    if read_checkpoint_info(path) is not None:
        raise ValueError(
            f"{str(path)!r} is a checkpoint folder: pass its run folder {str(path.parent)!r} "
            "(a run resumes from its newest checkpoint)"
        )
    runs = [
        (max(i.created for i in infos), child)
        for child in path.iterdir()
        if child.is_dir() and (infos := list_checkpoints(child, kind=None))
    ]
    if not runs:
        raise FileNotFoundError(
            f"resume=True but no complete checkpoint was found in {str(path)!r} or its run "
            "subfolders: start a fresh run with resume=False"
        )
    return max(runs)[1]


def load_training_state(checkpoint: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint folder (tensors on CPU), read with
    `weights_only=True`."""
    path = Path(checkpoint) / TRAINING_STATE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(checkpoint)!r} has no {TRAINING_STATE_FILENAME}: not a resumable checkpoint"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(
            f"{path} has training-state format {state.get('format_version')!r}; this version "
            f"of sae_lens reads format {STATE_FORMAT_VERSION}"
        )
    return state


def check_resume_config(
    saved: dict[str, Any], cfg: LanguageModelSAERunnerConfig, tokens_trained: int | None = None
) -> None:
    """Refuse to resume with a config that changes what the run computes. With
    `tokens_trained` (the checkpoint's token count), `training_tokens` may change to any
    length that is not shorter than what was trained: the run is extended or shortened."""
    current = _run_config_dict(cfg)
    may_differ = (
        RESUME_MAY_DIFFER if tokens_trained is None else RESUME_MAY_DIFFER | {"training_tokens"}
    )
    differing = sorted(
        name
        for name in set(saved) | set(current)
        if name not in may_differ
        and name in LanguageModelSAERunnerConfig.__dataclass_fields__
        and saved.get(name) != current.get(name)
    )
    if differing:
        details = "; ".join(
            f"{name}: checkpoint {saved.get(name)!r}, now {current.get(name)!r}"
            for name in differing
        )
        raise ValueError(
            f"cannot resume: the config differs from the checkpoint's in {differing} "
            f"({details}); use the original values or start a new run"
        )
    if tokens_trained is not None and cfg.total_training_tokens < tokens_trained:
        raise ValueError(
            f"cannot resume: the checkpoint has already trained {tokens_trained:,} tokens but "
            f"training_tokens + finetuning_tokens is {cfg.total_training_tokens:,}; set "
            f"training_tokens to at least {tokens_trained - cfg.finetuning_tokens:,}"
        )


def restore_training_state(
    trainer: SAETrainer, state: dict[str, Any], rank: int | None = None
) -> dict[str, Any]:
    """Load a checkpoint's training state (from `load_training_state`) into a freshly
    built trainer, its SAE and activation store included, and into the global RNGs;
    returns the checkpoint's `extra_state`. The state's run config must agree with the
    trainer's (see `check_resume_config`), except perhaps in `training_tokens`: then the
    run continues to the trainer's length, its schedules those of a run configured with
    that length from the start."""
    check_resume_config(state["run_config"], trainer.cfg, state["trainer"]["n_training_tokens"])
    if rank is None:  # (else: a rank of a run whose SAEs are spread over its ranks)
        check_world_size(state, trainer.distributed.world_size)
    own = own_rank_state(state, trainer.distributed.rank if rank is None else rank)
    trainer.sae.load_state_dict(state["sae_state_dict"])
    trainer.load_state_dict(state["trainer"])
    if state["run_config"]["training_tokens"] != trainer.cfg.training_tokens:
        trainer.adopt_run_length()  # schedules as if configured with the new length
    trainer.activations_store.load_checkpoint_state(own["activations_store"])
    if "eval_activations_store" in own:  # checkpoints written before it was saved lack it
        trainer.eval_activations_store.load_checkpoint_state(own["eval_activations_store"])
    restore_rng_state(own["rng"])
    return state["extra"]


def own_rank_state(state: dict[str, Any], rank: int) -> dict[str, Any]:
    """Rank `rank`'s part of a checkpoint's training state (see `rank_state`)."""
    return state if rank == 0 else state["other_ranks"][rank - 1]


def check_world_size(state: dict[str, Any], world_size: int) -> None:
    """Refuse to resume a checkpoint written by a run of another number of processes: each
    process's data position is part of it, and a run's token order depends on the count."""
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise ValueError(
            f"cannot resume: the checkpoint was written by a run of {saved} process(es) and "
            f"this run has {world_size}; resume with the same number of processes (on one "
            f"node: torchrun --nproc_per_node {saved}), or start a new run from its weights "
            "with from_pretrained_path"
        )
