"""The attributes and methods 5.6.0 code reads on instances (not only on classes):
`dir()` of each object built the 5.6.0 way holds every name it held in sae-lens 5.6.0,
and the names 5.6.0 code and tests use behave as they did there. Name lists and values
marked "5.6.0" were recorded by running the published sae-lens 5.6.0."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from sae_lens import __version__
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE, SAEConfig, _disable_hooks
from sae_lens.training.optim import L1Scheduler
from sae_lens.training.sae_trainer import SAETrainer, _update_sae_lens_training_version
from sae_lens.training.training_sae import (
    JumpReLU,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepOutput,
    _calculate_topk_aux_acts,
)

ARCHITECTURES = ["standard", "gated", "jumprelu", "topk"]

# dir() of each 5.6.0 object, less dunder names and (for SAEs) the names of a bare
# HookedRootModule (5.6.0).
SAE_NAMES_56 = """
    W_dec W_enc activation_fn apply_finetuning_scaling_factor b_dec cfg d_head decode
    device dtype encode encode_gated encode_jumprelu encode_standard fold_W_dec_norm
    fold_activation_norm_scaling_factor from_dict from_pretrained get_name hook_dict
    hook_sae_acts_post hook_sae_acts_pre hook_sae_error hook_sae_input hook_sae_output
    hook_sae_recons hook_z_reshaping_mode initialize_weights_basic
    initialize_weights_gated initialize_weights_jumprelu load_from_pretrained mod_dict
    process_sae_in process_state_dict_for_loading process_state_dict_for_saving
    reshape_fn_in reshape_fn_out run_time_activation_norm_fn_in
    run_time_activation_norm_fn_out save_model turn_off_forward_pass_hook_z_reshaping
    turn_on_forward_pass_hook_z_reshaping use_error_term
""".split()
TRAINING_SAE_EXTRA_NAMES_56 = """
    _get_mse_loss_fn calculate_ghost_grad_loss calculate_topk_aux_loss
    check_cfg_compatibility encode_with_hidden_pre encode_with_hidden_pre_fn
    encode_with_hidden_pre_gated encode_with_hidden_pre_jumprelu
    initialize_b_dec_with_mean initialize_b_dec_with_precalculated
    initialize_decoder_norm_constant_norm initialize_weights_complex mse_loss_fn
    remove_gradient_parallel_to_decoder_directions set_decoder_norm_to_unit_norm
    threshold training_forward_pass
""".split()
PARAMETER_NAMES_56 = {
    "standard": ["b_enc"],
    "gated": ["b_gate", "b_mag", "r_mag"],
    "jumprelu": ["b_enc", "threshold"],
    "topk": ["b_enc"],
}
TRAINING_PARAMETER_NAMES_56 = {**PARAMETER_NAMES_56, "jumprelu": ["b_enc", "log_threshold"]}
SAE_CONFIG_NAMES_56 = """
    activation_fn_kwargs activation_fn_str apply_b_dec_to_input architecture
    context_size d_in d_sae dataset_path dataset_trust_remote_code device dtype
    finetuning_scaling_factor from_dict hook_head_index hook_layer hook_name
    model_from_pretrained_kwargs model_name neuronpedia_id normalize_activations
    prepend_bos sae_lens_training_version seqpos_slice to_dict
""".split()
TRAINING_SAE_CONFIG_EXTRA_NAMES_56 = """
    decoder_heuristic_init decoder_orthogonal_init from_sae_runner_config
    get_base_sae_cfg_dict init_encoder_as_decoder_transpose jumprelu_bandwidth
    jumprelu_init_threshold l1_coefficient lp_norm mse_loss_normalization noise_scale
    normalize_sae_decoder scale_sparsity_penalty_by_decoder_norm use_ghost_grads
""".split()
RUNNER_CONFIG_METHOD_NAMES_56 = """
    from_json get_base_sae_cfg_dict get_training_sae_cfg_dict to_dict to_json
    tokens_per_buffer total_training_steps total_training_tokens
