"""Run configurations: training (`LanguageModelSAERunnerConfig`), activation caching and
pretokenizing. Every field is validated in `__post_init__`, so a wrong value fails with a
one-line error naming the field before any model or dataset is loaded."""

from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import simple_parsing
import torch
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from sae_lens import __version__, logger
from sae_lens.dtypes import DTYPE_MAP as DTYPE_MAP  # 5.6.0 public name
from sae_lens.dtypes import dtype_from_name
from sae_lens.embedded import EMBEDDED_DATASET_NAME, EMBEDDED_MODEL_NAME
from sae_lens.errors import did_you_mean
from sae_lens.saes import transcoder
from sae_lens.saes.registry import (
    RegisteredArchitectureNames,
    architecture_names,
    get_architecture,
)
from sae_lens.training.recipes import (
    RECIPE_NAMES,
    apply_recipe,
    explicit_fields,
    track_explicit_fields,
)
from sae_lens.training.training_options import CHECKPOINT_SPACINGS as SPACINGS
from sae_lens.training.training_options import OPTIMIZER_NAMES, check_training_options

HfDataset = DatasetDict | Dataset | IterableDatasetDict | IterableDataset

NORMALIZE_ACTIVATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
B_DEC_INIT_METHODS = ("geometric_median", "mean", "zeros")
LR_SCHEDULERS = ("constant", "cosineannealing", "cosineannealingwarmrestarts")
MSE_LOSS_NORMALIZATIONS = (None, "dense_batch")
FINETUNING_METHODS = (None, "scale", "decoder", "unrotated_decoder")
MODEL_CLASS_NAMES = ("HookedTransformer", "AutoModelForCausalLM")
HOOKED_MAMBA_UNSUPPORTED = (
    "model_class_name 'HookedMamba' is not supported: it needs mamba_lens, which does not work "
    "with the installed transformer-lens; use 'HookedTransformer' or 'AutoModelForCausalLM'"
)
SPECIAL_TOKEN_NAMES = ("bos", "eos", "sep")

# The embedded default model's residual width: the default d_in matches it.
EMBEDDED_D_MODEL = 128


class ConfigFieldError(TypeError, ValueError):
    """A config dict names a field the config class lacks, or lacks a required one. A
    TypeError, as the dataclass call in 5.6.0 raised, and a ValueError (bad input)."""


def json_dict(s: str) -> Any:
    """Parse a command-line JSON object (used for dict-valued config fields)."""
    value = json.loads(s)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}: {s!r}")
    return value


def dict_field(default: dict[str, Any] | None, **kwargs: Any) -> Any:
    """A dataclass field holding a dict that the command line accepts as JSON."""
    if default is None:
        return simple_parsing.helpers.field(default=None, type=json_dict, **kwargs)
    return simple_parsing.helpers.dict_field(default, type=json_dict, **kwargs)


def _require_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        hint = did_you_mean(str(value), [str(a) for a in allowed if a is not None], n=1)
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}{hint}")


def _require_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _validate_seqpos(seqpos: tuple[int | None, ...], context_size: int) -> None:
    if not 1 <= len(seqpos) <= 3:
        raise ValueError(
            f"seqpos_slice must have 1 to 3 entries (start, stop, step), got {seqpos!r}"
        )
    if len(seqpos) == 3 and seqpos[2] is not None and seqpos[2] < 1:
        raise ValueError(f"seqpos_slice step must be at least 1, got {seqpos[2]!r}")
    if len(range(context_size)[slice(*seqpos)]) == 0:
        raise ValueError(
            f"seqpos_slice {seqpos!r} selects no positions of a context of {context_size} tokens"
        )


def _require_model_class(name: str) -> None:
    """The model classes a run can load; HookedMamba (a 5.6.0 choice) is refused here,
    before any loading, with the reason."""
    if name == "HookedMamba":
        raise ValueError(HOOKED_MAMBA_UNSUPPORTED)
    _require_choice("model_class_name", name, MODEL_CLASS_NAMES)


