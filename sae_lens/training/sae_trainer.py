"""`SAETrainer`: the training loop of one SAE on a stream of activations.

Each step fetches a batch from the activation store, runs the SAE's training forward pass,
updates the optimizer, the LR and L1 schedules and the feature-firing statistics, then
logs, evaluates and checkpoints on their schedules. The trainer never asks which
architecture it trains: the SAE reports its loss terms as a dict.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from tqdm.auto import tqdm

from sae_lens import __version__, logger
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.eval_metrics import EvalConfig, run_evals
from sae_lens.training.accumulation import merge_micro_batch_outputs
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.distributed import DistributedContext
from sae_lens.training.metrics_log import METRICS_FILENAME, MetricsLog
from sae_lens.training.optim import L1Scheduler, get_lr_scheduler
from sae_lens.training.optimizers import (
    averaged_weights,
    build_optimizer,
    run_lr,
    use_averaged_weights,
)
from sae_lens.training.step_metrics import (
    count_nonzero_rows,
    item,
    log_feature_sparsity,
    sparsity_window_metrics,
    train_step_metrics,
)
from sae_lens.training.training_options import checkpoint_thresholds, initial_k_of, k_at_step
from sae_lens.training.training_sae import TrainingSAE, TrainStepOutput
from sae_lens.training.transcoder_rows import split_input_target

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler
    from transformer_lens.hook_points import HookedRootModule


# Parameters left trainable once fine-tuning starts, per `finetuning_method` (5.6.0).
FINETUNING_PARAMETERS = {
    "scale": ["scaling_factor"],
    "decoder": ["scaling_factor", "W_dec", "b_dec"],
    "unrotated_decoder": ["scaling_factor", "b_dec"],
}


class InterruptedException(Exception):
    """Training was interrupted (SIGINT/SIGTERM). `checkpoint` is the folder saved at the
    step where it stopped, or None when it stopped mid-step without saving."""

    def __init__(self, message: str = "training interrupted", checkpoint: str | None = None):
        super().__init__(message)
        self.checkpoint = checkpoint


class EvaluationInterrupted(Exception):
    """Raised (by `request_stop`, from a signal handler) into a running periodic
    evaluation, which is then dropped so that the run stops promptly."""


class TrainingDivergedError(ValueError):
    """A training step produced a non-finite loss or gradient; no checkpoint was written
    from that state."""


@dataclass
class TrainSAEOutput:
    sae: TrainingSAE
    checkpoint_path: str
    log_feature_sparsities: torch.Tensor


class SaveCheckpointFn(Protocol):
    def __call__(
        self,
        trainer: SAETrainer,
        checkpoint_name: str,
        wandb_aliases: list[str] | None = None,
    ) -> None: ...


def _update_sae_lens_training_version(sae: TrainingSAE) -> None:
    """Record in the SAE's config the sae_lens version that trains it."""
    sae.cfg.sae_lens_training_version = str(__version__)