""".split()
TRAINER_NAMES_56 = """
    _begin_finetuning_if_needed _build_sparsity_log_dict _build_train_step_log_dict
    _checkpoint_if_needed _log_train_step _reset_running_sparsity_stats
    _run_and_log_evals _train_step _update_pbar act_freq_scores activations_store
    autocast_if_enabled cfg checkpoint_thresholds current_l1_coefficient dead_neurons
    feature_sparsity fit l1_scheduler log_feature_sparsity lr_scheduler model
    n_forward_passes_since_fired n_frac_active_tokens n_training_steps n_training_tokens
    optimizer sae save_checkpoint scaler started_fine_tuning trainer_eval_config
""".split()
L1_SCHEDULER_NAMES_56 = """
    current_l1_coefficient current_step final_l1_coefficient l1_warmup_steps
    load_state_dict state_dict step total_steps
""".split()


def build_runner_cfg(tmp_path: Path, **kwargs: Any) -> LanguageModelSAERunnerConfig:
    """A small run config written as 5.6.0 code writes one."""
    values: dict[str, Any] = dict(
        model_name="m",
        dataset_path="x/y",
        d_in=6,
        d_sae=10,
        wandb_id="abc",
        log_to_wandb=False,
        verbose=False,
        checkpoint_path=str(tmp_path),
        model_from_pretrained_kwargs={},
    )
    values.update(kwargs)
    if values.get("architecture") == "topk":
        values.setdefault("activation_fn_kwargs", {"k": 4})
    return LanguageModelSAERunnerConfig(**values)


def build_trainer(cfg: LanguageModelSAERunnerConfig) -> SAETrainer:
    """A trainer as 5.6.0's tests build one; `_train_step` needs neither model nor store."""
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    return SAETrainer(
        model=None,  # type: ignore[arg-type]
        sae=sae,
        activation_store=None,  # type: ignore[arg-type]
        save_checkpoint_fn=lambda *args, **kwargs: None,
        cfg=cfg,
    )


def missing(names: list[str], obj: object) -> list[str]:
    return sorted(set(names) - set(dir(obj)))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sae_and_training_sae_have_every_5_6_0_name(architecture: str, tmp_path: Path) -> None:
    cfg = build_runner_cfg(tmp_path, architecture=architecture)
    sae = SAE.from_dict(cfg.get_base_sae_cfg_dict())
    assert missing(SAE_NAMES_56 + PARAMETER_NAMES_56[architecture], sae) == []
    training_sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    expected = (
        SAE_NAMES_56 + TRAINING_SAE_EXTRA_NAMES_56 + TRAINING_PARAMETER_NAMES_56[architecture]
    )
    assert missing(expected, training_sae) == []
    # 5.6.0 had `bandwidth` on jumprelu training SAEs only
    assert hasattr(training_sae, "bandwidth") == (architecture == "jumprelu")


def test_configs_trainer_and_l1_scheduler_have_every_5_6_0_name(tmp_path: Path) -> None:
    cfg = build_runner_cfg(tmp_path)
    field_names = list(LanguageModelSAERunnerConfig.__dataclass_fields__)
    assert missing(field_names + RUNNER_CONFIG_METHOD_NAMES_56, cfg) == []
    assert missing(SAE_CONFIG_NAMES_56, SAEConfig.from_dict(cfg.get_base_sae_cfg_dict())) == []
    training_cfg = TrainingSAEConfig.from_sae_runner_config(cfg)
    assert missing(SAE_CONFIG_NAMES_56 + TRAINING_SAE_CONFIG_EXTRA_NAMES_56, training_cfg) == []
    assert missing(TRAINER_NAMES_56, build_trainer(cfg)) == []
    l1 = L1Scheduler(l1_warm_up_steps=3, total_steps=10, final_l1_coefficient=1.0)
    assert missing(L1_SCHEDULER_NAMES_56, l1) == []


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_with_hidden_pre_fn_is_the_training_encode(
    architecture: str, tmp_path: Path
) -> None:
    cfg = build_runner_cfg(tmp_path, architecture=architecture)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    x = torch.randn(5, 6)
    acts, hidden_pre = sae.encode_with_hidden_pre_fn(x)
    expected_acts, expected_hidden_pre = sae.encode_with_hidden_pre(x)
    assert torch.equal(acts, expected_acts) and torch.equal(hidden_pre, expected_hidden_pre)
    assert torch.equal(sae(x), sae.decode(acts))


