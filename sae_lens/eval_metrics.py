"""Evaluate SAEs: reconstruction, sparsity, and what splicing them in does to the model.

`run_evals(sae, activation_store, model, eval_config)` returns `(metrics, feature_metrics)`:

    metrics = {
        "model_behavior_preservation": {kl_div_score, kl_div_with_ablation, kl_div_with_sae},
        "model_performance_preservation": {ce_loss_score, ce_loss_with_ablation,
                                           ce_loss_with_sae, ce_loss_without_sae},
        "reconstruction_quality": {explained_variance, explained_variance_legacy, mse, cossim},
        "shrinkage": {l2_norm_in, l2_norm_out, l2_ratio, relative_reconstruction_bias},
        "sparsity": {l0, l1},
        "token_stats": {total_tokens_eval_reconstruction, total_tokens_eval_sparsity_variance},
    }
    feature_metrics = {feature_density, consistent_activation_heuristic,      # per latent
                       encoder_bias, encoder_norm, encoder_decoder_cosine_sim}

Groups whose metrics were not requested are left out. Positions whose token is in
`ignore_tokens` are left out of every metric: the SAE and the zero-ablation leave the activation
there untouched, and those positions are not averaged over.

Definitions, and where they differ from SAELens 5.6.0 (whose key names are kept):
- kl_div_with_sae / _with_ablation: mean over positions of KL(p_model || p_spliced) of the
  next-token distributions; kl_div_score = (kl_ablation - kl_sae) / kl_ablation.
- ce_loss_*: mean next-token cross-entropy; ce_loss_score = (ce_ablation - ce_sae) /
  (ce_ablation - ce_without_sae). The zero-ablation baseline replaces the activation by zeros.
  5.6.0 also zero-ablated the ignored positions (e.g. BOS), which made the baseline unfairly
  bad; here ignored positions are untouched by both the SAE and the ablation.
- explained_variance: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over all evaluated
  tokens (the usual definition; 5.6.0 averaged a per-token ratio against the batch mean, which
  is biased and blows up for tokens near the mean: that value is kept as
  explained_variance_legacy).
- mse: mean over tokens of ||x - x_hat||^2 (the training loss's definition). 5.6.0 divided each
  token's error by the number of tokens in its batch, so its value shrank with the batch size.
- cossim: mean cosine similarity of x and x_hat (0 where either is the zero vector; 5.6.0 gave
  NaN there). l2_norm_in/out: mean norms; l2_ratio: mean ||x_hat|| / ||x|| (||x|| < 1e-4
  counted as 1); relative_reconstruction_bias: per batch mean ||x_hat||^2 / mean <x, x_hat>,
  averaged over batches (as 5.6.0).
- l0: mean number of latents > 0 per token; l1: mean sum of latent activations per token.
- feature_density: fraction of evaluated tokens on which each latent is > 0;
  consistent_activation_heuristic: activations per prompt in which the latent fired at all
  (NaN for latents that never fired). Returned only when requested (5.6.0 returned NaN lists).
- Batches are read from the store's token stream, which is not rewound afterwards: the
  trainer may pass its training store. (5.6.0 called `reset_input_dataset()` in between, which
  had no effect on its token stream; ours would restart the stream, so it is not called.)
- A transcoder (`hook_name_out` set) is spliced by reading its input at `hook_name` and
  replacing the activation at `hook_name_out` (the zero-ablation zeroes that one); every
  reconstruction metric compares its prediction with the activation at `hook_name_out`,
  and `reconstruction_quality` adds `fvu` = 1 - explained_variance, the fraction of that
  activation's variance left unexplained.
- With `normalize_activations == "expected_average_only_in"` the SAE sees scaled inputs and
  all reconstruction metrics compare the unscaled input with the unscaled output (5.6.0
  compared the scaled input with the unscaled output).

These names are re-exported by `sae_lens.evals` (the 5.6.0 module path), which also holds
the multi-SAE runner and the command line.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sae_lens.analysis.hook_checks import require_hook
from sae_lens.hook_activations import replace_sae_view, sae_view
from sae_lens.saes.clt import is_clt

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookedRootModule

    from sae_lens.sae import SAE
    from sae_lens.training.activations_store import ActivationsStore


def get_library_version() -> str:
    """Installed version of sae_lens (the package's own version if not installed)."""
    try:
        return version("sae_lens")
    except PackageNotFoundError:
        from sae_lens import __version__

        return __version__


@functools.cache
def get_git_hash() -> str:
    """Short commit hash of the git checkout holding this package, or "unknown". Read from
    the checkout's own files, so no program runs (importing this module builds a default
    EvalConfig); an installed copy is not a checkout."""
    git_dir = _git_dir(Path(__file__).resolve().parent.parent)
    commit = _head_commit(git_dir) if git_dir is not None else None
    return commit[:_SHORT_HASH_LENGTH] if commit else "unknown"


_SHORT_HASH_LENGTH = 7  # git's default abbreviation


def _git_dir(checkout: Path) -> Path | None:
    """The checkout's git directory: `.git`, or where a `.git` file (a worktree) points."""
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text().strip()
        if text.startswith("gitdir:"):
            return (checkout / text.removeprefix("gitdir:").strip()).resolve()
    return None


def _head_commit(git_dir: Path) -> str | None:
    """The commit HEAD names: detached, a loose ref, or a packed ref (in the common git
    directory of a worktree)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.removeprefix("ref:").strip()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        for base in (git_dir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                commit, _, name = line.partition(" ")
                if name == ref:
                    return commit
    except OSError:
        return None
    return None


@dataclass
class EvalConfig:
    """Which metrics `run_evals` computes (all off by default) and on how many batches."""

    batch_size_prompts: int | None = None

    # downstream metrics: model run with the SAE spliced in / zero-ablated
    n_eval_reconstruction_batches: int = 10
    compute_kl: bool = False
    compute_ce_loss: bool = False

    # metrics on the activations at the hook point
    n_eval_sparsity_variance_batches: int = 1
    compute_l2_norms: bool = False
    compute_sparsity_metrics: bool = False
    compute_variance_metrics: bool = False
    compute_featurewise_density_statistics: bool = False

    compute_featurewise_weight_based_metrics: bool = False

    library_version: str = field(default_factory=get_library_version)
    git_hash: str = field(default_factory=get_git_hash)

    @property
    def needs_downstream_pass(self) -> bool:
        return self.compute_kl or self.compute_ce_loss

    @property
    def needs_activation_pass(self) -> bool:
        return (
            self.compute_l2_norms
            or self.compute_sparsity_metrics
            or self.compute_variance_metrics
            or self.compute_featurewise_density_statistics
        )


def get_eval_everything_config(
    batch_size_prompts: int | None = None,
    n_eval_reconstruction_batches: int = 10,
    n_eval_sparsity_variance_batches: int = 1,
) -> EvalConfig:
    """An EvalConfig with every metric switched on."""
    return EvalConfig(
        batch_size_prompts=batch_size_prompts,
        n_eval_reconstruction_batches=n_eval_reconstruction_batches,
        compute_kl=True,
        compute_ce_loss=True,
        n_eval_sparsity_variance_batches=n_eval_sparsity_variance_batches,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True,
    )


# ---------------------------------------------------------------------------------------------
# Shared pieces: which positions count, how activations enter and leave the SAE


def _kept_positions(tokens: torch.Tensor, ignore_tokens: set[int | None]) -> torch.Tensor:
    """[batch, pos] bool: True where the token is not in `ignore_tokens`."""
    ignored = [token for token in ignore_tokens if token is not None]
    if not ignored:
        return torch.ones_like(tokens, dtype=torch.bool)
    return ~torch.isin(tokens, torch.tensor(ignored, device=tokens.device))


@contextmanager
def _hook_z_reshaping_off(sae: SAE) -> Iterator[None]:
    """Evals flatten heads themselves, so an SAE's own hook_z reshaping is paused meanwhile."""
    was_on = bool(getattr(sae, "hook_z_reshaping_mode", False))
    if was_on:
        sae.turn_off_forward_pass_hook_z_reshaping()
    try:
        yield
    finally:
        if was_on:
            sae.turn_on_forward_pass_hook_z_reshaping()


def _sae_input(sae: SAE, acts: torch.Tensor) -> torch.Tensor:
    """The SAE's view [batch, pos, d_in] of a hook activation."""
    return sae_view(acts, sae.cfg.hook_name, sae.cfg.d_in, sae.cfg.hook_head_index)


def _output_hook(sae: SAE) -> str:
    """The hook whose activation the SAE's output stands for: a transcoder's hook_name_out."""
    return sae.cfg.hook_name_out or sae.cfg.hook_name


def _sae_target(sae: SAE, acts_out: torch.Tensor) -> torch.Tensor:
    """What the SAE's output is compared with [batch, pos, d_out]: the view of the activation
    at its output hook (an SAE's: its input's view)."""
    if sae.cfg.hook_name_out is None:
        return _sae_input(sae, acts_out)
    return sae_view(acts_out, sae.cfg.hook_name_out, sae.cfg.d_out)  # type: ignore[arg-type]


def _write_sae_output(
    sae: SAE, acts: torch.Tensor, new: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """`acts` (at the output hook) with the SAE's part replaced by `new` [batch, pos, d_out]
    at kept positions."""
    head_index = sae.cfg.hook_head_index if sae.cfg.hook_name_out is None else None
    replaced = replace_sae_view(acts, new, head_index)
    kept = kept.to(acts.device).reshape(kept.shape + (1,) * (acts.ndim - 2))
    return torch.where(kept, replaced, acts)


def _input_scaling(
    activation_store: ActivationsStore,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(scale, unscale) for SAEs trained on norm-scaled activations, else identities."""
    if activation_store.normalize_activations == "expected_average_only_in":
        return activation_store.apply_norm_scaling_factor, activation_store.unscale
    return (lambda x: x), (lambda x: x)


def _reconstruct(
    sae: SAE, x: torch.Tensor, activation_store: ActivationsStore
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [..., d_sae], reconstruction [..., d_in] in the units of `x`; a
    transcoder's prediction [..., d_out], its skip path included)."""
    scale, unscale = _input_scaling(activation_store)
    sae_out, feature_acts = sae.forward_with_activations(scale(x).to(sae.device))
    return feature_acts, unscale(sae_out).to(x.device)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else math.nan


# ---------------------------------------------------------------------------------------------
# run_evals


def run_evals(
    sae: SAE,
    activation_store: ActivationsStore,
    model: HookedRootModule,
    eval_config: EvalConfig = EvalConfig(),
    model_kwargs: Mapping[str, Any] = {},
    ignore_tokens: set[int | None] = set(),
    verbose: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute the metrics switched on in `eval_config` (see the module docstring) on batches
    of prompts from `activation_store`; returns `(metrics, feature_metrics)`."""
    if is_clt(sae.cfg):  # every layer's output replaced at once: sae_lens.clt_evals
        from sae_lens.clt_evals import run_clt_evals

        return run_clt_evals(sae, activation_store, model, eval_config, dict(model_kwargs))
    if eval_config.needs_downstream_pass and eval_config.n_eval_reconstruction_batches <= 0:
        raise ValueError(
            "eval_config.n_eval_reconstruction_batches must be > 0 when compute_kl or "
            "compute_ce_loss is True."
        )
    if eval_config.needs_activation_pass and eval_config.n_eval_sparsity_variance_batches <= 0:
        raise ValueError(
            "eval_config.n_eval_sparsity_variance_batches must be > 0 when compute_l2_norms, "
            "compute_sparsity_metrics, compute_variance_metrics or "
            "compute_featurewise_density_statistics is True."
        )
    require_hook(sae.cfg.hook_name, model.hook_dict)
    require_hook(_output_hook(sae), model.hook_dict)
    batch_size = eval_config.batch_size_prompts or activation_store.store_batch_size_prompts

    metrics: dict[str, dict[str, Any]] = {
        "model_behavior_preservation": {},
        "model_performance_preservation": {},
        "reconstruction_quality": {},
        "shrinkage": {},
        "sparsity": {},
        "token_stats": {},
    }
    feature_metrics: dict[str, Any] = {}

    if eval_config.needs_downstream_pass:
        downstream = get_downstream_reconstruction_metrics(
            sae,
            model,
            activation_store,
            compute_kl=eval_config.compute_kl,
            compute_ce_loss=eval_config.compute_ce_loss,
            n_batches=eval_config.n_eval_reconstruction_batches,
            eval_batch_size_prompts=batch_size,
            ignore_tokens=ignore_tokens,
            verbose=verbose,
            model_kwargs=model_kwargs,
        )
        if eval_config.compute_kl:
            for key in ("kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"):
                metrics["model_behavior_preservation"][key] = downstream[key]
        if eval_config.compute_ce_loss:
            for key in (
                "ce_loss_score",
                "ce_loss_with_ablation",
                "ce_loss_with_sae",
                "ce_loss_without_sae",
            ):
                metrics["model_performance_preservation"][key] = downstream[key]

    if eval_config.needs_activation_pass:
        activation_metrics, feature_metrics = get_sparsity_and_variance_metrics(
            sae,
            model,
            activation_store,
            n_batches=eval_config.n_eval_sparsity_variance_batches,
            compute_l2_norms=eval_config.compute_l2_norms,
            compute_sparsity_metrics=eval_config.compute_sparsity_metrics,
            compute_variance_metrics=eval_config.compute_variance_metrics,
            compute_featurewise_density_statistics=eval_config.compute_featurewise_density_statistics,
            eval_batch_size_prompts=batch_size,
            model_kwargs=model_kwargs,
            ignore_tokens=ignore_tokens,
            verbose=verbose,
        )
        groups = {
            "shrinkage": _SHRINKAGE_KEYS,
            "sparsity": _SPARSITY_KEYS,
            "reconstruction_quality": _VARIANCE_KEYS,
        }
        for group, keys in groups.items():
            metrics[group].update(
                {k: activation_metrics[k] for k in keys if k in activation_metrics}
            )

    if eval_config.compute_featurewise_weight_based_metrics:
        feature_metrics |= get_featurewise_weight_based_metrics(sae)

    tokens_per_batch = activation_store.context_size * batch_size
    metrics["token_stats"] = {
        "total_tokens_eval_reconstruction": tokens_per_batch
        * eval_config.n_eval_reconstruction_batches,
        "total_tokens_eval_sparsity_variance": tokens_per_batch
        * eval_config.n_eval_sparsity_variance_batches,
    }
    return {group: values for group, values in metrics.items() if values}, feature_metrics


_SHRINKAGE_KEYS = ("l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias")
_SPARSITY_KEYS = ("l0", "l1")
_VARIANCE_KEYS = ("explained_variance", "explained_variance_legacy", "mse", "cossim", "fvu")


@torch.no_grad()
def get_featurewise_weight_based_metrics(sae: SAE) -> dict[str, Any]:
    """Per latent: encoder bias (the one that decides firing, e.g. gated SAEs' b_gate),
    encoder column norm, cosine of encoder column and decoder row."""
    W_enc = sae.W_enc  # [d_in, d_sae]
    W_dec = sae.W_dec  # [d_sae, d_in]
    bias = sae.architecture.encoder_bias(sae)
    return {
        "encoder_bias": bias.float().cpu().tolist(),
        "encoder_norm": W_enc.float().norm(dim=0).cpu().tolist(),
        "encoder_decoder_cosine_sim": F.cosine_similarity(W_enc.T.float(), W_dec.float(), dim=-1)
        .cpu()
        .tolist(),
    }


# ---------------------------------------------------------------------------------------------
# Downstream metrics: the model with the SAE spliced in, and with the activation zero-ablated


def get_downstream_reconstruction_metrics(
    sae: SAE,
    model: HookedRootModule,
    activation_store: ActivationsStore,
    compute_kl: bool,
    compute_ce_loss: bool,
    n_batches: int,
    eval_batch_size_prompts: int,
    ignore_tokens: set[int | None] = set(),
    verbose: bool = False,
    model_kwargs: Mapping[str, Any] = {},
) -> dict[str, float]:
    """KL and CE metrics averaged over the kept positions of `n_batches` batches."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for _ in tqdm(range(n_batches), desc="Reconstruction batches", disable=not verbose):
        with torch.no_grad():
            batch_tokens = activation_store.get_batch_tokens(eval_batch_size_prompts)
        per_position = get_recons_loss(
            sae,
            model,
            batch_tokens,
            activation_store,
            compute_kl=compute_kl,
            compute_ce_loss=compute_ce_loss,
            ignore_tokens=ignore_tokens,
            model_kwargs=model_kwargs,
        )
        kept = _kept_positions(batch_tokens, ignore_tokens)
        for name, values in per_position.items():
            # the CE loss has one position fewer (nothing to predict after the last token)
            kept_here = kept[:, : values.shape[1]].to(values.device)
            sums[name] += values[kept_here].double().sum().item()
            counts[name] += int(kept_here.sum().item())

    metrics = {name: _ratio(total, counts[name]) for name, total in sums.items()}
    if compute_kl:
        metrics["kl_div_score"] = _ratio(
            metrics["kl_div_with_ablation"] - metrics["kl_div_with_sae"],
            metrics["kl_div_with_ablation"],
        )
    if compute_ce_loss:
        metrics["ce_loss_score"] = _ratio(
            metrics["ce_loss_with_ablation"] - metrics["ce_loss_with_sae"],
            metrics["ce_loss_with_ablation"] - metrics["ce_loss_without_sae"],
        )
    return metrics


def _kl_per_position(log_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) [batch, pos] from log p [batch, pos, vocab] and the logits of q."""
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _splice_hook(
    sae: SAE,
    activation_store: ActivationsStore,
    kept: torch.Tensor,
    captured: dict[str, torch.Tensor],
    acts: torch.Tensor,
    hook: Any,  # noqa: ARG001
) -> torch.Tensor:
    """At the output hook: the SAE's output from its input (`acts`, or a transcoder's
    input `captured` at hook_name earlier in the pass) in place of `acts`."""
    x = _sae_input(sae, captured.pop("input", acts))
    _, reconstruction = _reconstruct(sae, x, activation_store)
    return _write_sae_output(sae, acts, reconstruction, kept)


def _capture_hook(captured: dict[str, torch.Tensor], acts: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
    captured["input"] = acts


def _splice_hooks(
    sae: SAE, activation_store: ActivationsStore, kept: torch.Tensor
) -> list[tuple[str, Callable[..., Any]]]:
    """The forward hooks that splice `sae` into the model (a transcoder: read its input at
    hook_name, replace the activation at hook_name_out)."""
    captured: dict[str, torch.Tensor] = {}
    splice = (_output_hook(sae), partial(_splice_hook, sae, activation_store, kept, captured))
    if sae.cfg.hook_name_out is None:
        return [splice]
    return [(sae.cfg.hook_name, partial(_capture_hook, captured)), splice]


def _zero_ablation_hook(
    sae: SAE,
    kept: torch.Tensor,
    acts: torch.Tensor,
    hook: Any,  # noqa: ARG001
) -> torch.Tensor:
    return _write_sae_output(sae, acts, torch.zeros_like(_sae_target(sae, acts)), kept)


def get_recons_loss(
    sae: SAE,
    model: HookedRootModule,
    batch_tokens: torch.Tensor,
    activation_store: ActivationsStore,
    compute_kl: bool,
    compute_ce_loss: bool,
    ignore_tokens: set[int | None] = set(),
    model_kwargs: Mapping[str, Any] = {},
) -> dict[str, Any]:
    """Per-position metrics for one batch of tokens [batch, pos]: `kl_div_with_sae`,
    `kl_div_with_ablation` ([batch, pos]) and `ce_loss_with_sae`, `ce_loss_without_sae`,
    `ce_loss_with_ablation` ([batch, pos - 1]), not yet masked by `ignore_tokens` (the
    spliced runs do leave ignored positions untouched)."""
    kept = _kept_positions(batch_tokens, ignore_tokens)
    metrics: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), _hook_z_reshaping_off(sae):
        logits, ce_loss = model(
            batch_tokens, return_type="both", loss_per_token=True, **model_kwargs
        )
        log_p = F.log_softmax(logits.float(), dim=-1) if compute_kl else None
        del logits
        if compute_ce_loss:
            metrics["ce_loss_without_sae"] = ce_loss
        runs = {
            "sae": _splice_hooks(sae, activation_store, kept),
            "ablation": [(_output_hook(sae), partial(_zero_ablation_hook, sae, kept))],
        }
        for run_name, fwd_hooks in runs.items():
            logits, ce_loss = model.run_with_hooks(
                batch_tokens,
                return_type="both",
                loss_per_token=True,
                fwd_hooks=fwd_hooks,
                **model_kwargs,
            )
            if log_p is not None:
                metrics[f"kl_div_with_{run_name}"] = _kl_per_position(log_p, logits)
            if compute_ce_loss:
                metrics[f"ce_loss_with_{run_name}"] = ce_loss
            del logits
    return metrics


# ---------------------------------------------------------------------------------------------
# Metrics on the activations at the hook point


class _ActivationTotals:
    """Running sums over the kept tokens of all batches (float64, on the activations' device)."""

    def __init__(self, d_sae: int, device: torch.device):
        zeros = partial(torch.zeros, dtype=torch.float64, device=device)
        self.n_tokens = 0
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: zeros(()))
        self.sum_x: torch.Tensor | None = None  # [d_in]
        self.rrb_per_batch: list[torch.Tensor] = []
        self.fire_counts = zeros(d_sae)  # tokens on which each latent is > 0
        self.prompt_counts = zeros(d_sae)  # prompts in which each latent is ever > 0

    def add_batch(
        self,
        x: torch.Tensor,  # [batch, pos, d_in]
        x_hat: torch.Tensor,  # [batch, pos, d_in]
        feature_acts: torch.Tensor,  # [batch, pos, d_sae]
        kept: torch.Tensor,  # [batch, pos]
    ) -> None:
        fired = (feature_acts > 0) & kept.unsqueeze(-1)
        self.fire_counts += fired.sum(dim=(0, 1))
        self.prompt_counts += fired.any(dim=1).sum(dim=0)
        flat_kept = kept.flatten()
        x = x.flatten(0, 1)[flat_kept].float()  # [n, d_in]
        x_hat = x_hat.flatten(0, 1)[flat_kept].float()
        acts = feature_acts.flatten(0, 1)[flat_kept].float()  # [n, d_sae]
        if x.shape[0] == 0:
            return
        self.n_tokens += x.shape[0]

        norm_in = x.norm(dim=-1)
        norm_out = x_hat.norm(dim=-1)
        squared_error = (x - x_hat).pow(2).sum(dim=-1)
        deviation = (x - x.mean(dim=0)).pow(2).sum(dim=-1)
        per_token = {
            "l2_norm_in": norm_in,
            "l2_norm_out": norm_out,
            "l2_ratio": norm_out / torch.where(norm_in.abs() < 1e-4, 1.0, norm_in),
            "l0": (acts > 0).sum(dim=-1).float(),
            "l1": acts.sum(dim=-1),
            "squared_error": squared_error,
            "squared_norm": x.pow(2).sum(dim=-1),
            "explained_variance_legacy": 1 - squared_error / deviation,
            "cossim": F.cosine_similarity(x, x_hat, dim=-1),
        }
        for name, values in per_token.items():
            self.sums[name] += values.double().sum()
        batch_sum_x = x.double().sum(dim=0)
        self.sum_x = batch_sum_x if self.sum_x is None else self.sum_x + batch_sum_x
        self.rrb_per_batch.append(
            norm_out.pow(2).mean() / (x * x_hat).sum(dim=-1).mean()  # Eq. 10, arXiv 2404.16014
        )

    def mean(self, name: str) -> float:
        return _ratio(self.sums[name].item(), self.n_tokens)

    def explained_variance(self) -> float:
        if self.sum_x is None:
            return math.nan
        total = self.sums["squared_norm"] - self.sum_x.pow(2).sum() / self.n_tokens
        return 1 - _ratio(self.sums["squared_error"].item(), total.item())


def get_sparsity_and_variance_metrics(
    sae: SAE,
    model: HookedRootModule,
    activation_store: ActivationsStore,
    n_batches: int,
    compute_l2_norms: bool,
    compute_sparsity_metrics: bool,
    compute_variance_metrics: bool,
    compute_featurewise_density_statistics: bool,
    eval_batch_size_prompts: int,
    model_kwargs: Mapping[str, Any],
    ignore_tokens: set[int | None] = set(),
    verbose: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reconstruction, shrinkage and sparsity metrics on the activations at the SAE's hook
    point over `n_batches` batches, and per-latent density statistics if asked for."""
    hook_name, output_hook = sae.cfg.hook_name, _output_hook(sae)
    stop_at = max(sae.cfg.hook_layer, sae.cfg.hook_layer_out or 0) + 1
    totals: _ActivationTotals | None = None
    for _ in tqdm(range(n_batches), desc="Sparsity and variance batches", disable=not verbose):
        with torch.no_grad():
            batch_tokens = activation_store.get_batch_tokens(eval_batch_size_prompts)
        with torch.inference_mode(), _hook_z_reshaping_off(sae):
            _, cache = model.run_with_cache(
                batch_tokens,
                prepend_bos=False,
                names_filter=list({hook_name, output_hook}),
                stop_at_layer=stop_at,
                **model_kwargs,
            )
            for name in (hook_name, output_hook):
                if name not in cache:
                    raise ValueError(
                        f"hook {name!r} did not fire when running the model up to layer "
                        f"{stop_at}; check sae.cfg.hook_layer (hook_layer_out)"
                    )
            x = _sae_input(sae, cache[hook_name])
            target = _sae_target(sae, cache[output_hook])  # an SAE's: x
            del cache
            feature_acts, x_hat = _reconstruct(sae, x, activation_store)
            kept = _kept_positions(batch_tokens, ignore_tokens).to(x.device)
            if totals is None:
                totals = _ActivationTotals(sae.cfg.d_sae, x.device)
            totals.add_batch(target, x_hat, feature_acts.to(x.device), kept)
    assert totals is not None, "n_batches must be > 0"

    metrics: dict[str, float] = {}
    if compute_l2_norms:
        metrics |= {name: totals.mean(name) for name in ("l2_norm_in", "l2_norm_out", "l2_ratio")}
        rrb = totals.rrb_per_batch
        metrics["relative_reconstruction_bias"] = (
            torch.stack(rrb).mean().item() if rrb else math.nan
        )
    if compute_sparsity_metrics:
        metrics |= {name: totals.mean(name) for name in ("l0", "l1")}
    if compute_variance_metrics:
        metrics["explained_variance"] = totals.explained_variance()
        metrics["explained_variance_legacy"] = totals.mean("explained_variance_legacy")
        metrics["mse"] = totals.mean("squared_error")
        metrics["cossim"] = totals.mean("cossim")
        if sae.cfg.hook_name_out is not None:  # a transcoder's: of its output hook
            metrics["fvu"] = 1 - metrics["explained_variance"]

    feature_metrics: dict[str, list[float]] = {}
    if compute_featurewise_density_statistics:
        fire_counts = totals.fire_counts
        feature_metrics["feature_density"] = (fire_counts / max(totals.n_tokens, 1)).tolist()
        feature_metrics["consistent_activation_heuristic"] = (
            fire_counts / totals.prompt_counts
        ).tolist()
    return metrics, feature_metrics
