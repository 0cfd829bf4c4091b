"""`SAETrainingRunner`: one SAE training run from one `LanguageModelSAERunnerConfig`, and
its command line, `python -m sae_lens.sae_training_runner --help`.

The runner loads the model and the activation store, builds (or loads, or resumes) the
SAE, trains it with `SAETrainer` while SIGINT/SIGTERM save a checkpoint and stop cleanly,
and leaves in the run folder (`cfg.checkpoint_path`): checkpoints, the final SAE folder
`final_<tokens>`, `metrics.jsonl` and `training_curves.png`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from sae_lens import logger
from sae_lens.allocator import freed_memory_reused
from sae_lens.cli_support import (
    USER_ERRORS,
    CommandLineParser,
    check_dataset_path,
    check_device,
    check_input_path,
    check_model_name,
    check_output_folder,
    exit_code,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import HfDataset, LanguageModelSAERunnerConfig
from sae_lens.config_help import TRAINING_FIELD_GROUPS, training_field_help
from sae_lens.dataset_sources import held_out_split, load_any_dataset
from sae_lens.load_model import load_model
from sae_lens.toolkit.pretrained_sae_loaders import read_local_sae_folder
from sae_lens.training import checkpoints
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.data_parallel import agree_on_start, join_run, shard_stores
from sae_lens.training.distributed import (
    RankFailedError,
    launch_command,
    launched_rank,
    leave_run,
)
from sae_lens.training.geometric_median import compute_geometric_median
from sae_lens.training.metrics_log import (
    CURVES_FILENAME,
    METRICS_FILENAME,
    plot_training_curves,
)
from sae_lens.training.optim import lr_multiplier
from sae_lens.training.sae_trainer import InterruptedException, SAETrainer, TrainingDivergedError
from sae_lens.training.training_sae import TrainingSAE
from sae_lens.training.training_sae import TrainingSAEConfig as TrainingSAEConfig
from sae_lens.training.wandb_logging import (
    artifact_metadata,
    current_wandb_run_id,
    finish_wandb_run,
    log_sae_artifacts,
    start_wandb_run,
)

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookedRootModule


__all__ = [
    "InterruptedException",
    "SAETrainingRunner",
    "interrupt_callback",
    "main",
]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RUN_CONFIG_FILENAME = "run_config.json"


def interrupt_callback(sig_num: Any, stack_frame: Any) -> None:  # noqa: ARG001
    """Signal handler that stops training at once (mid-step, without a checkpoint)."""
    raise InterruptedException(f"interrupted by signal {sig_num} in the middle of a step")


class SAETrainingRunner:
    """Trains one SAE as `cfg` describes.

    `override_dataset`, `override_model` and `override_sae` replace what the config would
    load. With `cfg.resume`, the run continues from the newest complete checkpoint in
    `cfg.checkpoint_path` (or in its most recently updated run subfolder).
    """

    def __init__(
        self,
        cfg: LanguageModelSAERunnerConfig,
        override_dataset: HfDataset | None = None,
        override_model: HookedRootModule | None = None,
        override_sae: TrainingSAE | None = None,
    ) -> None:

        _check_run_length(cfg)
        _check_schedules(cfg)
        _warn_if_dead_latents_cannot_show(cfg)
        self.cfg = cfg
        # torchrun: this process's rank (its device, the shared run folder); else one process
        self.distributed = join_run(cfg)
        self._resume_state: dict[str, Any] | None = None
        self._finished_sae_folder: Path | None = None
        if cfg.resume:
            self._prepare_resume()  # fails fast, before the model is loaded
        else:
            _seed_everything(cfg.seed)
        for name, override in (("dataset", override_dataset), ("model", override_model)):
            if override is not None:
                logger.warning(
                    f"an override {name} replaces the configured one: this run cannot be "
                    "reproduced from its config alone"
                )

        self.model = override_model
        if self.model is None:
            self.model = load_model(
                cfg.model_class_name,
                cfg.model_name,
                device=cfg.device,
                model_from_pretrained_kwargs=cfg.model_from_pretrained_kwargs,
            )
        self.activations_store = ActivationsStore.from_config(
            self.model, cfg, override_dataset=override_dataset
        )
        if cfg.compile_llm:
            self.activations_store.compile_model_forward(cfg.llm_compilation_mode)
        self.eval_activations_store = self._evaluation_store(override_dataset)
        shard_stores(self.distributed, cfg, self.activations_store, self.eval_activations_store)
        self.sae = override_sae if override_sae is not None else self._build_sae()

    # --- setup -----------------------------------------------------------------------------
    def _evaluation_store(self, override_dataset: HfDataset | None) -> ActivationsStore | None:
        assert self.model is not None
        return evaluation_store(self.model, self.cfg, override_dataset)

    def _prepare_resume(self) -> None:
        run_dir = checkpoints.find_run_to_resume(self.cfg.checkpoint_path)
        self.cfg.checkpoint_path = str(run_dir)
        resumable = checkpoints.list_checkpoints(run_dir)
        finals = checkpoints.list_checkpoints(run_dir, kind=checkpoints.FINAL_KIND)
        latest = resumable[-1] if resumable else None
        if finals and (latest is None or finals[-1].n_training_steps >= latest.n_training_steps):
            final = finals[-1]
            if self.cfg.total_training_tokens <= final.n_training_tokens:
                self._prepare_finished(run_dir, final)
                return
            latest = self._end_state_to_extend(run_dir, final, resumable)
        assert latest is not None  # find_run_to_resume found a checkpoint of some kind
        state = checkpoints.load_training_state(latest.path)
        checkpoints.check_world_size(state, self.distributed.world_size)
        tokens_trained = state["trainer"]["n_training_tokens"]
        _adopt_d_out(self.cfg, state["run_config"])
        checkpoints.check_resume_config(state["run_config"], self.cfg, tokens_trained)
        if state["run_config"]["training_tokens"] != self.cfg.training_tokens:
            logger.info(
                f"run length changes from {state['run_config']['training_tokens']:,} to "
                f"{self.cfg.training_tokens:,} training tokens"
            )
        logger.info(f"resuming from {latest.path} (step {state['trainer']['n_training_steps']})")
        self._resume_state = state

    def _prepare_finished(self, run_dir: Path, final: checkpoints.CheckpointInfo) -> None:
        """Resuming a run that reached its length: `run()` returns its final SAE."""
        if self.cfg.total_training_tokens < final.n_training_tokens:
            raise ValueError(
                f"cannot resume: run {run_dir} already trained {final.n_training_tokens:,} "
                f"tokens, more than training_tokens + finetuning_tokens = "
                f"{self.cfg.total_training_tokens:,}: a finished run can be extended, not shortened"
            )
        run_config = run_dir / RUN_CONFIG_FILENAME
        if run_config.is_file():  # a finished run cannot take other settings
            saved = json.loads(run_config.read_text())
            _adopt_d_out(self.cfg, saved)
            checkpoints.check_resume_config(saved, self.cfg)
        logger.warning(f"run {run_dir} already finished: run() returns its final SAE {final.path}")
        self._finished_sae_folder = final.path

    @staticmethod
    def _end_state_to_extend(
        run_dir: Path,
        final: checkpoints.CheckpointInfo,
        resumable: list[checkpoints.CheckpointInfo],
    ) -> checkpoints.CheckpointInfo:
        """The training state a finished run left at its end, which a longer run continues."""
        for info in reversed(resumable):
            if info.n_training_steps == final.n_training_steps:
                return info
        raise ValueError(
            f"cannot extend run {run_dir}: it finished at {final.n_training_tokens:,} tokens "
            "without a training-state checkpoint of its end (runs written before this version "
            "of sae_lens lack one); start a new run from its weights with "
            f"from_pretrained_path={str(final.path)!r}"
        )

    def _build_sae(self) -> TrainingSAE:
        fresh = self._resume_state is None and self._finished_sae_folder is None
        return build_sae(self.cfg, self.activations_store, set_b_dec=fresh)

    def _sae_from_pretrained_path(self, path: str) -> TrainingSAE:
        return sae_from_pretrained_path(self.cfg, path)

    def _init_sae_group_b_decs(self, sae: TrainingSAE) -> None:
        """Set b_dec from a buffer of activations: their geometric median or mean."""
        init_b_dec(sae, self.cfg.b_dec_init_method, self.activations_store)

    # --- running ---------------------------------------------------------------------------
    def run(self) -> TrainingSAE:
        """Train the SAE (or finish a resumed run) and return it."""

        if self._finished_sae_folder is not None:
            self._announce(
                f"run {Path(self.cfg.checkpoint_path).resolve()} already finished: returning "
                f"its final SAE {self._finished_sae_folder.resolve()}"
            )
            return TrainingSAE.load_from_pretrained(str(self._finished_sae_folder), self.cfg.device)
        self._announce_start()
        trainer = SAETrainer(
            model=self.model,
            sae=self.sae,
            activation_store=self.activations_store,
            save_checkpoint_fn=self.save_checkpoint,
            cfg=self.cfg,
            eval_activation_store=self.eval_activations_store,
            distributed=self.distributed,
        )
        resuming = self._resume_state is not None
        wandb_run_id = self._restore(trainer)
        if not resuming:
            agree_on_start(self.distributed, self.sae, self.activations_store)
        main = self.distributed.is_main  # only rank 0 writes and logs
        if main:
            self._write_run_config()
        if self.cfg.log_to_wandb and main:
            start_wandb_run(self.cfg, wandb_run_id, resume=resuming)
        succeeded = False
        try:
            with freed_memory_reused(self.cfg.device, self.cfg.reuse_freed_memory):
                sae = self.run_trainer_with_interruption_handling(trainer)
            succeeded = True
        finally:
            if self.cfg.log_to_wandb and main:
                finish_wandb_run(succeeded)
            if main:
                self._plot_curves()
        logger.info(f"training finished: run folder {self.cfg.checkpoint_path}")
        return sae

    def _announce(self, message: str) -> None:
        """Tell the user (on stderr, beside the progress bar) what the run does, when
        `cfg.verbose` (in a data-parallel run: rank 0)."""
        if self.cfg.verbose and self.distributed.is_main:
            print(message, file=sys.stderr, flush=True)

    def _announce_start(self) -> None:
        cfg, sae = self.cfg, self.sae
        run_dir = Path(cfg.checkpoint_path).resolve()
        hooks = (
            cfg.hook_name
            if cfg.hook_name_out is None
            else f"{cfg.hook_name} -> {cfg.hook_name_out}"
        )
        kind = "SAE" if cfg.hook_name_out is None else f"transcoder (d_out={sae.cfg.d_out})"
        what = (
            f"{sae.cfg.architecture} {kind} (d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}) on "
            f"{cfg.model_name} {hooks}: {cfg.total_training_steps:,} steps of "
            f"{cfg.train_batch_size_tokens:,} tokens"
        )
        if self._resume_state is None:
            self._announce(f"training a {what}; run folder {run_dir}")
        else:
            step = self._resume_state["trainer"]["n_training_steps"]
            self._announce(f"resuming at step {step:,}: {what}; run folder {run_dir}")

    def _restore(self, trainer: SAETrainer) -> str:
        """Load the resume state into `trainer`; returns the wandb run id to use."""
        default_id = self.cfg.wandb_id or Path(self.cfg.checkpoint_path).name
        state = self._resume_state
        if state is None:
            if checkpoints.list_checkpoints(self.cfg.checkpoint_path, kind=None):
                logger.warning(
                    f"{self.cfg.checkpoint_path} already holds checkpoints of another run: "
                    "set a new checkpoint_path or wandb_id to keep runs apart"
                )
            trainer.metrics_log.truncate_after(-1)  # a fresh run starts a fresh record
            return default_id
        checkpoints.restore_training_state(trainer, state)
        trainer.metrics_log.truncate_after(trainer.n_training_steps - 1)
        self._resume_state = None  # the tensors now live in the trainer
        return state["extra"].get("wandb_run_id") or default_id

    def _write_run_config(self) -> None:
        write_run_config(self.cfg.to_dict(), Path(self.cfg.checkpoint_path))

    def _plot_curves(self) -> None:
        plot_curves(Path(self.cfg.checkpoint_path))

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer) -> TrainingSAE:
        """Run `trainer.fit()`; SIGINT/SIGTERM make it save a checkpoint after the current
        step and raise `InterruptedException` (a second signal stops at once)."""
        try:
            with _stop_on_signals(trainer):
                return trainer.fit()
        except (KeyboardInterrupt, InterruptedException) as error:
            if getattr(error, "checkpoint", None) is None:
                latest = checkpoints.latest_checkpoint(self.cfg.checkpoint_path)
                logger.warning(
                    "stopped in the middle of a step: no checkpoint was written from that "
                    f"state; the newest complete checkpoint is {latest}"
                )
            raise

    @staticmethod
    def save_checkpoint(
        trainer: SAETrainer, checkpoint_name: str, wandb_aliases: list[str] | None = None
    ) -> None:
        """Write `<cfg.checkpoint_path>/<checkpoint_name>` atomically (see
        `sae_lens.training.checkpoints`) and, with wandb on, log the SAE as artifacts."""
        folder = Path(trainer.cfg.checkpoint_path) / checkpoint_name
        extra = {"wandb_run_id": current_wandb_run_id() if trainer.cfg.log_to_wandb else None}
        checkpoints.save_training_checkpoint(trainer, folder, extra_state=extra)
        if not trainer.distributed.is_main:
            return  # rank 0 wrote the checkpoint and logs it
        logger.info(f"saved checkpoint {folder}")
        # the end-of-run training state stays local (for extending the run): the final SAE
        # folder is the artifact of that step
        end_state = trainer.n_training_tokens >= trainer.cfg.total_training_tokens
        if trainer.cfg.log_to_wandb and (trainer.training_complete or not end_state):
            # in a multi-SAE run the SAE's name comes first: SAEs of one hook and width
            # (a sweep) would otherwise share one artifact and its aliases
            name = trainer.wandb_key_prefix + trainer.sae.get_name()
            log_sae_artifacts(name, folder, artifact_metadata(trainer.cfg), wandb_aliases)


# --- the parts of a run, also used by the multi-SAE runner --------------------------------------
def evaluation_store(
    model: HookedRootModule, cfg: LanguageModelSAERunnerConfig, override_dataset: HfDataset | None
) -> ActivationsStore | None:
    """The store periodic evaluation reads, apart from the training stream (see
    `evaluation_dataset`). None when the run is too short to evaluate."""
    if not evaluates(cfg):
        return None
    dataset = evaluation_dataset(cfg, override_dataset)
    return ActivationsStore.from_config(model, cfg, override_dataset=dataset)


def evaluates(cfg: LanguageModelSAERunnerConfig) -> bool:
    """Whether a run of `cfg` is long enough for a periodic evaluation."""
    return cfg.total_training_steps >= cfg.wandb_log_frequency * cfg.eval_every_n_wandb_logs


def evaluation_dataset(
    cfg: LanguageModelSAERunnerConfig, override_dataset: HfDataset | None
) -> HfDataset | None:
    """The dataset evaluation reads: the dataset's held-out split where it has one, else
    `override_dataset` (None: the configured dataset, in a pass of its own)."""
    split = None if override_dataset is not None else held_out_split(cfg.dataset_path)
    dataset = override_dataset
    if split is not None:
        dataset = load_any_dataset(
            cfg.dataset_path,
            split=split,
            streaming=cfg.streaming,
            trust_remote_code=cfg.dataset_trust_remote_code,
        )
    where = f"the held-out {split!r} split" if split else "a pass of its own over the data"
    logger.info(f"evaluation during training reads {where}")
    return dataset


def build_sae(
    cfg: LanguageModelSAERunnerConfig, store: ActivationsStore, set_b_dec: bool
) -> TrainingSAE:
    """The SAE a run starts from: `cfg.from_pretrained_path`'s weights, or a new SAE (its
    b_dec set from `store`'s activations when `set_b_dec`)."""
    if cfg.from_pretrained_path is not None:
        return sae_from_pretrained_path(cfg, cfg.from_pretrained_path)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    if set_b_dec:
        init_b_dec(sae, cfg.b_dec_init_method, store)
    return sae