def _as_seqpos_tuple(value: Any) -> tuple[int | None, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _default_cached_activations_path(
    dataset_path: str, model_name: str, hook_name: str, hook_head_index: int | None
) -> str:
    path = (
        f"activations/{dataset_path.replace('/', '_')}/{model_name.replace('/', '_')}/{hook_name}"
    )
    if hook_head_index is not None:
        path += f"_{hook_head_index}"
    return path


def new_run_id() -> str:
    """A short random id naming one training run (its checkpoint folder and wandb id)."""
    return uuid.uuid4().hex[:8]


@track_explicit_fields  # a field the user passes wins over the `recipe`
@dataclass
class LanguageModelSAERunnerConfig:
    """Configuration of one SAE training run: the model and hook to read, the data, the SAE
    architecture, and the training, logging and checkpoint options.

    With no arguments it trains on the embedded default model and corpus, offline.
    """

    # Model and data
    model_name: str = EMBEDDED_MODEL_NAME
    model_class_name: str = "HookedTransformer"
    hook_name: str = "blocks.0.hook_mlp_out"
    hook_eval: str = "NOT_IN_USE"
    hook_layer: int = 0
    hook_head_index: int | None = None
    dataset_path: str = EMBEDDED_DATASET_NAME
    dataset_trust_remote_code: bool = False
    streaming: bool = True
    is_dataset_tokenized: bool = True
    context_size: int = 128
    use_cached_activations: bool = False
    cached_activations_path: str | None = None

    # SAE
    architecture: str = simple_parsing.helpers.field(
        default="standard",
        choices=RegisteredArchitectureNames(),
        help="a registered SAE architecture: the built-in ones, or one added with "
        "sae_lens.saes.register_architecture",
    )
    d_in: int = EMBEDDED_D_MODEL
    d_sae: int | None = None
    b_dec_init_method: str = "geometric_median"
    expansion_factor: int | None = None
    activation_fn: str = None  # type: ignore[assignment]
    activation_fn_kwargs: dict[str, int] = dict_field(default=None)
    normalize_sae_decoder: bool = True
    noise_scale: float = 0.0
    from_pretrained_path: str | None = None
    apply_b_dec_to_input: bool = True
    decoder_orthogonal_init: bool = False
    decoder_heuristic_init: bool = False
    init_encoder_as_decoder_transpose: bool = False
    decoder_init_norm: float | None = None
    encoder_init_norm: float | None = None

    # Transcoder (not in 5.6.0): predict the activation at hook_name_out from hook_name's
    hook_name_out: str | None = None
    hook_layer_out: int | None = None
    d_out: int | None = None
    skip_connection: bool = False

    # Activation store
    n_batches_in_buffer: int = 20
    training_tokens: int = 2_000_000
    finetuning_tokens: int = 0
    store_batch_size_prompts: int = 32
    normalize_activations: str = "none"
    seqpos_slice: tuple[int | None, ...] = (None,)

    # Devices and precision
    device: str = "cpu"
    act_store_device: str = "with_model"
    seed: int = 42
    dtype: str = "float32"
    prepend_bos: bool = True

    # JumpReLU
    jumprelu_init_threshold: float = 0.001
    jumprelu_bandwidth: float = 0.001
    jumprelu_sparsity_loss_mode: str = "step"
    jumprelu_tanh_scale: float = 4.0
    pre_act_loss_coefficient: float | None = None

    # BatchTopK and Matryoshka BatchTopK
    topk_threshold_lr: float = 0.01
    matryoshka_widths: list[int] | None = None

    # Performance
    autocast: bool = False
    autocast_lm: bool = False
    compile_llm: bool = False
    llm_compilation_mode: str | None = None
    reuse_freed_memory: bool = False
    fused_forward: bool = True
    compile_sae: bool = False
    sae_compilation_mode: str | None = None

    # Optimisation
    train_batch_size_tokens: int = 4096
    adam_beta1: float = 0.0
    adam_beta2: float = 0.999
    mse_loss_normalization: str | None = None
    l1_coefficient: float = 0.001
    lp_norm: float = 1
    scale_sparsity_penalty_by_decoder_norm: bool = False
    l1_warm_up_steps: int = 0
    lr: float = 0.0003
    lr_scheduler_name: str = "constant"
    lr_warm_up_steps: int = 0
    lr_end: float | None = None
    lr_decay_steps: int = 0
    n_restart_cycles: int = 1
    finetuning_method: str | None = None
    # (not in 5.6.0; the defaults keep its behaviour: sae_lens/training/optimizers.py)
    optimizer: str = simple_parsing.helpers.field(default="adam", choices=OPTIMIZER_NAMES)
    schedule_free: bool = False
    scale_lr_with_width: bool = False
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    k_decay_steps: int = 0
    initial_k: int | None = None
    recipe: str = simple_parsing.helpers.field(default="5.6.0", choices=RECIPE_NAMES)

    # Dead features
    use_ghost_grads: bool = False
    feature_sampling_window: int = 2000
    dead_feature_window: int = 1000
    dead_feature_threshold: float = 1e-08

    # Evals
    n_eval_batches: int = 10
    eval_batch_size_prompts: int | None = None

    # Logging
    log_to_wandb: bool = True
    log_activations_store_to_wandb: bool = False
    log_optimizer_state_to_wandb: bool = False
    wandb_project: str = "mats_sae_training_language_model"
    wandb_id: str | None = None
    run_name: str | None = None
    wandb_entity: str | None = None
    wandb_log_frequency: int = 10
    eval_every_n_wandb_logs: int = 100

    # Checkpoints
    resume: bool = False
    n_checkpoints: int = 0
    checkpoint_spacing: str = simple_parsing.helpers.field(default="linear", choices=SPACINGS)
    checkpoint_path: str = "checkpoints"
    verbose: bool = True
    model_kwargs: dict[str, Any] = dict_field(default={})
    model_from_pretrained_kwargs: dict[str, Any] | None = dict_field(default=None)
    sae_lens_version: str = field(default_factory=lambda: __version__)
    sae_lens_training_version: str = field(default_factory=lambda: __version__)
    exclude_special_tokens: bool | list[int] = False

    def __post_init__(self) -> None:
        self._validate_choices()
        self._check_transcoder_fields()
        self._derive_sae_shape()
        apply_recipe(self)  # the values below derive from the recipe's
        check_training_options(self)
        self.seqpos_slice = _as_seqpos_tuple(self.seqpos_slice)
        _validate_seqpos(self.seqpos_slice, self.context_size)

        if self.use_cached_activations and self.cached_activations_path is None:
            self.cached_activations_path = _default_cached_activations_path(
                self.dataset_path, self.model_name, self.hook_name, self.hook_head_index
            )
        if self.run_name is None:
            self.run_name = f"{self.d_sae}-L1-{self.l1_coefficient}-LR-{self.lr}-Tokens-{self.training_tokens:3.3e}"
        if self.model_from_pretrained_kwargs is None:
            self.model_from_pretrained_kwargs = (
                {"center_writing_weights": False}
                if self.model_class_name == "HookedTransformer"
                else {}
            )
        if self.act_store_device == "with_model":
            self.act_store_device = self.device
        if self.lr_end is None:
            self.lr_end = self.lr / 10
        if not self.resume:
            # A fresh run writes its checkpoints into a folder of its own; a resumed run
            # names the existing run folder (see sae_lens.training.checkpoints).
            run_id = self.wandb_id or new_run_id()
            self.checkpoint_path = f"{self.checkpoint_path}/{run_id}"
        if self.verbose:
            logger.info(
                f"Run name: {self.run_name}; total training steps: {self.total_training_steps}"
            )

    def _validate_choices(self) -> None:
        _require_choice("architecture", self.architecture, tuple(architecture_names()))
        _require_model_class(self.model_class_name)
        _require_choice("normalize_activations", self.normalize_activations, NORMALIZE_ACTIVATIONS)
        _require_choice("b_dec_init_method", self.b_dec_init_method, B_DEC_INIT_METHODS)
        # get_lr_scheduler reads the name case-insensitively, as 5.6.0 did
        _require_choice("lr_scheduler_name", str(self.lr_scheduler_name).lower(), LR_SCHEDULERS)
        _require_choice(
            "mse_loss_normalization", self.mse_loss_normalization, MSE_LOSS_NORMALIZATIONS
        )
        _require_choice("finetuning_method", self.finetuning_method, FINETUNING_METHODS)
        dtype_from_name(self.dtype)
        for name in (
            "d_in",
            "context_size",
            "train_batch_size_tokens",
            "store_batch_size_prompts",
            "n_batches_in_buffer",
            "wandb_log_frequency",
            "eval_every_n_wandb_logs",
            "feature_sampling_window",
            "dead_feature_window",
        ):
            _require_positive(name, getattr(self, name))
        for name in (
            "training_tokens",
            "finetuning_tokens",
            "l1_coefficient",
            "lr",
            "lr_warm_up_steps",
            "lr_decay_steps",
            "l1_warm_up_steps",
            "n_checkpoints",
            "noise_scale",
        ):
            _require_positive(name, getattr(self, name), allow_zero=True)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.n_restart_cycles < 1:
            raise ValueError(f"n_restart_cycles must be >= 1, got {self.n_restart_cycles!r}")
        if self.decoder_init_norm is not None:
            if self.decoder_init_norm <= 0:
                raise ValueError(f"decoder_init_norm must be > 0, got {self.decoder_init_norm!r}")
            for other in (
                "normalize_sae_decoder",
                "decoder_heuristic_init",
                "decoder_orthogonal_init",
            ):
                if getattr(self, other):
                    raise ValueError(
                        f"decoder_init_norm needs {other}=False (both set the decoder's norms)"
                    )
        if self.normalize_sae_decoder and self.decoder_heuristic_init:
            raise ValueError(
                "normalize_sae_decoder and decoder_heuristic_init cannot both be True: "
                "the heuristic init sets decoder norms that normalisation would undo"
            )
        if self.normalize_sae_decoder and self.scale_sparsity_penalty_by_decoder_norm:
            raise ValueError(
                "scale_sparsity_penalty_by_decoder_norm needs normalize_sae_decoder=False "
                "(unit-norm decoder rows make the scaling a no-op)"
            )
        if self.finetuning_method == "decoder" and self.apply_b_dec_to_input:
            raise ValueError("finetuning_method='decoder' needs apply_b_dec_to_input=False")
        if self.use_cached_activations and self.cached_activations_path == "":
            raise ValueError(
                "cached_activations_path must not be empty when use_cached_activations"
            )
        if isinstance(self.exclude_special_tokens, list) and not all(
            isinstance(x, int) for x in self.exclude_special_tokens
        ):
            raise ValueError(
                f"exclude_special_tokens must be a bool or a list of token ids, got {self.exclude_special_tokens!r}"
            )

    def _check_transcoder_fields(self) -> None:
        explicit = "apply_b_dec_to_input" in explicit_fields(self)
        transcoder.check_run_config(self, apply_b_dec_to_input_set=explicit)

    def _derive_sae_shape(self) -> None:
        architecture = get_architecture(self.architecture)
        if self.activation_fn is None:
            self.activation_fn = architecture.default_activation_fn
        required = architecture.required_activation_fn
        if required is not None and self.activation_fn != required:
            raise ValueError(
                f"If using {self.architecture} architecture, activation_fn must be {required}. "
                f"Got activation_fn={self.activation_fn!r}."
            )
        if self.activation_fn_kwargs is None:
            self.activation_fn_kwargs = (
                dict(architecture.default_activation_fn_kwargs)
                if self.activation_fn == architecture.default_activation_fn
                else {}
            )
        if self.activation_fn == "topk":
            k = self.activation_fn_kwargs.get("k")
            if k is None:
                raise ValueError(
                    "activation_fn_kwargs.k must be provided for topk architecture. "
                    "(activation_fn 'topk' keeps each token's k largest latents)"
                )
            if not isinstance(k, int) or k < 1:
                raise ValueError(
                    f"activation_fn_kwargs['k'] must be a positive int for topk, got {k!r}"
                )
        if self.d_sae is not None and self.expansion_factor is not None:
            raise ValueError("set d_sae or expansion_factor, not both")
        if self.d_sae is None:
            self.d_sae = self.d_in * (self.expansion_factor or 4)
            if self.expansion_factor is None:
                self.expansion_factor = 4
        _require_positive("d_sae", self.d_sae)
        architecture.check_cfg(self)
        if self.activation_fn == "topk" and self.activation_fn_kwargs["k"] > self.d_sae:
            # 5.6.0 accepted this (its tests build such configs); the SAE's forward fails
            warnings.warn(
                f"activation_fn_kwargs['k'] ({self.activation_fn_kwargs['k']}) exceeds d_sae "
                f"({self.d_sae}): the SAE cannot encode until k <= d_sae",
                UserWarning,
                stacklevel=3,
            )
        self.tokens_per_buffer = (
            self.train_batch_size_tokens * self.context_size * self.n_batches_in_buffer
        )

    @property
    def total_training_tokens(self) -> int:
        return self.training_tokens + self.finetuning_tokens

    @property
    def total_training_steps(self) -> int:
        return self.total_training_tokens // self.train_batch_size_tokens

    def get_base_sae_cfg_dict(self) -> dict[str, Any]:
        """The `SAEConfig` fields this run's SAE gets."""
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": self.dtype,
            "device": self.device,
            "model_name": self.model_name,
            "hook_name": self.hook_name,
            "hook_layer": self.hook_layer,
            "hook_head_index": self.hook_head_index,
            "activation_fn_str": self.activation_fn,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "context_size": self.context_size,
            "prepend_bos": self.prepend_bos,
            "dataset_path": self.dataset_path,
            "dataset_trust_remote_code": self.dataset_trust_remote_code,
            "finetuning_scaling_factor": self.finetuning_method is not None,
            "sae_lens_training_version": self.sae_lens_training_version,
            "normalize_activations": self.normalize_activations,
            "activation_fn_kwargs": self.activation_fn_kwargs,
            "model_from_pretrained_kwargs": self.model_from_pretrained_kwargs,
            "seqpos_slice": self.seqpos_slice,
            "hook_name_out": self.hook_name_out,
            "hook_layer_out": self.hook_layer_out,
            "d_out": self.d_out,
            "skip_connection": self.skip_connection,
        }

    def get_training_sae_cfg_dict(self) -> dict[str, Any]:
        """The `TrainingSAEConfig` fields this run's SAE gets."""
        return {
            **self.get_base_sae_cfg_dict(),
            "l1_coefficient": self.l1_coefficient,
            "lp_norm": self.lp_norm,
            "use_ghost_grads": self.use_ghost_grads,
            "normalize_sae_decoder": self.normalize_sae_decoder,
            "noise_scale": self.noise_scale,
            "decoder_orthogonal_init": self.decoder_orthogonal_init,
            "mse_loss_normalization": self.mse_loss_normalization,
            "decoder_heuristic_init": self.decoder_heuristic_init,
            "init_encoder_as_decoder_transpose": self.init_encoder_as_decoder_transpose,
            "decoder_init_norm": self.decoder_init_norm,
            "encoder_init_norm": self.encoder_init_norm,
            "jumprelu_init_threshold": self.jumprelu_init_threshold,
            "jumprelu_bandwidth": self.jumprelu_bandwidth,
            "jumprelu_sparsity_loss_mode": self.jumprelu_sparsity_loss_mode,
            "jumprelu_tanh_scale": self.jumprelu_tanh_scale,
            "pre_act_loss_coefficient": self.pre_act_loss_coefficient,
            "topk_threshold_lr": self.topk_threshold_lr,
            "matryoshka_widths": self.matryoshka_widths,
            "scale_sparsity_penalty_by_decoder_norm": self.scale_sparsity_penalty_by_decoder_norm,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields (and derived values) as JSON-serialisable values."""
        return {
            **self.__dict__,
            "dtype": str(self.dtype),
            "device": str(self.device),
            "act_store_device": str(self.act_store_device),
        }

    def to_json(self, path: str) -> None:
        """Write `{path}cfg.json` (5.6.0 convention: `path` is a folder prefix ending in '/')."""
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path + "cfg.json", "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path: str) -> LanguageModelSAERunnerConfig:
        """Read `{path}cfg.json` written by `to_json`."""
        with open(path + "cfg.json") as f:
            data = json.load(f)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LanguageModelSAERunnerConfig:
        """Build from a dict, ignoring derived keys (e.g. `tokens_per_buffer`)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"tokens_per_buffer"})
        if unknown:
            raise ConfigFieldError(f"unknown LanguageModelSAERunnerConfig fields: {unknown}")
        kwargs = {k: v for k, v in data.items() if k in names}
        if "seqpos_slice" in kwargs:
            kwargs["seqpos_slice"] = _as_seqpos_tuple(kwargs["seqpos_slice"])
        return cls(**kwargs)