def test_jumprelu_bandwidth_is_the_configured_one_and_feeds_the_encode(tmp_path: Path) -> None:
    cfg = build_runner_cfg(tmp_path, architecture="jumprelu", jumprelu_bandwidth=0.05)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    assert sae.bandwidth == 0.05
    with torch.no_grad():
        sae.log_threshold.fill_(-1.0)
    x = torch.randn(5, 6)
    hidden_pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
    expected = JumpReLU.apply(hidden_pre, torch.exp(sae.log_threshold), sae.bandwidth)
    torch.testing.assert_close(sae.encode_with_hidden_pre_jumprelu(x)[0], expected)


def test_get_mse_loss_fn_follows_the_config(tmp_path: Path) -> None:
    sae = TrainingSAE(build_runner_cfg(tmp_path))
    preds, target = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(sae.mse_loss_fn(preds, target), (preds - target) ** 2)
    sae.cfg.mse_loss_normalization = "dense_batch"  # as 5.6.0's tests switch it
    sae.mse_loss_fn = sae._get_mse_loss_fn()
    norm = (target - target.mean(0)).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(
        sae.mse_loss_fn(preds, target), (preds - target) ** 2 / (norm + 1e-6)
    )


def test_calculate_topk_aux_acts_keeps_the_top_dead_latents() -> None:
    hidden_pre = torch.tensor([[5.0, 1.0, -2.0, 3.0, 0.5], [-1.0, 4.0, 2.0, -3.0, 6.0]])
    dead = torch.tensor([False, True, True, True, False])
    acts = _calculate_topk_aux_acts(2, hidden_pre, dead)
    expected = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0], [0.0, 4.0, 2.0, 0.0, 0.0]])
    assert torch.equal(acts, expected)


def test_disable_hooks_stops_hook_points_and_restores_them(tmp_path: Path) -> None:
    sae = SAE.from_dict(build_runner_cfg(tmp_path).get_base_sae_cfg_dict())
    x = torch.randn(3, 6)
    _, cache = sae.run_with_cache(x)
    with _disable_hooks(sae):
        _, disabled_cache = sae.run_with_cache(x)
    assert len(disabled_cache) == 0 and len(cache) == 5  # every hook but hook_sae_error
    assert all(isinstance(hook, HookPoint) for hook in sae.hook_dict.values())
    assert sae.run_with_cache(x)[1].keys() == cache.keys()


# `_build_train_step_log_dict` of the output below, for the trainer of
# `test_build_train_step_log_dict_as_in_5_6_0` (5.6.0).
LOG_DICT_56 = {
    "losses/overall_loss": 1.25,
    "metrics/explained_variance": 0.7243101596832275,
    "metrics/explained_variance_std": 0.2578981816768646,
    "metrics/l0": 1.5,
    "sparsity/mean_passes_since_fired": 3.0,
    "sparsity/dead_features": 0,
    "details/current_learning_rate": 0.0005,
    "details/current_l1_coefficient": 0.25,
    "details/n_training_tokens": 96,
    "losses/mse_loss": 1.0,
    "losses/l1_loss": 0.8,
    "losses/raw_l1_loss": 0.2,
}