def sae_from_pretrained_path(cfg: LanguageModelSAERunnerConfig, path: str) -> TrainingSAE:
    """A TrainingSAE holding the weights of the SAE folder at `path`, in any format the
    loaders read (a training checkpoint, a folder saved for inference, a published SAE),
    with the run's training options. Its architecture and sizes must be the run config's."""
    folder_cfg, state_dict, _ = read_local_sae_folder(path, device=cfg.device)
    run_cfg = cfg.get_training_sae_cfg_dict()
    differing = [k for k in ("architecture", "d_in", "d_sae") if folder_cfg[k] != run_cfg[k]]
    if differing:
        found = ", ".join(f"{k}={folder_cfg[k]!r}" for k in differing)
        wanted = ", ".join(f"{k}={run_cfg[k]!r}" for k in differing)
        raise ValueError(
            f"from_pretrained_path {path!r} holds an SAE with {found} but the run config "
            f"has {wanted}: set those fields to the folder's values"
        )
    weights_define = ("activation_fn_str", "activation_fn_kwargs", "apply_b_dec_to_input")
    sae_cfg = {**run_cfg, **{k: folder_cfg[k] for k in weights_define if k in folder_cfg}}
    sae_cfg["finetuning_scaling_factor"] = "finetuning_scaling_factor" in state_dict
    return TrainingSAE._from_cfg_and_weights(sae_cfg, state_dict)


