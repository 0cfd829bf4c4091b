"""`MultiSAETrainingRunner`: many SAEs trained from one model pass per batch, and its
command line, `python -m sae_lens.multi_sae_training_runner --config multi.yaml`.

Each SAE is what a single run of its resolved config (`MultiSAETrainingRunnerConfig.resolve`)
would train: its own activations store (fed by one shared model forward that reads every
hook, `sae_lens.training.shared_forward`), its own `SAETrainer`, its own random state (so one
SAE's noise never moves another's), the same tokens in the same order. The SAEs step in
turn on each batch. The run folder `<checkpoint_path>/<run id>` holds `run_config.json` and
one folder per SAE, laid out as a single run's folder: checkpoints, `final_<tokens>`,
`metrics.jsonl`, `training_curves.png`. With wandb on, one wandb run logs every SAE's
metrics, each key prefixed with `<name>/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from sae_lens import logger
from sae_lens.allocator import freed_memory_reused
from sae_lens.analysis.hook_checks import hook_layer_of
from sae_lens.cli_support import (
    CLIError,
    CommandLineParser,
    _accept_bool,
    check_input_path,
    check_output_folder,
    exit_code,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.config_help import MULTI_SAE_FIELD_HELP, TRAINING_FIELD_GROUPS, training_field_help
from sae_lens.load_model import load_model
from sae_lens.multi_sae_config import RUN_CONFIG_FILENAME, MultiSAETrainingRunnerConfig
from sae_lens.sae_training_runner import (
    SAETrainingRunner,
    _check_run_length,
    _check_schedules,
    _seed_everything,
    _stop_on_signals,
    _warn_if_dead_latents_cannot_show,
    build_sae,
    check_run_inputs,
    evaluates,
    evaluation_dataset,
    plot_curves,
    write_run_config,
)
from sae_lens.training import checkpoints
from sae_lens.training.data_parallel import (
    agree_on_scaling_factor,
    join_run,
    place_on_rank,
    shard_stores,
)
from sae_lens.training.distributed import (
    RankFailedError,
    launch_command,
    launched_rank,
    leave_run,
)
from sae_lens.training.distributed_saes import SpreadSAEs, assign_owners
from sae_lens.training.sae_trainer import InterruptedException, SAETrainer, TrainingDivergedError
from sae_lens.training.shared_forward import SharedForwardStore
from sae_lens.training.stacked_step import stack_groups, stacked_forward_and_backward, stacking_on
from sae_lens.training.training_sae import TrainingSAE, TrainStepOutput
from sae_lens.training.wandb_logging import finish_wandb_run, start_wandb_run

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookedRootModule

__all__ = ["MultiSAETrainingRunner", "MultiSAETrainingRunnerConfig", "main"]


class MultiSAETrainingRunner:
    """Trains every SAE of `cfg` on one stream of activations; `run()` returns them by
    name. `override_model` replaces the configured model."""

    def __init__(
        self, cfg: MultiSAETrainingRunnerConfig, override_model: HookedRootModule | None = None
    ) -> None:
        self.cfg = cfg
        template = cfg.template
        _check_run_length(template)
        # torchrun: this process's rank; every rank writes to rank 0's run folder
        self.distributed = join_run(template)
        cfg.run_dir = self.distributed.broadcast(cfg.run_dir)
        if not cfg.resume:
            _seed_everything(template.seed)
        self.model = override_model or load_model(
            template.model_class_name,
            template.model_name,
            device=template.device,
            model_from_pretrained_kwargs=template.model_from_pretrained_kwargs,
        )
        model = self.model
        self.sae_cfgs = cfg.resolve(list(model.hook_dict), lambda h: hook_layer_of(model, h))
        for sae_cfg in self.sae_cfgs.values():
            _check_schedules(sae_cfg)
            place_on_rank(sae_cfg, self.distributed)
        self.spread = self._spread_saes()
        self._pending_checkpoint: str | None = None  # spread: the checkpoint a step asked for
        _warn_if_dead_latents_cannot_show(template)
        self._finished: dict[str, Path] | None = None
        self._resume_states: dict[str, dict[str, Any]] | None = None
        if cfg.resume:
            self._prepare_resume()
            if self._finished is not None:
                return
        stores = SharedForwardStore.group(model, list(self.sae_cfgs.values()))
        self.stores = dict(zip(self.sae_cfgs, stores, strict=True))
        shard_stores(self.distributed, template, *stores)
        if template.compile_llm:
            self._compile_model_forward()
        self.eval_stores = self._evaluation_stores()
        fresh = self._resume_states is None
        if fresh:
            self._estimate_norm_scaling_factors()
        # Each SAE starts from the random state a single run of it would have: the one here.
        start_rng = checkpoints.capture_rng_state()
        self.saes: dict[str, TrainingSAE] = {}
        self._rng: dict[str, _TorchRNG] = {}
        for name, sae_cfg in self.sae_cfgs.items():
            if not self._trains(name):
                continue
            checkpoints.restore_rng_state(start_rng)
            self.saes[name] = build_sae(sae_cfg, self.stores[name], set_b_dec=fresh)
            if fresh and self.spread is None:  # data parallel: rank 0's SAE on every rank
                self.distributed.broadcast_module(self.saes[name])
            self._rng[name] = _torch_rng()

    def _spread_saes(self) -> SpreadSAEs | None:
        """With `distribute_saes` under torchrun: which rank trains each SAE."""
        if not (self.cfg.distribute_saes and self.distributed.enabled):
            return None
        if self.cfg.template.log_to_wandb:
            raise ValueError(
                "distribute_saes does not log to wandb (each SAE's metrics.jsonl is written by "
                "the process that trains it): set log_to_wandb=False, or drop distribute_saes"
            )
        sizes = {name: c.d_in * c.d_sae for name, c in self.sae_cfgs.items()}
        return SpreadSAEs(self.distributed, assign_owners(sizes, self.distributed.world_size))

    @property
    def _mode(self) -> str:
        return "data parallel" if self.spread is None else "SAEs spread over the processes"

    def _trains(self, name: str) -> bool:
        """True when this process trains SAE `name` (all of them, unless spread)."""
        return self.spread is None or self.spread.owns(name)

    # --- setup -----------------------------------------------------------------------------
    def _compile_model_forward(self) -> None:
        hooks = {cfg.hook_name for cfg in self.sae_cfgs.values()}
        if len(hooks) > 1:
            raise ValueError(
                f"compile_llm compiles the fused forward of one hook, but the SAEs read "
                f"{len(hooks)} hooks ({sorted(hooks)}); set compile_llm=False"
            )
        next(iter(self.stores.values())).compile_model_forward(
            self.cfg.template.llm_compilation_mode
        )

    def _evaluation_stores(self) -> dict[str, SharedForwardStore | None]:
        """Each SAE's evaluation store (as a single run's `evaluation_store`), all fed by one
        shared forward: the final firing frequencies and the evaluations' activations cost
        one model pass for all SAEs."""
        template = self.cfg.template
        if not evaluates(template):
            return dict.fromkeys(self.sae_cfgs)
        dataset = evaluation_dataset(template, None)
        # spread: each SAE's owner evaluates it on the whole evaluation stream, as alone
        names = [name for name in self.sae_cfgs if self._trains(name)]
        cfgs = [self.sae_cfgs[name] for name in names]
        stores = SharedForwardStore.group(self.model, cfgs, dataset)
        if self.spread is None:
            shard_stores(self.distributed, template, *stores)
        return {name: dict(zip(names, stores, strict=True)).get(name) for name in self.sae_cfgs}

    def _estimate_norm_scaling_factors(self) -> None:
        """`normalize_activations="expected_average_only_in"`: estimate every store's factor
        from the same batches a single run's store would use, the stores in step (so the
        shared forward holds one batch at a time, not all of them)."""
        stores = [s for s in self.stores.values() if s._scaler.needs_estimate]
        if not stores:
            return
        n_batches = 1000  # as `ActivationsStore.set_norm_scaling_factor_if_needed`
        totals = [0.0] * len(stores)
        for _ in tqdm(range(n_batches), desc="Estimating norm scaling factors", delay=2.0):
            for i, store in enumerate(stores):
                totals[i] += store._next_unscaled_batch().norm(dim=-1).mean().item()
        for store, total in zip(stores, totals, strict=True):
            store.estimated_norm_scaling_factor = store.d_in**0.5 / (total / n_batches)
            agree_on_scaling_factor(self.distributed, store)

    def _prepare_resume(self) -> None:
        """Find the newest step at which every SAE has a complete checkpoint (a kill while
        checkpoints were written leaves some SAEs a step ahead), or the finished run."""
        run_dir = self.cfg.run_dir
        finals = {n: checkpoints.final_sae_folder(run_dir / n) for n in self.sae_cfgs}
        if all(finals.values()):
            trained = max(
                checkpoints.list_checkpoints(run_dir / n, kind=None)[-1].n_training_tokens
                for n in finals
            )
            if self.cfg.template.total_training_tokens > trained:
                raise ValueError(
                    f"cannot resume {str(run_dir)!r}: it finished at {trained:,} tokens and "
                    "extending a finished multi-SAE run is not supported; start a new run "
                    "(from_pretrained_path can start each SAE from its final folder)"
                )
            self._finished = {n: f for n, f in finals.items() if f is not None}
            logger.warning(f"multi-SAE run {run_dir} already finished: run() returns its SAEs")
            return
        by_step: dict[str, dict[int, Path]] = {}
        for name in self.sae_cfgs:
            infos = checkpoints.list_checkpoints(run_dir / name)
            by_step[name] = {info.n_training_steps: info.path for info in infos}
        common = set.intersection(*(set(steps) for steps in by_step.values()))
        if not common:
            missing = sorted(n for n, steps in by_step.items() if not steps)
            raise FileNotFoundError(
                f"cannot resume {str(run_dir)!r}: no step at which every SAE has a complete "
                f"checkpoint (none for {missing or 'a common step'}); start a new run"
            )
        step = max(common)
        self._resume_states = {}
        for name, sae_cfg in self.sae_cfgs.items():
            state = checkpoints.load_training_state(by_step[name][step])
            checkpoints.check_world_size(state, self.distributed.world_size)
            tokens = state["trainer"]["n_training_tokens"]
            try:
                checkpoints.check_resume_config(state["run_config"], sae_cfg, tokens)
            except ValueError as error:
                raise ValueError(f"SAE {name!r}: {error}") from None
            self._resume_states[name] = state
        logger.info(f"resuming multi-SAE run {run_dir} at step {step}")

    # --- running ---------------------------------------------------------------------------
    def run(self) -> dict[str, TrainingSAE]:
        """Train every SAE (or finish a resumed run); returns them by name."""
        if self._finished is not None:
            device = self.cfg.template.device
            return {
                name: TrainingSAE.load_from_pretrained(str(folder), device)
                for name, folder in self._finished.items()
            }
        template = self.cfg.template
        trainers = {name: self._trainer(name) for name in self.sae_cfgs if self._trains(name)}
        wandb_run_id = self._restore(trainers)
        main = self.distributed.is_main  # only rank 0 writes and logs
        if main:
            write_run_config(self.cfg.to_dict(), self.cfg.run_dir)
            self._announce(trainers)
        if template.log_to_wandb and main:
            name = self.cfg.shared.get("run_name") or self.cfg.run_dir.name
            config = self.cfg.to_dict()
            start_wandb_run(template, wandb_run_id, not self._fresh, config=config, name=name)
        succeeded = False
        try:
            with freed_memory_reused(template.device, template.reuse_freed_memory):
                saes = self._train(trainers)
            succeeded = True
        finally:
            if template.log_to_wandb and main:
                finish_wandb_run(succeeded)
            for name in trainers if main or self.spread else ():
                plot_curves(self.cfg.run_dir / name)
        if self.spread is not None:  # every SAE saved when run() returns, on every rank
            self.distributed.barrier()
        logger.info(f"training finished: run folder {self.cfg.run_dir}")
        return saes

    def _trainer(self, name: str) -> SAETrainer:
        sae_cfg = self.sae_cfgs[name]
        spread = self.spread is not None  # (then checkpoints are written after each step)
        trainer = SAETrainer(
            model=self.model,
            sae=self.saes[name],
            activation_store=self.stores[name],
            save_checkpoint_fn=self._checkpoint_later
            if spread
            else SAETrainingRunner.save_checkpoint,
            cfg=sae_cfg,
            eval_activation_store=self.eval_stores[name],
            distributed=None if spread else self.distributed,
        )
        if sae_cfg.log_to_wandb:
            trainer.wandb_key_prefix = f"{name}/"
        return trainer

    @property
    def _fresh(self) -> bool:
        return self._resume_states is None

    def _restore(self, trainers: dict[str, SAETrainer]) -> str:
        """Load the resume states (if resuming); returns the wandb run id."""
        default_id = self.cfg.template.wandb_id or self.cfg.run_dir.name
        wandb_id = default_id
        if self.spread is not None and self._resume_states is not None:
            self.spread.restore(self._resume_states, self.stores, trainers)
        for name, trainer in trainers.items():
            state = None if self._resume_states is None else self._resume_states[name]
            if state is None:
                trainer.metrics_log.truncate_after(-1)  # a fresh run starts a fresh record
                continue
            if self.spread is None:
                checkpoints.restore_training_state(trainer, state)
            self._rng[name] = _torch_rng()  # the SAE's own random state
            trainer.metrics_log.truncate_after(trainer.n_training_steps - 1)
            wandb_id = state["extra"].get("wandb_run_id") or default_id
        self._resume_states = None if self._resume_states is None else {}
        return wandb_id

    def _announce(self, trainers: dict[str, SAETrainer]) -> None:
        template = self.cfg.template
        if not template.verbose:
            return
        step = next(iter(trainers.values())).n_training_steps
        where = "training" if step == 0 else f"resuming at step {step:,}:"
        hooks = sorted({cfg.hook_name for cfg in self.sae_cfgs.values()})
        world = self.distributed.world_size
        processes = "" if world == 1 else f" in {world} processes ({self._mode})"
        print(
            f"{where} {len(self.sae_cfgs)} SAEs on {template.model_name}{processes} ({len(hooks)} "
            f"hooks, one forward per batch): {template.total_training_steps:,} steps of "
            f"{template.train_batch_size_tokens:,} tokens; run folder {self.cfg.run_dir.resolve()}",
            file=sys.stderr,
            flush=True,
        )

    @contextmanager
    def _own_rng(self, name: str) -> Iterator[None]:
        """Inside the block torch's global random state (CPU and CUDA) is SAE `name`'s own.
        (Training draws only from torch; Python's and NumPy's states stay shared.)"""
        _set_torch_rng(self._rng[name])
        try:
            yield
        finally:
            self._rng[name] = _torch_rng()

    def _train(self, trainers: dict[str, SAETrainer]) -> dict[str, TrainingSAE]:
        template = self.cfg.template
        group = _TrainerGroup(list(trainers.values()))
        first = next(iter(trainers.values()))
        progress = tqdm(
            total=template.total_training_tokens,
            initial=first.n_training_tokens,
            desc=f"Training {len(trainers)} SAEs",
            unit="tok",
            unit_scale=True,
            disable=not (template.verbose and self.distributed.is_main),
        )
        with _stop_on_signals(group), progress:  # type: ignore[arg-type]
            while not first.reached_end:
                # every store takes its batch before any SAE steps: the shared forward
                # then holds no batch at a checkpoint
                batches = self._fetch_batches(trainers)
                for names in self._step_groups(trainers, batches):
                    self._step(names, trainers, batches)
                progress.update(template.train_batch_size_tokens)
                self._write_spread_checkpoints(trainers)
                self._agree_on_stop(group)
                if group.stop_requested is not None and not first.reached_end:
                    self._stop(trainers, group.stop_requested)
        saes = {}
        for name, trainer in trainers.items():
            with self._own_rng(name):
                saes[name] = trainer.finish_training()
        return saes

    def _step_groups(
        self, trainers: dict[str, SAETrainer], batches: dict[str, torch.Tensor]
    ) -> list[list[str]]:
        """The SAEs in the groups that step together (`stack_saes`), else one by one.
        Stacking: every trainer's step is begun first (its k set, its SAE in training
        mode), so that the groups see what the step's forward will."""
        if not stacking_on(self.cfg.stack_saes, self.cfg.template.device):
            return [[name] for name in trainers]
        for trainer in trainers.values():
            trainer.begin_step()
        return stack_groups(trainers, batches)

    def _step(
        self, group: list[str], trainers: dict[str, SAETrainer], batches: dict[str, torch.Tensor]
    ) -> None:
        """One training step of each SAE of `group` (stacked when it holds several)."""
        stepped: list[TrainStepOutput | None] = [None] * len(group)
        if len(group) > 1:
            stepped = list(
                stacked_forward_and_backward(
                    [trainers[name] for name in group], [batches[name] for name in group]
                )
            )
        for name, output in zip(group, stepped, strict=True):
            with self._own_rng(name):
                try:
                    trainers[name].train_on_batch(batches[name], stepped=output)
                except TrainingDivergedError as error:
                    raise TrainingDivergedError(f"SAE {name!r}: {error}") from None

    def _fetch_batches(self, trainers: dict[str, SAETrainer]) -> dict[str, torch.Tensor]:
        """{name: batch [rows, width]} of each SAE this rank trains; spread: every store's
        rows of this rank, gathered onto each SAE's owner."""
        if self.spread is None:
            return {name: t._fetch_batch() for name, t in trainers.items()}
        local = {name: store.next_batch()[:, 0, :] for name, store in self.stores.items()}
        gathered = self.spread.gather_batches(local)
        return {name: batch.to(trainers[name].sae.device) for name, batch in gathered.items()}

    def _checkpoint_later(
        self, trainer: SAETrainer, checkpoint_name: str, wandb_aliases: list[str] | None = None
    ) -> None:
        """Spread SAEs' checkpoints: every rank takes part in each, so they are written
        after the step, for all SAEs in one order (a final SAE is its owner's alone)."""
        if trainer.training_complete:
            SAETrainingRunner.save_checkpoint(trainer, checkpoint_name, wandb_aliases)
        else:
            self._pending_checkpoint = checkpoint_name

    def _write_spread_checkpoints(
        self, trainers: dict[str, SAETrainer], name: str | None = None
    ) -> None:
        """Spread SAEs: write the checkpoint the step asked for (or `name`) of every SAE."""
        name = name or self._pending_checkpoint
        if self.spread is None or name is None:
            return
        self.spread.save_checkpoints(name, self.stores, self.eval_stores, trainers, self._own_rng)
        self._pending_checkpoint = None

    def _agree_on_stop(self, group: _TrainerGroup) -> None:
        """In a data-parallel run every rank stops at the step where any was asked to."""
        asked = group.stop_requested is not None
        if self.distributed.any(asked) and not asked:
            group.request_stop("another process of the run was asked to stop")

    def _stop(self, trainers: dict[str, SAETrainer], reason: str) -> None:
        """Save every SAE's checkpoint at this step and raise `InterruptedException`."""
        first = next(iter(trainers.values()))
        name = str(first.n_training_tokens)
        if self.spread is not None:
            self._write_spread_checkpoints(trainers, name)
        for sae_name, trainer in trainers.items() if self.spread is None else ():
            with self._own_rng(sae_name):
                trainer.save_checkpoint(trainer=trainer, checkpoint_name=name)
        raise InterruptedException(
            f"{reason}: stopped after step {first.n_training_steps - 1} "
            f"({first.n_training_tokens} tokens) and saved a checkpoint {name} of every SAE "
            f"in {self.cfg.run_dir}",
            checkpoint=str(self.cfg.run_dir),
        )


