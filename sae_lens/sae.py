"""The inference SAE: `SAEConfig` and `SAE`, a transformer_lens `HookedRootModule` whose
architecture-specific parts (parameters, encode, folding) come from the registry in
`sae_lens.saes`. Also re-exports `TopK` and `get_activation_fn`.

Forward pass, with the hook point each tensor passes through:
    x -> [hook_z flatten] -> hook_sae_input -> runtime normalisation -> minus b_dec
      -> architecture encode (hook_sae_acts_pre, hook_sae_acts_post)
      -> acts @ W_dec + b_dec (hook_sae_recons) -> undo normalisation -> [hook_z unflatten]
      -> (+ error term, hook_sae_error) -> hook_sae_output
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from jaxtyping import Float
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from sae_lens.config import ConfigFieldError
from sae_lens.dtypes import DTYPE_MAP as DTYPE_MAP  # 5.6.0 re-export
from sae_lens.dtypes import dtype_from_name
from sae_lens.errors import SAEWeightsError, check_device
from sae_lens.lazy_names import lazy_names
from sae_lens.saes import transcoder
from sae_lens.saes.activations import TopK, get_activation_fn
from sae_lens.saes.registry import get_architecture
from sae_lens.saes.sae_folder import LEGACY_CFG_KEYS, write_sae_folder
from sae_lens.saes.sae_folder import SAE_CFG_FILENAME as SAE_CFG_FILENAME
from sae_lens.saes.sae_folder import SAE_WEIGHTS_FILENAME as SAE_WEIGHTS_FILENAME
from sae_lens.saes.sae_folder import SPARSITY_FILENAME as SPARSITY_FILENAME

__all__ = ["SAE", "SAEConfig", "TopK", "get_activation_fn", "InputActs", "LatentActs"]

# Names 5.6.0 imported here from the toolkit; code written for it imports them from this
# module. Imported on first use, so loading an SAE class does not load every loader.
__getattr__ = lazy_names(
    globals(),
    {
        name: "sae_lens.toolkit.pretrained_sae_loaders"
        for name in (
            "NAMED_PRETRAINED_SAE_LOADERS",
            "get_conversion_loader_name",
            "handle_config_defaulting",
            "read_sae_from_disk",
        )
    }
    | {
        "get_norm_scaling_factor": "sae_lens.toolkit.pretrained_saes_directory",
        "get_pretrained_saes_directory": "sae_lens.toolkit.pretrained_saes_directory",
    },
)

NORMALIZE_ACTIVATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
HOOK_NAMES = (
    "hook_sae_input",
    "hook_sae_acts_pre",
    "hook_sae_acts_post",
    "hook_sae_output",
    "hook_sae_recons",
    "hook_sae_error",
)

# The order of `SAEConfig.to_dict` (and so of cfg.json) in 5.6.0.
_CFG_JSON_ORDER = (
    "architecture",
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "model_name",
    "hook_name",
    "hook_layer",
    "hook_head_index",
    "activation_fn_str",
    "activation_fn_kwargs",
    "apply_b_dec_to_input",
    "finetuning_scaling_factor",
    "sae_lens_training_version",
    "prepend_bos",
    "dataset_path",
    "dataset_trust_remote_code",
    "context_size",
    "normalize_activations",
    "neuronpedia_id",
    "model_from_pretrained_kwargs",
    "seqpos_slice",
)

# What a transcoder's cfg.json adds (sae_lens.saes.transcoder).
_TRANSCODER_CFG_KEYS = ("hook_name_out", "hook_layer_out", "d_out", "skip_connection")

T = TypeVar("T", bound="SAE")

# Shapes of tensors crossing the SAE's boundary.
InputActs = Float[torch.Tensor, "... d_in"]
LatentActs = Float[torch.Tensor, "... d_sae"]


def config_kwargs(cls: type, config_dict: dict[str, Any]) -> dict[str, Any]:
    """The entries of `config_dict` that are fields of dataclass `cls` (unknown keys are
    dropped, legacy names renamed where the current name is absent, `seqpos_slice` made a
    tuple); a missing required field is a `ConfigFieldError` (a TypeError, as in 5.6.0)."""
    names = {f.name for f in fields(cls)}
    config_dict = dict(config_dict)
    transcoder.cfg_dict_from_saved(config_dict)  # "skip_transcoder" -> standard + skip
    kwargs = {k: v for k, v in config_dict.items() if k in names}
    for old, new in LEGACY_CFG_KEYS.items():
        if old in config_dict and new not in config_dict and new in names:
            kwargs[new] = config_dict[old]
    if "seqpos_slice" in kwargs:
        seqpos = kwargs["seqpos_slice"]
        kwargs["seqpos_slice"] = tuple(seqpos) if isinstance(seqpos, (list, tuple)) else (seqpos,)
    required = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigFieldError(f"{cls.__name__} is missing required field(s) {missing}")
    return kwargs


@dataclass
class SAEConfig:
    """What an SAE is (architecture, sizes, activation) and where its inputs come from."""

    architecture: str  # a registered architecture name (sae_lens.saes.architecture_names())
    d_in: int
    d_sae: int
    activation_fn_str: str
    apply_b_dec_to_input: bool
    finetuning_scaling_factor: bool
    context_size: int
    model_name: str
    hook_name: str
    hook_layer: int
    hook_head_index: int | None
    prepend_bos: bool
    dataset_path: str
    dataset_trust_remote_code: bool
    normalize_activations: str
    dtype: str
    device: str
    sae_lens_training_version: str | None
    activation_fn_kwargs: dict[str, Any] = field(default_factory=dict)
    neuronpedia_id: str | None = None
    model_from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)
    seqpos_slice: tuple[int | None, ...] = (None,)
    # A transcoder (sae_lens.saes.transcoder) predicts the activation at hook_name_out
    # (d_out wide; None for an SAE); skip_connection adds x @ W_skip.
    hook_name_out: str | None = None
    hook_layer_out: int | None = None
    d_out: int | None = None
    skip_connection: bool = False

    def __post_init__(self) -> None:
        if not transcoder.is_transcoder(self):
            transcoder.check_no_transcoder_fields(self)
            if self.d_out not in (None, self.d_in):
                raise ValueError(
                    f"d_out={self.d_out} differs from d_in={self.d_in} but hook_name_out is "
                    "not set: only a transcoder has an output width of its own"
                )
            self.d_out = None  # an SAE's output is its input's width (see `output_width`)
            return
        if self.d_out is None:
            raise ValueError(
                f"d_out is not set: give the width of hook_name_out {self.hook_name_out!r} "
                "(a training run fills it in from the model)"
            )
        transcoder.check_transcoder_fields(self)
        self.hook_layer_out = transcoder.derive_hook_layer_out(
            self.hook_name_out,  # type: ignore[arg-type]
            self.hook_layer_out,
            self.hook_layer,
        )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> SAEConfig:
        """Build from a cfg.json-style dict; unknown keys are ignored."""
        return cls(**config_kwargs(cls, config_dict))

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable (what `cfg.json` holds), in 5.6.0's key order; a
        transcoder's dict adds its output fields."""
        out = {name: getattr(self, name) for name in _CFG_JSON_ORDER}
        out["activation_fn_kwargs"] = self.activation_fn_kwargs or {}
        if transcoder.is_transcoder(self):
            out.update({name: getattr(self, name) for name in _TRANSCODER_CFG_KEYS})
        return out