def init_b_dec(sae: TrainingSAE, method: str, store: ActivationsStore) -> None:
    """Set b_dec from a buffer of `store`'s activations: their geometric median or mean
    (`method` "zeros" leaves it). A transcoder's b_dec is its output bias: it is set from
    the targets (the activations at hook_name_out)."""
    if method == "zeros":
        return
    # b_dec lives in the space the SAE trains in: the scaled activations.
    store.set_norm_scaling_factor_if_needed()
    inputs, targets = store.split_rows(store.storage_buffer.detach()[:, 0, :])
    layer_acts = inputs if targets is None else targets  # [n, d_in] (a transcoder's [n, d_out])
    if method == "geometric_median":
        median = compute_geometric_median(layer_acts, maxiter=100).median
        sae.initialize_b_dec_with_precalculated(median)
    else:
        sae.initialize_b_dec_with_mean(layer_acts.cpu())


def write_run_config(run_config: dict[str, Any], run_dir: Path) -> None:
    """`run_config.json` in the run folder: `--config` for resuming from the CLI, from any
    working directory (the run folder is stored as an absolute path)."""
    path = run_dir / RUN_CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    run_config = {**run_config, "checkpoint_path": str(path.parent.resolve())}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(run_config, f, indent=2)
    os.replace(tmp, path)