# torch's CPU random state and, where CUDA is available, every GPU's
_TorchRNG = tuple[torch.Tensor, list[torch.Tensor] | None]


def _torch_rng() -> _TorchRNG:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_torch_rng(state: _TorchRNG) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class _TrainerGroup:
    """What `_stop_on_signals` asks of a trainer, for all the trainers of a run."""

    def __init__(self, trainers: list[SAETrainer]):
        self.trainers = trainers

    @property
    def stop_requested(self) -> str | None:
        return self.trainers[0].stop_requested

    def request_stop(self, reason: str) -> None:
        # the trainer inside an evaluation raises (to drop it): ask it last
        for trainer in sorted(self.trainers, key=lambda t: t.evaluating):
            trainer.request_stop(reason)


# --- command line -------------------------------------------------------------------------------
PROG = "python -m sae_lens.multi_sae_training_runner"


def _json_saes(text: Any) -> Any:
    """`--saes` on the command line: a JSON object (a config file's mapping as it is)."""
    if not isinstance(text, str):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def _stack_saes_value(value: Any) -> str | bool:
    if value == "auto":
        return "auto"
    try:
        return _accept_bool(value)
    except Exception:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {value!r}") from None


def build_cli_parser() -> CommandLineParser:
    """`--config FILE`, `--saes JSON` and one flag per `LanguageModelSAERunnerConfig` field
    (shared by every SAE, or a default for them)."""
    parser = CommandLineParser(
        prog=PROG,
        description="Train many sparse autoencoders from one model forward per batch. A "
        "--config file (YAML/JSON) holds the shared fields and `saes:`, a mapping from each "
        "SAE's name to the fields it sets (hook_name patterns like blocks.*.hook_resid_post "
        "give one SAE per layer); flags override the file. Mistakes exit with code 2 and "
        "one line naming the culprit.",
    )
    parser.add_config_option()
    parser.add_argument(
        "--saes", type=_json_saes, default=None, metavar="JSON", help=MULTI_SAE_FIELD_HELP["saes"]
    )
    parser.add_argument(
        "--distribute_saes",
        type=_accept_bool,
        default=False,
        metavar="BOOL",
        help=MULTI_SAE_FIELD_HELP["distribute_saes"],
    )
    parser.add_argument(
        "--stack_saes",
        type=_stack_saes_value,
        default="auto",
        metavar="{auto,true,false}",
        help=MULTI_SAE_FIELD_HELP["stack_saes"],
    )
    parser.add_fields(
        LanguageModelSAERunnerConfig,
        training_field_help(),
        groups=[(topic, list(group)) for topic, group in TRAINING_FIELD_GROUPS],
    )
    return parser