def test_build_train_step_log_dict_as_in_5_6_0(tmp_path: Path) -> None:
    cfg = build_runner_cfg(
        tmp_path,
        d_in=2,
        d_sae=3,
        lr=5e-4,
        l1_coefficient=0.25,
        training_tokens=400,
        train_batch_size_tokens=4,
    )
    trainer = build_trainer(cfg)
    trainer.n_forward_passes_since_fired = torch.tensor([0.0, 2.0, 7.0])
    output = TrainStepOutput(
        sae_in=torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5], [2.0, 2.0]]),
        sae_out=torch.tensor([[1.5, 2.0], [2.0, -1.0], [0.0, 0.0], [2.0, 1.0]]),
        feature_acts=torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.5], [1.0, 1.0, 1.0], [0.0] * 3]),
        hidden_pre=torch.zeros(4, 3),
        loss=torch.tensor(1.25),
        losses={"mse_loss": torch.tensor(1.0), "l1_loss": 0.2},
    )
    log_dict = trainer._build_train_step_log_dict(output=output, n_training_tokens=96)
    assert log_dict == pytest.approx(LOG_DICT_56)
    assert list(log_dict) == list(LOG_DICT_56)


def test_trainer_eval_config_scaler_and_autocast_as_in_5_6_0(tmp_path: Path) -> None:
    trainer = build_trainer(build_runner_cfg(tmp_path, eval_batch_size_prompts=3, n_eval_batches=4))
    eval_config = trainer.trainer_eval_config
    assert (eval_config.batch_size_prompts, eval_config.n_eval_reconstruction_batches) == (3, 4)
    assert eval_config.n_eval_sparsity_variance_batches == 4
    assert eval_config.compute_ce_loss and eval_config.compute_l2_norms
    assert eval_config.compute_sparsity_metrics and eval_config.compute_variance_metrics
    assert not (eval_config.compute_kl or eval_config.compute_featurewise_density_statistics)
    assert not eval_config.compute_featurewise_weight_based_metrics
    assert not trainer.scaler.is_enabled()
    assert isinstance(trainer.autocast_if_enabled, contextlib.nullcontext)

    autocast_trainer = build_trainer(build_runner_cfg(tmp_path, autocast=True))
    assert autocast_trainer.scaler.is_enabled()
    assert isinstance(autocast_trainer.autocast_if_enabled, torch.autocast)


def test_train_step_with_5_6_0_arguments_updates_the_statistics(tmp_path: Path) -> None:
    trainer = build_trainer(build_runner_cfg(tmp_path, train_batch_size_tokens=4))
    trainer._reset_running_sparsity_stats()
    sae_in = torch.randn(4, 6)
    before = trainer.sae.W_enc.detach().clone()
    output = trainer._train_step(sae=trainer.sae, sae_in=sae_in)
    assert trainer.n_frac_active_tokens == 4
    assert torch.equal(trainer.act_freq_scores, (output.feature_acts > 0).float().sum(0))
    assert not torch.equal(trainer.sae.W_enc, before)
    trainer._reset_running_sparsity_stats()
    assert trainer.n_frac_active_tokens == 0 and trainer.act_freq_scores.sum() == 0


def test_update_sae_lens_training_version(tmp_path: Path) -> None:
    cfg = build_runner_cfg(tmp_path, sae_lens_training_version="0.1.0")
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    assert sae.cfg.sae_lens_training_version == "0.1.0"
    _update_sae_lens_training_version(sae)
    assert sae.cfg.sae_lens_training_version == str(__version__)


def test_l1_scheduler_attributes_after_steps() -> None:
    l1 = L1Scheduler(l1_warm_up_steps=4, total_steps=10, final_l1_coefficient=2.0)
    for _ in range(2):
        l1.step()
    assert (l1.current_step, l1.l1_warmup_steps, l1.total_steps) == (2, 4, 10)
    assert (l1.current_l1_coefficient, l1.final_l1_coefficient) == (1.0, 2.0)
    assert repr(l1) == "L1Scheduler(final_l1_value=2.0, l1_warmup_steps=4, total_steps=10)"