def plot_curves(run_dir: Path) -> None:
    """`training_curves.png` from the run folder's metrics.jsonl (a failure only warns)."""
    metrics_path = run_dir / METRICS_FILENAME
    if not metrics_path.is_file() or metrics_path.stat().st_size == 0:
        return
    try:
        plot_training_curves(metrics_path, run_dir / CURVES_FILENAME)
    except Exception as error:  # a failed plot must not hide the training outcome
        logger.warning(f"could not draw {CURVES_FILENAME}: {error}")


def _adopt_d_out(cfg: LanguageModelSAERunnerConfig, saved: dict[str, Any]) -> None:
    """A resumed transcoder run whose d_out is unset (read from the model) takes the run's
    recorded d_out; the store still checks it against the model's activations."""
    if cfg.hook_name_out is not None and cfg.d_out is None:
        cfg.d_out = saved.get("d_out")


def _check_run_length(cfg: LanguageModelSAERunnerConfig) -> None:
    """Refuse a run of no training step: it would save an SAE that never trained."""
    if cfg.total_training_steps < 1:
        raise ValueError(
            f"training_tokens + finetuning_tokens = {cfg.total_training_tokens:,} is less than "
            f"one step of train_batch_size_tokens = {cfg.train_batch_size_tokens:,}: nothing "
            "would be trained; raise training_tokens"
        )