def parse_cli_config(argv: Sequence[str]) -> MultiSAETrainingRunnerConfig:
    """The multi-SAE config from command-line arguments (`--config FILE`, then flags)."""
    values = parse_command_line(build_cli_parser(), argv, ignored_file_keys=("tokens_per_buffer",))
    saes = values.pop("saes", None)
    if not saes:
        raise CLIError("no SAEs: give `saes:` in the --config file (or --saes JSON)")
    return MultiSAETrainingRunnerConfig(saes, **values)


def check_cli_config(cfg: MultiSAETrainingRunnerConfig) -> None:
    """What the command line refuses before loading anything."""
    check_run_inputs(cfg.template)
    for name, sae_cfg in cfg.templates.items():
        if sae_cfg.from_pretrained_path is not None:
            path = sae_cfg.from_pretrained_path
            check_input_path(path, f"SAE {name!r}: from_pretrained_path", local=True)
        # a pattern's default cache path holds the pattern: the run checks each hook's
        if sae_cfg.use_cached_activations and "*" not in str(sae_cfg.cached_activations_path):
            path = str(sae_cfg.cached_activations_path)
            check_input_path(path, f"SAE {name!r}: cached_activations_path", local=True)
    if not cfg.resume:
        check_output_folder(cfg.run_dir.parent, "checkpoint_path")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code: 0 trained, 1 an SAE diverged, 2 a
    mistake in the arguments, config or inputs (one line on stderr), 130 interrupted."""
    args = sys.argv[1:] if argv is None else list(argv)
    return exit_code(report_user_errors(lambda: _train_from_command_line(args)))


def _train_from_command_line(args: list[str]) -> int:
    cfg = parse_cli_config(list(args) or ["--help"])
    check_cli_config(cfg)
    main_process = launched_rank() == 0  # (under torchrun only rank 0 reports)
    try:
        runner = MultiSAETrainingRunner(cfg)
        saes = runner.run()
    except (TrainingDivergedError, RankFailedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except InterruptedException as error:
        if main_process:
            print(
                f"{error}\nresume with: {launch_command(PROG)} --config "
                f"{cfg.run_dir.resolve() / RUN_CONFIG_FILENAME} --resume true",
                file=sys.stderr,
            )
        return 130
    finally:
        leave_run()
    if not main_process:
        return 0
    for name, sae_cfg in runner.sae_cfgs.items():
        final = checkpoints.final_sae_folder(cfg.run_dir / name)
        where = "" if name in saes else ", trained by another process"
        print(f"{name}: {sae_cfg.architecture} SAE (d_sae={sae_cfg.d_sae}{where}) at {final}")
    print(f"run folder: {cfg.run_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