def _parse_to_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.device | None, torch.dtype | None]:
    """The device and dtype a `Module.to(...)` call asks for (None where not given)."""
    device: Any = None
    dtype: torch.dtype | None = None
    for arg in args:
        if isinstance(arg, torch.dtype):
            dtype = arg
        elif isinstance(arg, torch.Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, (str, int, torch.device)):
            device = arg
    device = kwargs.get("device", device)
    dtype = kwargs.get("dtype", dtype)
    return (torch.device(device) if device is not None else None), dtype


class SAE(HookedRootModule):
    """A sparse autoencoder for inference (see `TrainingSAE` for training)."""

    cfg: SAEConfig
    dtype: torch.dtype
    device: torch.device
    x_norm_coeff: torch.Tensor
    use_error_term: bool
    # Tell users loading this SAE which model kwargs it expects (not useful while training).
    _warn_about_model_kwargs = True

    def __init__(self, cfg: SAEConfig, use_error_term: bool = False):
        super().__init__()
        self.architecture = get_architecture(cfg.architecture)
        # None (5.6.0's Gemma Scope configs) means "none", as it did there.
        if cfg.normalize_activations not in (*NORMALIZE_ACTIVATIONS, None):
            raise ValueError(
                f"normalize_activations must be one of {list(NORMALIZE_ACTIVATIONS)}, "
                f"got {cfg.normalize_activations!r}"
            )
        self.cfg = cfg
        self.dtype = dtype_from_name(cfg.dtype, "SAE dtype")
        self.device = check_device(cfg.device, "SAE device")
        self.use_error_term = use_error_term
        if cfg.model_from_pretrained_kwargs and self._warn_about_model_kwargs:
            warnings.warn(
                "This SAE was trained on a model loaded with model_from_pretrained_kwargs="
                f"{cfg.model_from_pretrained_kwargs}; load the model with the same kwargs "
                "(e.g. HookedSAETransformer.from_pretrained_no_processing(...)) for best results",
                UserWarning,
                stacklevel=2,
            )
        self.activation_fn = get_activation_fn(
            cfg.activation_fn_str, **(cfg.activation_fn_kwargs or {})
        )
        self._init_params()
        self._check_decoder_width()
        if cfg.skip_connection:  # [d_in, d_out], zero: training starts without the skip path
            self.W_skip = nn.Parameter(
                torch.zeros(cfg.d_in, cfg.d_out, dtype=self.dtype, device=self.device)
            )
        if cfg.finetuning_scaling_factor:
            self.finetuning_scaling_factor = nn.Parameter(
                torch.ones(cfg.d_sae, dtype=self.dtype, device=self.device)
            )
        for name in HOOK_NAMES:
            setattr(self, name, HookPoint())
        if cfg.hook_name.endswith("_z"):
            self.turn_on_forward_pass_hook_z_reshaping()
        else:
            self.turn_off_forward_pass_hook_z_reshaping()
        self.setup()

    def _init_params(self) -> None:
        self.architecture.init_params(self)

    def _check_decoder_width(self) -> None:
        """A transcoder's decoder must write d_out wide: refuse an architecture whose
        parameters ignore d_out (its decoder would be d_in wide)."""
        if not transcoder.is_transcoder(self.cfg):
            return
        if tuple(self.W_dec.shape) != (self.cfg.d_sae, self.cfg.d_out):
            raise ValueError(
                f"{self.cfg.architecture} SAEs cannot be transcoders with d_out={self.cfg.d_out} "
                f"!= d_in={self.cfg.d_in}: the architecture's decoder is "
                f"{list(self.W_dec.shape)} (use standard, topk, batchtopk or jumprelu)"
            )

    # --- construction and loading --------------------------------------------------------
    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> SAE:
        """An SAE (freshly initialised) from a cfg.json-style dict."""
        return cls(SAEConfig.from_dict(config_dict))

    @classmethod
    def _from_cfg_and_weights(
        cls: type[T], cfg_dict: dict[str, Any], state_dict: dict[str, Any], source: str = ""
    ) -> T:
        """An SAE holding `state_dict`; a missing or misshaped tensor is an SAEWeightsError
        naming `source` (the weights file or published SAE they came from)."""
        sae = cls.from_dict(cfg_dict)
        transcoder.state_dict_from_saved(state_dict)
        sae.process_state_dict_for_loading(state_dict)
        sae._check_state_dict(state_dict, source)
        sae.load_state_dict(state_dict)
        return sae  # type: ignore[return-value]

    @classmethod
    def load_from_pretrained(
        cls: type[T], path: str, device: str = "cpu", dtype: str | None = None
    ) -> T:
        """Load a local SAE saved by `save_model` (or by SAELens), or in any published format
        the toolkit detects (Gemma Scope, dictionary_learning, sparsify, Llama Scope, ...)."""
        from sae_lens.toolkit.loaders.local_folder import local_weights_file
        from sae_lens.toolkit.pretrained_sae_loaders import read_local_sae_folder

        cfg_dict, state_dict, _ = read_local_sae_folder(path, device=device, dtype=dtype)
        return cls._from_cfg_and_weights(cfg_dict, state_dict, str(local_weights_file(path)))

    @classmethod
    def from_pretrained(
        cls, release: str, sae_id: str, device: str = "cpu"
    ) -> tuple[SAE, dict[str, Any], torch.Tensor | None]:
        """Load a published SAE (a release of the pretrained registry, a hub repo, or a local
        folder) and return (sae, cfg_dict, log_sparsity or None)."""
        from sae_lens.toolkit.pretrained_sae_loaders import load_pretrained_sae_files

        cfg_dict, state_dict, log_sparsity = load_pretrained_sae_files(
            release, sae_id, device=device
        )
        # The loader has already folded any registry norm-scaling factor into the weights.
        sae = cls._from_cfg_and_weights(cfg_dict, state_dict, f"{release}/{sae_id}")
        return sae, cfg_dict, log_sparsity

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """`nn.Module.load_state_dict`, but when strict a missing, unexpected or misshaped
        tensor is a one-line ValueError naming it."""
        if strict:
            self._check_state_dict(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _check_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "") -> None:
        """An SAEWeightsError (a ValueError) naming `source` and the first missing,
        misshaped or unexpected tensor."""
        expected = {name: tuple(t.shape) for name, t in self.state_dict().items()}
        what = f"a {self.cfg.architecture} SAE with d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}"
        if transcoder.is_transcoder(self.cfg):
            what += f", d_out={self.cfg.d_out}"
        where = f"{source}: " if source else ""
        for name, shape in expected.items():
            if name not in state_dict:
                raise SAEWeightsError(
                    f"{where}weights lack tensor {name!r} (shape {list(shape)}) needed by {what}"
                )
            actual = tuple(state_dict[name].shape)
            if actual != shape:
                raise SAEWeightsError(
                    f"{where}tensor {name!r} has shape {list(actual)}, expected {list(shape)} "
                    f"for {what}"
                )
        unexpected = sorted(set(state_dict) - set(expected))
        if unexpected:
            raise SAEWeightsError(
                f"{where}unexpected tensor(s) {unexpected} for {what}; expected {sorted(expected)}"
            )

    # --- saving ------------------------------------------------------------------------
    def save_model(
        self, path: str | Path, sparsity: torch.Tensor | None = None
    ) -> tuple[Path, ...]:
        """Write `cfg.json`, `sae_weights.safetensors` and, if given, `sparsity.safetensors`
        into folder `path`; returns the written paths (weights, cfg[, sparsity])."""
        state_dict = self.state_dict()
        self.process_state_dict_for_saving(state_dict)
        transcoder.state_dict_for_saving(state_dict)
        cfg_dict = self.cfg.to_dict()
        self.architecture.cfg_dict_for_saving(cfg_dict)  # e.g. BatchTopK saves as JumpReLU
        transcoder.cfg_dict_for_saving(cfg_dict)  # e.g. standard + skip: "skip_transcoder"
        return write_sae_folder(path, cfg_dict, state_dict, sparsity)

    def process_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        """Turn this module's state dict into the saved form, in place (no-op here)."""

    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        """Turn a saved state dict into this module's form, in place (no-op here)."""

    def get_name(self) -> str:
        return f"sae_{self.cfg.model_name}_{self.cfg.hook_name}_{self.cfg.d_sae}"

    # --- device and dtype --------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> SAE:  # type: ignore[override]
        """`nn.Module.to`, also updating `self.device`/`self.dtype` and the config (as
        5.6.0: `cfg.device = str(device)`, `cfg.dtype = str(dtype)`, e.g. "torch.float16")."""
        device, dtype = _parse_to_args(args, kwargs)
        result = super().to(*args, **kwargs)
        if device is not None:
            self.device = device
            self.cfg.device = str(device)
        if dtype is not None:
            self.dtype = dtype
            self.cfg.dtype = str(dtype)
        return result

    # --- forward pass ------------------------------------------------------------------
    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct `x` (a transcoder: predict its output hook's activation from `x`).
        With `use_error_term`, the output is exactly `target` (default `x`; a transcoder needs
        the activation at `hook_name_out`) unless a hook edits the SAE's activations; hooks
        still see the real reconstruction and error."""
        if target is None:
            if self.use_error_term and transcoder.is_transcoder(self.cfg):
                raise ValueError(
                    "a transcoder's error term needs the activation it replaces: call it as "
                    "sae(x, target=<activation at hook_name_out>)"
                )
            target = x
        sae_out, _ = self.forward_with_activations(x)
        if self.use_error_term:
            with torch.no_grad():
                with _disable_hooks(self):
                    clean_out, _ = self.forward_with_activations(x)
                error = target - clean_out
                hooked_error = self.hook_sae_error(error)
            # = sae_out + hooked_error, arranged so an unedited pass returns target bit for
            # bit; gradients flow through sae_out only, as with a detached error term.
            sae_out = target.detach() + (sae_out - clean_out) + (hooked_error - error)
        return self.hook_sae_output(sae_out)

    def forward_with_activations(self, x: InputActs) -> tuple[torch.Tensor, LatentActs]:
        """(output, feature activations) for raw input `x`, without the error term: the
        reconstruction, or a transcoder's prediction with its skip path."""
        feature_acts = self.encode(x)
        sae_out = self.decode(feature_acts)
        if self.cfg.skip_connection:
            sae_out = sae_out + self.skip_output(x)
        return sae_out, feature_acts

    def skip_output(self, x: InputActs) -> torch.Tensor:
        """A skip transcoder's linear path `x @ W_skip` [..., d_out] for raw input `x` (as
        SAELens 6: the input before `hook_sae_input`)."""
        return self.reshape_fn_in(x.to(self.dtype)) @ self.W_skip

    def process_sae_in(self, sae_in: InputActs) -> InputActs:
        """Cast, flatten hook_z heads, apply runtime normalisation and remove b_dec."""
        x = self.reshape_fn_in(sae_in.to(self.dtype))
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"SAE input has last dimension {x.shape[-1]}, expected d_in={self.cfg.d_in}"
            )
        x = self.run_time_activation_norm_fn_in(self.hook_sae_input(x))
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def encode_with_hidden_pre(self, x: InputActs) -> tuple[LatentActs, LatentActs]:
        """(feature_acts, hidden_pre) for raw input `x`."""
        return self.architecture.encode(self, self.process_sae_in(x))

    def encode(self, x: InputActs) -> LatentActs:
        """Feature activations for raw input `x`."""
        return self.encode_with_hidden_pre(x)[0]

    def decode(self, feature_acts: LatentActs) -> InputActs:
        """Reconstruction (in the input's space and shape) from feature activations."""
        return self.finish_decode(self.apply_finetuning_scaling_factor(feature_acts) @ self.W_dec)

    def finish_decode(self, latent_sum: InputActs) -> torch.Tensor:
        """The output from `acts @ W_dec`: add b_dec, undo normalisation, restore heads (a
        transcoder's output is [..., d_out], whatever shape its input had)."""
        sae_out = self.hook_sae_recons(latent_sum + self.b_dec)
        sae_out = self.run_time_activation_norm_fn_out(sae_out)
        if transcoder.is_transcoder(self.cfg):
            return sae_out
        return self.reshape_fn_out(sae_out, self.d_head)

    def apply_finetuning_scaling_factor(self, feature_acts: torch.Tensor) -> torch.Tensor:
        if self.cfg.finetuning_scaling_factor:
            return feature_acts * self.finetuning_scaling_factor
        return feature_acts

    # 5.6.0 names for one architecture's encode, whatever this SAE's architecture is.
    def encode_standard(self, x: InputActs) -> LatentActs:
        return get_architecture("standard").encode(self, self.process_sae_in(x))[0]

    def encode_gated(self, x: InputActs) -> LatentActs:
        return get_architecture("gated").encode(self, self.process_sae_in(x))[0]

    def encode_jumprelu(self, x: InputActs) -> LatentActs:
        return get_architecture("jumprelu").encode(self, self.process_sae_in(x))[0]

    def initialize_weights_basic(self) -> None:
        get_architecture("standard").init_params(self)

    def initialize_weights_gated(self) -> None:
        get_architecture("gated").init_params(self)

    def initialize_weights_jumprelu(self) -> None:
        get_architecture("jumprelu").init_params(self)

    # --- runtime normalisation ---------------------------------------------------------
    def run_time_activation_norm_fn_in(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each token as `normalize_activations` asks, remembering how to undo it
        (`expected_average_only_in` is applied by the activation store, not here)."""
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            self.x_norm_coeff = (self.cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            return x * self.x_norm_coeff
        if mode == "layer_norm":
            self.ln_mu = x.mean(dim=-1, keepdim=True)
            x = x - self.ln_mu
            self.ln_std = x.std(dim=-1, keepdim=True)
            return x / (self.ln_std + 1e-5)
        return x

    def run_time_activation_norm_fn_out(self, x: torch.Tensor) -> torch.Tensor:
        """Undo `run_time_activation_norm_fn_in` of the last encoded input."""
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            return x / self.x_norm_coeff
        if mode == "layer_norm":
            return x * self.ln_std + self.ln_mu
        return x

    # --- hook_z reshaping --------------------------------------------------------------
    def turn_on_forward_pass_hook_z_reshaping(self) -> None:
        """Accept [..., n_heads, d_head] inputs (flattened to d_in) and return that shape."""
        if not self.cfg.hook_name.endswith("_z"):
            raise ValueError(
                f"hook_z reshaping is only for SAEs on a hook_z, not {self.cfg.hook_name!r}"
            )
        self.hook_z_reshaping_mode = True
        self.d_head: int | None = None

    def turn_off_forward_pass_hook_z_reshaping(self) -> None:
        self.hook_z_reshaping_mode = False
        self.d_head = None

    def reshape_fn_in(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n_heads, d_head] -> [..., d_in] when reshaping is on (remembers d_head)."""
        if not self.hook_z_reshaping_mode:
            return x
        if x.shape[-1] == self.cfg.d_in:  # already flat
            self.d_head = None
            return x
        self.d_head = x.shape[-1]
        return x.flatten(-2)

    def reshape_fn_out(self, x: torch.Tensor, d_head: int | None) -> torch.Tensor:
        """[..., d_in] -> [..., n_heads, d_head] when the input was given per head."""
        if not self.hook_z_reshaping_mode or d_head is None:
            return x
        return x.unflatten(-1, (-1, d_head))

    # --- folding -----------------------------------------------------------------------
    @torch.no_grad()
    def fold_W_dec_norm(self) -> None:
        """Give every decoder row unit norm, moving the norm into the encoder side; the
        SAE's output is unchanged (for topk: exactly when all norms are equal)."""
        norms = self.W_dec.norm(dim=-1)  # [d_sae]
        self.W_dec.data = self.W_dec.data / norms[:, None]
        self.W_enc.data = self.W_enc.data * norms[None, :]
        self._fold_W_dec_norm_into_encoder(norms)

    def _fold_W_dec_norm_into_encoder(self, norms: torch.Tensor) -> None:
        self.architecture.fold_W_dec_norm(self, norms)

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, activation_norm_scaling_factor: float) -> None:
        """Fold a fixed input scale (inputs were multiplied by it in training) into the
        weights, so the SAE takes unscaled inputs; sets normalize_activations to 'none'."""
        self.W_enc.data = self.W_enc.data * activation_norm_scaling_factor
        self.W_dec.data = self.W_dec.data / activation_norm_scaling_factor
        self.b_dec.data = self.b_dec.data / activation_norm_scaling_factor
        self.cfg.normalize_activations = "none"


_IDENTITY = nn.Identity()


@contextmanager
def _disable_hooks(sae: SAE) -> Iterator[None]:
    """Run the SAE with its hook points replaced by identities (no hook fires)."""
    hook_points = dict(sae.hook_dict)
    try:
        for name in hook_points:
            setattr(sae, name, _IDENTITY)
        yield
    finally:
        for name, hook_point in hook_points.items():
            setattr(sae, name, hook_point)