def _check_schedules(cfg: LanguageModelSAERunnerConfig) -> None:
    """Fail before any loading when the lr schedule does not fit the run's steps."""
    lr_multiplier(
        cfg.lr_scheduler_name,
        training_steps=cfg.total_training_steps,
        lr=cfg.lr,
        warm_up_steps=cfg.lr_warm_up_steps,
        decay_steps=cfg.lr_decay_steps,
        lr_end=cast(float, cfg.lr_end),
        num_cycles=cfg.n_restart_cycles,
    )


def _warn_if_dead_latents_cannot_show(cfg: LanguageModelSAERunnerConfig) -> None:
    """A latent counts as dead after `dead_feature_window` steps without firing: in a
    shorter run none can, so say so rather than let the metrics read 0 dead."""
    if cfg.dead_feature_window >= cfg.total_training_steps:
        warnings.warn(
            f"dead_feature_window ({cfg.dead_feature_window} steps) is not shorter than this "
            f"run ({cfg.total_training_steps} steps): no latent can count as dead during "
            "training, so the dead-feature metrics stay 0 and the losses that act on dead "
            "latents (topk's AuxK, ghost grads) never switch on. Lower dead_feature_window "
            "for short runs; an evaluation's feature density shows latents that never fire.",
            stacklevel=3,
        )