@dataclass
class CacheActivationsRunnerConfig:
    """Configuration for writing a model's activations at one hook to disk."""

    dataset_path: str
    model_name: str
    model_batch_size: int
    hook_name: str
    hook_layer: int
    d_in: int
    training_tokens: int
    context_size: int = -1
    model_class_name: str = "HookedTransformer"
    new_cached_activations_path: str | None = None
    shuffle: bool = True
    seed: int = 42
    dtype: str = "float32"
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    buffer_size_gb: float = 2.0
    hf_repo_id: str | None = None
    hf_num_shards: int | None = None
    hf_revision: str = "main"
    hf_is_private_repo: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model_from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    compile_llm: bool = False
    llm_compilation_mode: str | None = None
    reuse_freed_memory: bool = False
    prepend_bos: bool = True
    seqpos_slice: tuple[int | None, ...] = (None,)
    streaming: bool = True
    autocast_lm: bool = False
    dataset_trust_remote_code: bool | None = None
    extra_hooks: dict[str, int] = dict_field(default={})

    def __post_init__(self) -> None:
        dtype_from_name(self.dtype)
        for hook, width in self.extra_hooks.items():
            if hook == self.hook_name or not isinstance(width, int) or width < 1:
                raise ValueError(
                    "extra_hooks must map hooks other than hook_name to their d_in (a "
                    f"positive int), got {hook!r}: {width!r}"
                )
        _require_model_class(self.model_class_name)
        for name in ("model_batch_size", "d_in", "training_tokens"):
            _require_positive(name, getattr(self, name))
        _require_positive("buffer_size_gb", self.buffer_size_gb)
        if self.context_size == -1:
            self.context_size = self._context_size_from_dataset()
        _require_positive("context_size", self.context_size)
        self.seqpos_slice = _as_seqpos_tuple(self.seqpos_slice)
        _validate_seqpos(self.seqpos_slice, self.context_size)
        if self.new_cached_activations_path is None:
            self.new_cached_activations_path = _default_cached_activations_path(
                self.dataset_path, self.model_name, self.hook_name, None
            )
        if self.n_tokens_in_buffer == 0:
            raise ValueError(
                f"buffer_size_gb={self.buffer_size_gb} holds less than one model batch "
                f"({self.n_tokens_in_batch} tokens of {self.bytes_per_token} bytes)"
            )

    def _context_size_from_dataset(self) -> int:
        from sae_lens.dataset_sources import tokenized_row_length

        length = tokenized_row_length(self.dataset_path, bool(self.dataset_trust_remote_code))
        if length is None:
            raise ValueError(
                f"context_size is -1 but dataset {self.dataset_path!r} is not tokenized "
                "(no 'tokens' or 'input_ids' column): set context_size"
            )
        return length

    @property
    def sliced_context_size(self) -> int:
        return len(range(self.context_size)[slice(*self.seqpos_slice)])

    @property
    def bytes_per_token(self) -> int:
        width = self.d_in + sum(self.extra_hooks.values())
        return width * dtype_from_name(self.dtype).itemsize

    @property
    def n_tokens_in_buffer(self) -> int:
        tokens = int(self.buffer_size_gb * 1e9) // self.bytes_per_token
        return tokens - tokens % self.n_tokens_in_batch

    @property
    def n_tokens_in_batch(self) -> int:
        return self.model_batch_size * self.sliced_context_size

    @property
    def n_batches_in_buffer(self) -> int:
        return self.n_tokens_in_buffer // self.n_tokens_in_batch

    @property
    def n_seq_in_dataset(self) -> int:
        return self.training_tokens // self.sliced_context_size

    @property
    def n_seq_in_buffer(self) -> int:
        return self.n_tokens_in_buffer // self.sliced_context_size

    @property
    def n_buffers(self) -> int:
        return math.ceil(self.training_tokens / self.n_tokens_in_buffer)