def _split_batch(batch: torch.Tensor, sae: TrainingSAE) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(inputs [batch, d_in], a transcoder's targets [batch, d_out] or None)."""
    return split_input_target(batch, sae.cfg.d_in, sae.cfg.hook_name_out is not None)


def _flatten_eval_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """`{"group": {"name": v}}` -> `{"group/name": v}`, without the token counts."""
    return {
        f"{group}/{name}": value
        for group, values in metrics.items()
        if group != "token_stats"
        for name, value in values.items()
    }


class SAETrainer:
    """Trains `sae` on activations from `activation_store` as configured by `cfg`.

    `fit()` runs until `cfg.total_training_tokens` tokens were seen, folds the activation
    norm scaling factor into the weights, saves the final SAE via `save_checkpoint_fn`
    and returns the SAE. Metrics go to `<cfg.checkpoint_path>/metrics.jsonl` and, with
    `cfg.log_to_wandb`, to the active wandb run.
    """

    def __init__(
        self,
        model: HookedRootModule,
        sae: TrainingSAE,
        activation_store: ActivationsStore,
        save_checkpoint_fn: SaveCheckpointFn,
        cfg: LanguageModelSAERunnerConfig,
        eval_activation_store: ActivationsStore | None = None,
        distributed: DistributedContext | None = None,
    ) -> None:
        self.model = model
        # a data-parallel run's processes (`sae_lens.training.distributed`); one by default
        self.distributed = distributed or DistributedContext()
        self.sae = sae
        self.activations_store = activation_store
        # Periodic evaluation reads its own stream, so how often it runs cannot change the
        # training data; without one it reads the training store, as 5.6.0 did.
        self.eval_activations_store = eval_activation_store or activation_store
        self.save_checkpoint = save_checkpoint_fn
        self.cfg = cfg

        self.n_training_steps: int = 0
        self.n_training_tokens: int = 0
        self.started_fine_tuning: bool = False
        # Set before the final save: the checkpoint writer then leaves out training state.
        self.training_complete: bool = False
        # Why `request_stop` was called (e.g. from a signal handler), if it was.
        self.stop_requested: str | None = None
        self.evaluating = False  # inside a periodic evaluation (a stop request drops it)
        self._begun_step = -1  # the step `begin_step` last prepared
        self.wandb_key_prefix = ""  # put before every wandb key (a multi-SAE run: "<name>/")

        _update_sae_lens_training_version(self.sae)
        self.checkpoint_thresholds = checkpoint_thresholds(cfg)

        d_sae = sae.cfg.d_sae
        self.act_freq_scores = torch.zeros(d_sae, device=sae.device)  # [d_sae]
        self.n_forward_passes_since_fired = torch.zeros(d_sae, device=sae.device)  # [d_sae]
        self.n_frac_active_tokens = 0

        for name, param in self.sae.named_parameters():
            if "scaling_factor" in name:  # trained only during fine-tuning
                param.requires_grad = False

        self.optimizer = build_optimizer(cfg, sae, lr=run_lr(cfg)[0])
        # once training ends the parameters hold the optimizer's averaged weights for good
        self._averaged_weights_in_place = False
        self.lr_scheduler, self.l1_scheduler = self._build_schedules()
        device_type = torch.device(cfg.device).type
        # As 5.6.0: gradients are scaled only under autocast (a no-op otherwise).
        self.scaler = torch.amp.GradScaler(device=device_type, enabled=cfg.autocast)
        self.autocast_if_enabled: contextlib.AbstractContextManager[Any] = (
            torch.autocast(device_type=device_type, dtype=torch.bfloat16)
            if cfg.autocast
            else contextlib.nullcontext()
        )
        self.trainer_eval_config = EvalConfig(
            batch_size_prompts=cfg.eval_batch_size_prompts,
            n_eval_reconstruction_batches=cfg.n_eval_batches,
            n_eval_sparsity_variance_batches=cfg.n_eval_batches,
            compute_ce_loss=True,
            compute_l2_norms=True,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
        )
        self.metrics_log = MetricsLog(
            Path(cfg.checkpoint_path) / METRICS_FILENAME, writes=self.distributed.is_main
        )
        self._step_metrics: dict[str, Any] = {}  # this step's metrics, one metrics.jsonl row
        self._final_sparsity: torch.Tensor | None = None  # [d_sae], of the final SAE
        self._training_forward_pass = self._maybe_compile(sae.training_forward_pass)

    def _build_schedules(self) -> tuple[LRScheduler, L1Scheduler]:
        """The learning-rate and L1-coefficient schedules of `cfg`, at step 0."""
        cfg = self.cfg
        lr, lr_end = run_lr(cfg)  # cfg.lr and cfg.lr_end unless scaled with width
        lr_scheduler = get_lr_scheduler(
            cfg.lr_scheduler_name,
            optimizer=self.optimizer,
            training_steps=cfg.total_training_steps,
            lr=lr,
            warm_up_steps=cfg.lr_warm_up_steps,
            decay_steps=cfg.lr_decay_steps,
            lr_end=cast(float, lr_end),
            num_cycles=cfg.n_restart_cycles,
        )
        l1_scheduler = L1Scheduler(
            l1_warm_up_steps=cfg.l1_warm_up_steps,
            total_steps=cfg.total_training_steps,
            final_l1_coefficient=cfg.l1_coefficient,
        )
        return lr_scheduler, l1_scheduler

    def adopt_run_length(self) -> None:
        """After `load_state_dict` from a run configured with another length: rebuild the
        schedules and checkpoint thresholds for `cfg`'s length, advanced to the current step,
        so the rest of the run follows them exactly as if it had been configured this way
        from the start."""
        for group in self.optimizer.param_groups:  # as a fresh optimizer: at the peak lr
            group["lr"] = group["initial_lr"]
        self.lr_scheduler, self.l1_scheduler = self._build_schedules()
        with warnings.catch_warnings():  # stepping a schedule without optimizer steps, on purpose
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
            for _ in range(self.n_training_steps):
                self.lr_scheduler.step()
                self.l1_scheduler.step()
        self.checkpoint_thresholds = [
            t for t in checkpoint_thresholds(self.cfg) if t > self.n_training_tokens
        ]

    # --- public state ------------------------------------------------------------------
    @property
    def feature_sparsity(self) -> torch.Tensor:
        """Fraction of tokens on which each latent fired, over the current sampling window."""
        return self.act_freq_scores / self.n_frac_active_tokens

    @property
    def log_feature_sparsity(self) -> torch.Tensor:
        return log_feature_sparsity(self.feature_sparsity)

    @property
    def saved_log_feature_sparsity(self) -> torch.Tensor:
        """What a checkpoint's sparsity.safetensors holds: log10 firing frequencies of the
        final SAE once training is complete (measured on the evaluation stream), else of
        the current sampling window."""
        if self.training_complete and self._final_sparsity is not None:
            return log_feature_sparsity(self._final_sparsity)
        return self.log_feature_sparsity

    @property
    def current_l1_coefficient(self) -> float:
        return self.l1_scheduler.current_l1_coefficient

    @property
    def dead_neurons(self) -> torch.Tensor:
        """[d_sae] bool: latents that did not fire in the last `dead_feature_window` steps."""
        return self.n_forward_passes_since_fired > self.cfg.dead_feature_window

    def request_stop(self, reason: str) -> None:
        """Ask `fit()` to save a checkpoint and raise `InterruptedException` once the
        current step is complete (safe to call from a signal handler)."""
        if self.stop_requested is None:
            logger.warning(f"{reason}: stopping after the current step, then saving a checkpoint")
        self.stop_requested = reason
        if self.evaluating and not self.distributed.enabled:  # (ranks evaluate in step)
            raise EvaluationInterrupted(reason)  # an evaluation can take seconds: drop it

    def state_dict(self) -> dict[str, Any]:
        """Counters, feature statistics, optimizer and schedules (not the SAE weights)."""
        return {
            "n_training_steps": self.n_training_steps,
            "n_training_tokens": self.n_training_tokens,
            "started_fine_tuning": self.started_fine_tuning,
            "checkpoint_thresholds": list(self.checkpoint_thresholds),
            "act_freq_scores": self.act_freq_scores,
            "n_forward_passes_since_fired": self.n_forward_passes_since_fired,
            "n_frac_active_tokens": self.n_frac_active_tokens,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "l1_scheduler": self.l1_scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),  # {} unless autocast
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so `fit()` continues from that step."""
        self.n_training_steps = state["n_training_steps"]
        self.n_training_tokens = state["n_training_tokens"]
        self.checkpoint_thresholds = list(state["checkpoint_thresholds"])
        device = self.act_freq_scores.device
        self.act_freq_scores = state["act_freq_scores"].to(device)
        self.n_forward_passes_since_fired = state["n_forward_passes_since_fired"].to(device)
        self.n_frac_active_tokens = state["n_frac_active_tokens"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.l1_scheduler.load_state_dict(state["l1_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        if state["started_fine_tuning"]:
            self._start_fine_tuning()

    # --- the loop ------------------------------------------------------------------------
    def fit(self) -> TrainingSAE:
        """Train until the configured number of tokens; return the trained SAE."""
        store = self.activations_store
        if store.estimated_norm_scaling_factor is None:  # a resumed store already has it
            store.set_norm_scaling_factor_if_needed()
        progress = tqdm(
            total=self.cfg.total_training_tokens,
            initial=self.n_training_tokens,
            desc="Training SAE",
            unit="tok",
            unit_scale=True,
            disable=not (self.cfg.verbose and self.distributed.is_main),
        )
        with progress:
            while not self.reached_end:
                output = self.train_on_batch(self._fetch_batch())
                self._update_pbar(output, progress)
                self._stop_if_requested()
        return self.finish_training()

    @property
    def reached_end(self) -> bool:
        """True once the configured number of tokens was trained."""
        return self.n_training_tokens >= self.cfg.total_training_tokens

    def train_on_batch(
        self, sae_in: torch.Tensor, stepped: TrainStepOutput | None = None
    ) -> TrainStepOutput:
        """One whole step of `fit()` on `sae_in` [batch, d_in] (a transcoder's: input, then
        target, [batch, d_in + d_out]): the optimizer step, then logging, evaluation and
        checkpoints on their schedules. `stepped`: the step's forward output when the
        caller ran the forward and backward itself, after `begin_step()` (a stacked step of
        several SAEs); the gradients are then in the SAE's parameters."""
        self.begin_step()
        output = self._train_step(sae=self.sae, sae_in=sae_in, stepped=stepped)
        self.n_training_tokens += self.cfg.train_batch_size_tokens
        self._log_train_step(output)
        self._run_and_log_evals()
        # counted before checkpointing, so a checkpoint resumes at the next step
        self.n_training_steps += 1
        self._flush_step_metrics()  # before a checkpoint, which a resume starts after
        self._checkpoint_if_needed()
        self._begin_finetuning_if_needed()
        return output

    def begin_step(self) -> None:
        """What comes before a step's forward pass: a finished sparsity window logged, the
        step's k set, the SAE in training mode. Once per step: a second call does nothing."""
        if self._begun_step == self.n_training_steps:
            return
        self._begun_step = self.n_training_steps
        self._close_sparsity_window_if_due()
        self._set_scheduled_k()
        self.sae.train()

    def finish_training(self) -> TrainingSAE:
        """After the last step: the final k and weights, the final SAE's firing
        frequencies, the scaling factor folded in, and the final SAE saved."""
        self._set_scheduled_k(final=True)
        use_averaged_weights(self.optimizer)  # the final SAE: schedule-free's average
        self._averaged_weights_in_place = True
        # the final SAE's firing frequencies, for sparsity.safetensors
        self._final_sparsity = self._measure_feature_sparsity(max(self.cfg.n_eval_batches, 1))
        self._finish()
        return self.sae

    def _fetch_batch(self) -> torch.Tensor:
        batch = self.activations_store.next_batch()  # [train_batch_size_tokens, 1, width]
        return batch[:, 0, :].to(self.sae.device)  # [batch, d_in (+ d_out: a transcoder's)]

    def _train_step(
        self, sae: TrainingSAE, sae_in: torch.Tensor, stepped: TrainStepOutput | None = None
    ) -> TrainStepOutput:
        """One optimizer step of `sae` (the trainer's SAE) on `sae_in` [batch, d_in] (5.6.0's
        signature; `stepped`: see `train_on_batch`). Raises `TrainingDivergedError` before
        touching the weights, statistics or schedules if the loss or the gradient norm is
        not finite."""
        sae.train()
        output = self._forward_and_backward(sae, sae_in) if stepped is None else stepped
        self.distributed.average_gradients(sae.parameters())  # data parallel: the global batch's
        self.scaler.unscale_(self.optimizer)
        sae.before_optimizer_step()
        if self.cfg.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(sae.parameters(), self.cfg.max_grad_norm)
        else:  # no clipping; the norm still tells a diverged step
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in sae.parameters() if p.grad is not None]
            )
        if not bool(torch.isfinite(output.loss) & torch.isfinite(grad_norm)):
            self.optimizer.zero_grad()
            raise self._divergence_error(output, grad_norm, self.n_training_steps)
        self._update_feature_stats(output.feature_acts, output.firing_counts)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        sae.after_optimizer_step()
        self.optimizer.zero_grad()
        self.lr_scheduler.step()
        self.l1_scheduler.step()
        return output

    def _forward_and_backward(self, sae: TrainingSAE, sae_in: torch.Tensor) -> TrainStepOutput:
        """The training forward pass and backward() on `sae_in` [batch, d_in]; with
        `gradient_accumulation_steps` = n, on n equal micro-batches in turn, each loss
        divided by n, so the summed gradient is the whole batch's (its losses are means over
        tokens). The returned output covers the whole batch (detached when accumulated)."""
        forward = self._training_forward_pass if sae is self.sae else sae.training_forward_pass
        n = self.cfg.gradient_accumulation_steps
        outputs = []
        for rows in sae_in.chunk(n) if n > 1 else [sae_in]:
            micro_batch, micro_target = _split_batch(rows, sae)
            # an SAE's forward is called as in 5.6.0; a transcoder's also gets its target
            target = {} if micro_target is None else {"target": micro_target}
            with self.autocast_if_enabled:
                output = forward(
                    sae_in=micro_batch,
                    current_l1_coefficient=self.current_l1_coefficient,
                    dead_neuron_mask=self.dead_neurons,
                    **target,
                )
            self.scaler.scale(output.loss / n if n > 1 else output.loss).backward()
            outputs.append(output)
        return outputs[0] if n == 1 else merge_micro_batch_outputs(outputs)

    def _set_scheduled_k(self, final: bool = False) -> None:
        """With `k_decay_steps` > 0: give the SAE the k of the coming step (see
        `training_options.k_at_step`), or with `final` the configured k."""
        cfg = self.cfg
        if cfg.k_decay_steps == 0 or (self.n_training_steps > cfg.k_decay_steps and not final):
            return
        final_k = cfg.activation_fn_kwargs["k"]
        step = cfg.k_decay_steps if final else self.n_training_steps
        k = k_at_step(step, initial_k_of(cfg), final_k, cfg.k_decay_steps)
        self.sae.architecture.set_k(self.sae, k)

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Inside the block the SAE holds the weights to evaluate and save: the optimizer's
        averaged weights (schedule-free), swapped in and out exactly, or its weights."""
        if self._averaged_weights_in_place:
            yield
            return
        with averaged_weights(self.optimizer):
            yield

    def _divergence_error(
        self, output: TrainStepOutput, grad_norm: torch.Tensor, step: int
    ) -> TrainingDivergedError:
        terms = ", ".join(f"{k}={item(v):.6g}" for k, v in output.losses.items())
        return TrainingDivergedError(
            f"training diverged at step {step} ({self.n_training_tokens} tokens seen): "
            f"loss={item(output.loss):.6g} ({terms}), gradient norm={item(grad_norm):.6g}; "
            "no checkpoint was written from this state (try a lower lr or l1_coefficient)"
        )

    @torch.no_grad()
    def _update_feature_stats(
        self, feature_acts: torch.Tensor, counts: torch.Tensor | None = None
    ) -> None:
        """Add one step's firings: `counts` [d_sae] where the architecture counted them,
        else the non-zeros of `feature_acts` [batch, d_sae]."""
        if counts is None:
            counts = count_nonzero_rows(feature_acts)
        self.distributed.sum_(counts)  # data parallel: firings over the global batch
        self.n_forward_passes_since_fired += 1
        self.n_forward_passes_since_fired.masked_fill_(counts > 0, 0)
        self.act_freq_scores += counts
        self.n_frac_active_tokens += feature_acts.shape[0] * self.distributed.world_size

    def _close_sparsity_window_if_due(self) -> None:
        """Every `feature_sampling_window` steps: log the window's firing statistics and
        start a new window (before the step, as 5.6.0)."""
        step = self.n_training_steps
        if (step + 1) % self.cfg.feature_sampling_window != 0:
            return
        self._log(self._build_sparsity_log_dict(), step)
        self._reset_running_sparsity_stats()

    def _reset_running_sparsity_stats(self) -> None:
        """Start a new window of firing frequencies (5.6.0's name)."""
        self.act_freq_scores = torch.zeros_like(self.act_freq_scores)
        self.n_frac_active_tokens = 0

    def _build_sparsity_log_dict(self) -> dict[str, Any]:
        return sparsity_window_metrics(
            self.feature_sparsity, self.cfg.dead_feature_threshold, self.cfg.log_to_wandb
        )

    def _log_train_step(self, step_output: TrainStepOutput) -> None:
        """Every `wandb_log_frequency` steps: log the step's metrics."""
        step = self.n_training_steps
        last = self.n_training_tokens >= self.cfg.total_training_tokens
        if (step + 1) % self.cfg.wandb_log_frequency == 0 or last:
            self._log(self._build_train_step_log_dict(step_output, self.n_training_tokens), step)

    def _build_train_step_log_dict(
        self, output: TrainStepOutput, n_training_tokens: int
    ) -> dict[str, Any]:
        """The metrics logged for one training step (5.6.0's keys and values)."""
        return train_step_metrics(
            output,
            n_training_tokens,
            l1_coefficient=self.current_l1_coefficient,
            learning_rate=self.optimizer.param_groups[0]["lr"],
            passes_since_fired=self.n_forward_passes_since_fired,
            n_dead=int(self.dead_neurons.sum().item()),
        )

    def _run_and_log_evals(self) -> None:
        """Every `wandb_log_frequency * eval_every_n_wandb_logs` steps, and after the last
        step of a run long enough to evaluate at all: run and log evals."""
        step = self.n_training_steps
        last = self.n_training_tokens >= self.cfg.total_training_tokens
        if self.stop_requested is not None and not self.distributed.enabled:
            return  # stopping: do not start an evaluation (ranks evaluate in step)
        if (step + 1) % self._eval_period == 0 or (last and step + 1 >= self._eval_period):
            self._log(self._eval_metrics(), step)

    @property
    def _eval_period(self) -> int:
        return self.cfg.wandb_log_frequency * self.cfg.eval_every_n_wandb_logs

    @torch.no_grad()
    def _measure_feature_sparsity(self, n_batches: int) -> torch.Tensor:
        """[d_sae]: the fraction of the tokens of `n_batches` evaluation-stream batches on
        which each latent of the current SAE fires. A run without an evaluation stream of
        its own uses the activations left in its shuffle buffer, which it never trained on
        (up to as many tokens, at least one batch), so no model forward runs for it."""
        store = self.eval_activations_store
        store.estimated_norm_scaling_factor = self.activations_store.estimated_norm_scaling_factor
        counts = torch.zeros(self.sae.cfg.d_sae, device=self.sae.device)
        n_tokens = 0
        self.sae.eval()
        try:
            with self.evaluation_weights():
                for rows in self._sparsity_batches(n_batches):
                    batch = _split_batch(rows.to(self.sae.device), self.sae)[0]  # [batch, d_in]
                    counts += (self.sae.encode(batch) > 0).sum(dim=0)
                    n_tokens += batch.shape[0]
        finally:
            self.sae.train()
        self.distributed.sum_(counts)  # data parallel: over every process's rows
        return counts / self.distributed.sum_number(n_tokens)

    def _sparsity_batches(self, n_batches: int) -> Iterator[torch.Tensor]:
        """The batches [batch, width] `_measure_feature_sparsity` reads."""
        store, batch_size = self.eval_activations_store, self.cfg.train_batch_size_tokens
        # (a store of the caller's own making may lack `unserved_rows`: it serves batches)
        if store is self.activations_store and hasattr(store, "unserved_rows"):
            unserved = store.unserved_rows(n_batches * batch_size)[:, 0]
            if unserved.shape[0] >= batch_size:
                yield from unserved.split(batch_size)
                return
        for _ in range(n_batches):
            yield store.next_batch()[:, 0, :]

    @torch.no_grad()
    def _eval_metrics(self) -> dict[str, Any]:
        excluded = self.activations_store.exclude_special_tokens
        ignore_tokens = set(excluded.tolist()) if excluded is not None else set()
        eval_store = self.eval_activations_store
        # the SAE trains on scaled activations: evaluate with the training store's factor
        eval_store.estimated_norm_scaling_factor = (
            self.activations_store.estimated_norm_scaling_factor
        )
        self.sae.eval()
        self.evaluating = True
        try:
            with self.evaluation_weights():
                metrics, _ = run_evals(
                    sae=self.sae,
                    activation_store=eval_store,
                    model=self.model,
                    eval_config=self.trainer_eval_config,
                    model_kwargs=self.cfg.model_kwargs,
                    ignore_tokens=ignore_tokens,
                )
        except EvaluationInterrupted:
            return {}  # the run is stopping: no metrics from a partial evaluation
        finally:
            self.evaluating = False
            self.sae.train()
        flat = self.distributed.mean_metrics(_flatten_eval_metrics(metrics))
        if self.cfg.log_to_wandb:
            flat.update(self._weight_histograms())
        return flat

    @torch.no_grad()
    def _weight_histograms(self) -> dict[str, Any]:
        """Decoder row norms and every per-latent vector parameter (biases, thresholds)."""
        import wandb

        histograms = {
            "weights/W_dec_norms": wandb.Histogram(
                self.sae.W_dec.detach().float().norm(dim=1).cpu().numpy()
            )
        }
        for name, param in self.sae.named_parameters():
            if param.ndim == 1 and param.shape[0] == self.sae.cfg.d_sae:
                histograms[f"weights/{name}"] = wandb.Histogram(
                    param.detach().float().cpu().numpy()
                )
        return histograms

    def _log(self, metrics: dict[str, Any], step: int) -> None:
        """Send `metrics` to wandb now; metrics.jsonl gets one row per step, with everything
        logged for the step (training, sparsity window, evaluation), when it is flushed."""
        self._step_metrics.update(metrics)
        if self.cfg.log_to_wandb and self.distributed.is_main:
            import wandb

            prefix = self.wandb_key_prefix
            wandb.log({prefix + key: value for key, value in metrics.items()}, step=step)

    def _flush_step_metrics(self) -> None:
        """Write the metrics logged during the step just taken as one metrics.jsonl row."""
        if self._step_metrics:
            self.metrics_log.log(self._step_metrics, self.n_training_steps - 1)
            self._step_metrics = {}

    def _checkpoint_if_needed(self) -> None:
        thresholds = self.checkpoint_thresholds
        due = bool(thresholds) and self.n_training_tokens > thresholds[0]
        # the end state is always kept: a later run with more training_tokens continues it
        at_end = self.n_training_tokens >= self.cfg.total_training_tokens
        if due or at_end:
            self.save_checkpoint(trainer=self, checkpoint_name=str(self.n_training_tokens))
        if due:
            thresholds.pop(0)

    def _begin_finetuning_if_needed(self) -> None:
        if not self.started_fine_tuning and self.n_training_tokens > self.cfg.training_tokens:
            self._start_fine_tuning()

    def _start_fine_tuning(self) -> None:
        self.started_fine_tuning = True
        if self.cfg.finetuning_method is None:
            return
        trainable = FINETUNING_PARAMETERS[self.cfg.finetuning_method]
        for name, param in self.sae.named_parameters():
            # The scale parameter is named `finetuning_scaling_factor`: 5.6.0 compared
            # names exactly, so it never trained during fine-tuning.
            param.requires_grad = any(name == p or name.endswith(f"_{p}") for p in trainable)

    def _update_pbar(
        self, step_output: TrainStepOutput, pbar: tqdm, update_interval: int = 10
    ) -> None:
        """Advance the bar by the step's tokens; every `update_interval` steps (from the
        first) show the step, loss and L0."""
        pbar.update(self.cfg.train_batch_size_tokens)
        step = self.n_training_steps - 1  # the step just taken
        if step % update_interval == 0 and not pbar.disable:
            with torch.no_grad():
                l0 = (step_output.feature_acts > 0).float().sum(-1).mean().item()
            pbar.set_postfix(step=step, loss=f"{step_output.loss.item():.4g}", l0=f"{l0:.1f}")

    def _stop_if_requested(self) -> None:
        if self.distributed.any(self.stop_requested is not None) and self.stop_requested is None:
            self.stop_requested = "another process of the run was asked to stop"
        if self.stop_requested is None or self.n_training_tokens >= self.cfg.total_training_tokens:
            return  # nothing requested, or training is done: let the final save happen
        name = str(self.n_training_tokens)
        self.save_checkpoint(trainer=self, checkpoint_name=name)
        checkpoint = str(Path(self.cfg.checkpoint_path) / name)
        raise InterruptedException(
            f"{self.stop_requested}: stopped after step {self.n_training_steps - 1} "
            f"({self.n_training_tokens} tokens) and saved checkpoint {checkpoint}",
            checkpoint=checkpoint,
        )

    def _finish(self) -> None:
        """Fold the activation scaling factor into the weights and save the final SAE."""
        store = self.activations_store
        if store.estimated_norm_scaling_factor is not None:
            self.sae.fold_activation_norm_scaling_factor(store.estimated_norm_scaling_factor)
            store.estimated_norm_scaling_factor = None
        self.training_complete = True
        self.save_checkpoint(
            trainer=self,
            checkpoint_name=f"final_{self.n_training_tokens}",
            wandb_aliases=["final_model"],
        )

    # --- performance options -------------------------------------------------------------
    def _maybe_compile(self, forward: Any) -> Any:
        if not self.cfg.compile_sae:
            return forward
        backend = "aot_eager" if torch.device(self.cfg.device).type == "mps" else "inductor"
        return torch.compile(forward, mode=self.cfg.sae_compilation_mode, backend=backend)