def _seed_everything(seed: int) -> None:
    """Seed torch, numpy and `random`, so a fresh run is reproducible from its config."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def _stop_on_signals(trainer: SAETrainer) -> Iterator[None]:
    """While active, the first SIGINT/SIGTERM asks the trainer to stop after its current
    step; a second one interrupts at once. The previous handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(sig_num: int, frame: Any) -> None:
        if trainer.stop_requested is not None:
            interrupt_callback(sig_num, frame)
        trainer.request_stop(f"received {signal.Signals(sig_num).name}")

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- command line -------------------------------------------------------------------------------
PROG = "python -m sae_lens.sae_training_runner"
# Written into run_config.json by `to_dict` (derived, not settable): a --config may hold it.
_DERIVED_KEYS = ("tokens_per_buffer",)
# On the command line a long CPU run is the common case: reuse freed memory unless told.
_CLI_DEFAULTS: dict[str, Any] = {"reuse_freed_memory": True}


def build_cli_parser() -> CommandLineParser:
    """The parser of `python -m sae_lens.sae_training_runner`: `--config FILE` and one flag
    per `LanguageModelSAERunnerConfig` field, described from `sae_lens.config_help`."""
    parser = CommandLineParser(
        prog=PROG,
        description="Train a sparse autoencoder on a language model's activations. Every "
        "LanguageModelSAERunnerConfig field is a flag; booleans take true/false, dict fields "
        "take JSON objects, ints also take 2e5. With no flags it trains on the embedded model "
        "and corpus. Mistakes exit with code 2 and one line naming the culprit.",
    )
    parser.add_config_option()
    parser.add_fields(
        LanguageModelSAERunnerConfig,
        training_field_help(),
        groups=[(topic, list(group)) for topic, group in TRAINING_FIELD_GROUPS],
        shown_defaults=_CLI_DEFAULTS,
    )
    return parser


def parse_cli_config(argv: Sequence[str]) -> LanguageModelSAERunnerConfig:
    """Build the run config from command-line arguments: every config field is a
    `--field` flag, `--config FILE` (.json/.yaml) supplies values that flags override."""
    values = parse_command_line(
        build_cli_parser(), argv, defaults=_CLI_DEFAULTS, ignored_file_keys=_DERIVED_KEYS
    )
    return LanguageModelSAERunnerConfig(**values)


def check_run_inputs(cfg: LanguageModelSAERunnerConfig) -> None:
    """The checks of a run's shared inputs: at least one training step, devices this
    machine has, a model and (unless reading cached activations) a dataset that can exist."""
    _check_run_length(cfg)
    check_device(cfg.device, "device")
    if cfg.act_store_device != cfg.device:
        check_device(cfg.act_store_device, "act_store_device")
    check_model_name(cfg.model_class_name, cfg.model_name)
    if not cfg.use_cached_activations:
        check_dataset_path(cfg.dataset_path)