@dataclass
class PretokenizeRunnerConfig:
    """Configuration for tokenizing, chunking and saving (or uploading) a text dataset."""

    tokenizer_name: str = "gpt2"
    dataset_path: str = ""
    dataset_name: str | None = None
    dataset_trust_remote_code: bool | None = None
    split: str | None = "train"
    data_files: list[str] | None = None
    data_dir: str | None = None
    num_proc: int = 4
    context_size: int = 128
    column_name: str = "text"
    shuffle: bool = True
    seed: int | None = None
    streaming: bool = False
    pretokenize_batch_size: int | None = 1000
    begin_batch_token: int | Literal["bos", "eos", "sep"] | None = "bos"
    begin_sequence_token: int | Literal["bos", "eos", "sep"] | None = None
    sequence_separator_token: int | Literal["bos", "eos", "sep"] | None = "bos"
    save_path: str | None = None
    hf_repo_id: str | None = None
    hf_num_shards: int = 64
    hf_revision: str = "main"
    hf_is_private_repo: bool = False

    def __post_init__(self) -> None:
        _require_positive("context_size", self.context_size)
        _require_positive("num_proc", self.num_proc)
        for name in ("begin_batch_token", "begin_sequence_token", "sequence_separator_token"):
            value = getattr(self, name)
            if isinstance(value, str) and value not in SPECIAL_TOKEN_NAMES:
                raise ValueError(
                    f"{name} must be a token id, one of {list(SPECIAL_TOKEN_NAMES)}, or None; got {value!r}"
                )