def check_cli_config(cfg: LanguageModelSAERunnerConfig) -> None:
    """What the command line refuses before loading anything: a run of no training step, a
    device this machine lacks, a model, dataset or SAE folder that cannot exist, and a run
    folder that is a file."""
    check_run_inputs(cfg)
    for name in ("from_pretrained_path", "cached_activations_path"):
        path = getattr(cfg, name)
        if path is not None and (name != "cached_activations_path" or cfg.use_cached_activations):
            check_input_path(path, name, local=True)
    if cfg.resume:
        checkpoints.find_run_to_resume(cfg.checkpoint_path)  # fails on a folder without one
    else:  # a fresh run writes into <checkpoint_path>/<run id>
        check_output_folder(Path(cfg.checkpoint_path).parent, "checkpoint_path")


def _parse_cfg_args(args: Sequence[str]) -> LanguageModelSAERunnerConfig:
    """5.6.0's parser entry point: the run config from command-line arguments (no
    arguments print the help, as in 5.6.0)."""
    return parse_cli_config(list(args) or ["--help"])


def _run_cli(args: Sequence[str]) -> None:
    """5.6.0's command-line entry point: parse `args` and train (a mistake exits with code 2
    and one line)."""
    code = main(list(args) or ["--help"])
    if code:
        sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code: 0 trained, 1 the loss
    diverged, 2 a mistake in the arguments, the config or the inputs (one line on stderr,
    nothing written), 130 interrupted (a checkpoint to resume from is kept)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return exit_code(report_user_errors(lambda: _train_from_command_line(args)))


def _train_from_command_line(args: list[str]) -> int:
    cfg = parse_cli_config(args)
    check_cli_config(cfg)
    main_process = launched_rank() == 0  # (under torchrun only rank 0 writes and reports)
    run_dir = Path(cfg.checkpoint_path)
    new_folders = [p for p in (run_dir, *run_dir.parents) if not p.exists() and main_process]
    try:
        sae = SAETrainingRunner(cfg).run()
    except (TrainingDivergedError, RankFailedError) as error:  # not the user's mistake
        print(f"error: {error}", file=sys.stderr)
        return 1
    except USER_ERRORS:
        _remove_unstarted_run(new_folders)
        raise
    except InterruptedException as error:
        if main_process:
            print(
                f"{error}\nresume with: {launch_command(PROG)} --config "
                f"{Path(cfg.checkpoint_path).resolve() / RUN_CONFIG_FILENAME} --resume true",
                file=sys.stderr,
            )
        return 130
    finally:
        leave_run()
    if not main_process:
        return 0
    run_dir = Path(cfg.checkpoint_path)
    final = checkpoints.final_sae_folder(run_dir)
    print(f"trained SAE ({sae.cfg.architecture}, d_sae={sae.cfg.d_sae}): {final}")
    print_run_outputs(run_dir)
    return 0


def _remove_unstarted_run(new_folders: list[Path]) -> None:
    """After a mistake stopped a fresh run: remove the folders it created (deepest first),
    unless one holds a checkpoint, so no run folder is left that looks like a run."""
    for folder in new_folders:
        if not folder.is_dir():
            continue
        if checkpoints.list_checkpoints(folder, kind=None):
            return
        if folder == new_folders[0]:
            shutil.rmtree(folder)
        elif not any(folder.iterdir()):
            folder.rmdir()


def print_run_outputs(run_dir: Path) -> None:
    """Print where a finished run's final SAE, metrics file and training curves are."""
    outputs = {
        "SAE folder": checkpoints.final_sae_folder(run_dir),
        "metrics file": run_dir / METRICS_FILENAME,
        "training curves": run_dir / CURVES_FILENAME,
    }
    for name, path in outputs.items():
        print(f"{name + ':':<18}{path}")


if __name__ == "__main__":
    sys.exit(main())
