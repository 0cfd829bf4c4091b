import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.training import sae_trainer, step_metrics
from sae_lens.training.metrics_log import read_metrics
from sae_lens.training.sae_trainer import SAETrainer, TrainingDivergedError
from tests.training.trainer_fakes import FakeActivationStore, RecordingSave, make_cfg, make_trainer


def _record_feature_acts(trainer: SAETrainer) -> list[torch.Tensor]:
    """Wrap the trainer's forward pass to keep each step's feature activations."""
    seen: list[torch.Tensor] = []
    forward = trainer._training_forward_pass

    def recording(**kwargs: Any) -> Any:
        output = forward(**kwargs)
        seen.append(output.feature_acts.detach().clone())
        return output

    trainer._training_forward_pass = recording
    return seen


# standard: counted from feature_acts in several row chunks per batch, or one; topk: the
# counts its forward reports from its selection
@pytest.mark.parametrize(
    ("architecture", "chunk_rows"), [("standard", 5), ("standard", 256), ("topk", 256)]
)
def test_feature_statistics_match_a_hand_computation(
    tmp_path: Path, architecture: str, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step_metrics, "_FIRING_COUNT_CHUNK_ROWS", chunk_rows)
    window, dead_window, steps = 7, 5, 20
    topk = (
        {"architecture": "topk", "activation_fn_kwargs": {"k": 4}} if architecture == "topk" else {}
    )
    cfg = make_cfg(
        tmp_path,
        training_tokens=16 * steps,
        feature_sampling_window=window,
        dead_feature_window=dead_window,
        **topk,
    )
    trainer = make_trainer(cfg)
    with torch.no_grad():
        trainer.sae.b_enc[:4] = -100.0  # these latents can never fire
    acts = _record_feature_acts(trainer)
    trainer.fit()

    fired = torch.stack([(a > 0).any(0) for a in acts])  # [steps, d_sae]
    since_fired = torch.zeros(cfg.d_sae)
    for latent in range(cfg.d_sae):
        steps_fired = fired[:, latent].nonzero().flatten()
        last = steps_fired.max().item() if len(steps_fired) else -1
        since_fired[latent] = steps - 1 - last
    # windows restart before steps 6, 13 (step + 1 divisible by 7): the last one holds 13..19
    window_start = 13
    counts = sum((a > 0).float().sum(0) for a in acts[window_start:])
    assert torch.equal(trainer.n_forward_passes_since_fired, since_fired)
    assert torch.equal(trainer.act_freq_scores, counts)
    assert trainer.n_frac_active_tokens == 16 * (steps - window_start)
    assert torch.allclose(trainer.feature_sparsity, counts / (16 * (steps - window_start)))
    assert torch.allclose(
        trainer.log_feature_sparsity, torch.log10(counts / (16 * (steps - window_start)) + 1e-10)
    )
    assert torch.equal(trainer.dead_neurons, since_fired > dead_window)
    assert trainer.dead_neurons[:4].all()


def test_sparsity_window_is_logged_before_it_restarts(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, training_tokens=16 * 8, feature_sampling_window=4, dead_feature_threshold=0.05
    )
    trainer = make_trainer(cfg)
    acts = _record_feature_acts(trainer)
    trainer.fit()
    records = [r for r in read_metrics(trainer.metrics_log.path) if "sparsity/below_1e-5" in r]
    assert [r["step"] for r in records] == [3, 7]
    # the window logged at step 3 covers steps 0..2
    frequency = sum((a > 0).float().sum(0) for a in acts[:3]) / (16 * 3)
    assert records[0]["sparsity/below_1e-5"] == (frequency < 1e-5).sum().item()
    assert records[0]["sparsity/below_dead_feature_threshold"] == (frequency < 0.05).sum().item()
    assert records[0]["metrics/mean_log10_feature_sparsity"] == pytest.approx(
        torch.log10(frequency + 1e-10).mean().item(), rel=1e-5
    )


def test_training_log_follows_the_schedules(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        lr=1e-2,
        lr_end=1e-3,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=4,
        l1_warm_up_steps=10,
        wandb_log_frequency=5,
    )
    trainer = make_trainer(cfg)
    trainer.fit()
    records = [r for r in read_metrics(trainer.metrics_log.path) if "losses/overall_loss" in r]
    assert [r["step"] for r in records] == [4, 9, 14, 19, 24, 29, 34, 39]
    main_steps = 40 - 4
    for record in records:
        step = record["step"]
        # logged after the step: the lr and l1 coefficient the next step will use
        nxt = step + 1
        cosine = (1 + math.cos(math.pi * (nxt - 4) / main_steps)) / 2
        assert record["details/current_learning_rate"] == pytest.approx(1e-3 + 9e-3 * cosine)
        assert record["details/current_l1_coefficient"] == pytest.approx(0.1 * min(nxt / 10, 1))
        assert record["details/n_training_tokens"] == 16 * nxt
        raw_l1 = record["losses/raw_l1_loss"]
        assert record["losses/l1_loss"] == pytest.approx(
            raw_l1 / record["details/current_l1_coefficient"]
        )
        assert record["losses/overall_loss"] == pytest.approx(
            record["losses/mse_loss"] + raw_l1, rel=1e-5
        )


def test_l1_loss_with_zero_coefficient_is_logged_raw_only(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 2, l1_warm_up_steps=5, wandb_log_frequency=1)
    trainer = make_trainer(cfg)
    trainer.l1_scheduler.final_l1_coefficient = 0.0  # so the coefficient stays 0
    trainer.fit()
    first = read_metrics(trainer.metrics_log.path)[0]
    assert first["losses/raw_l1_loss"] == 0.0
    assert "losses/l1_loss" not in first


def test_checkpoints_are_spread_over_training(tmp_path: Path) -> None:
    save = RecordingSave()
    trainer = make_trainer(make_cfg(tmp_path, n_checkpoints=3), save=save)
    trainer.fit()
    # thresholds range(0, 640, 213)[1:] = 213, 426, 639: each passed at the step whose
    # token count first exceeds it (16 tokens per step)
    assert save.calls == [
        ("224", 14, None),
        ("432", 27, None),
        ("640", 40, None),
        ("final_640", 40, ["final_model"]),
    ]


def test_non_finite_loss_stops_before_touching_the_weights(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, n_checkpoints=0)
    save = RecordingSave()
    store = FakeActivationStore(cfg.d_in, cfg.train_batch_size_tokens, poison_batch=5)
    poisoned = make_trainer(cfg, save=save, store=store)
    with pytest.raises(
        TrainingDivergedError,
        match=r"training diverged at step 5 \(80 tokens seen\): loss=nan \(l1_loss=inf, "
        r"mse_loss=nan\), gradient norm=nan; no checkpoint was written",
    ):
        poisoned.fit()
    assert save.calls == []
    assert poisoned.n_training_steps == 5

    clean = make_trainer(make_cfg(tmp_path, training_tokens=16 * 5))
    clean.fit()
    for name, param in clean.sae.named_parameters():
        assert torch.equal(param, dict(poisoned.sae.named_parameters())[name]), name
    assert torch.equal(clean.act_freq_scores, poisoned.act_freq_scores)


def test_evals_run_every_n_logs_and_are_flattened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    calls: list[dict[str, Any]] = []

    def fake_run_evals(sae: Any, activation_store: Any, model: Any, eval_config: Any, **kw: Any):
        calls.append({"training": sae.training, "config": eval_config, **kw})
        metrics = {
            "model_performance_preservation": {"ce_loss_score": 0.5},
            "sparsity": {"l0": 3.0},
            "token_stats": {"total_tokens_eval_reconstruction": 10},
        }
        return metrics, {}

    monkeypatch.setattr(sae_trainer, "run_evals", fake_run_evals)
    cfg = make_cfg(tmp_path, wandb_log_frequency=5, eval_every_n_wandb_logs=2, n_eval_batches=3)
    trainer = make_trainer(cfg)
    trainer.fit()
    assert len(calls) == 4
    assert not calls[0]["training"]  # evaluated in eval mode...
    assert trainer.sae.training  # ...and put back in training mode
    assert calls[0]["config"].n_eval_reconstruction_batches == 3
    assert calls[0]["config"].compute_ce_loss
    assert calls[0]["ignore_tokens"] == set()
    evals = [r for r in read_metrics(trainer.metrics_log.path) if "sparsity/l0" in r]
    assert [r["step"] for r in evals] == [9, 19, 29, 39]
    assert evals[0]["model_performance_preservation/ce_loss_score"] == 0.5
    assert not any(k.startswith("token_stats") for k in evals[0])


def test_fine_tuning_trains_only_the_chosen_parameters(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        training_tokens=16 * 10,
        finetuning_tokens=16 * 5,
        finetuning_method="decoder",
        apply_b_dec_to_input=False,
    )
    trainer = make_trainer(cfg)
    assert not trainer.sae.finetuning_scaling_factor.requires_grad  # frozen until fine-tuning
    trainer.fit()
    trainable = {n for n, p in trainer.sae.named_parameters() if p.requires_grad}
    assert trainable == {"finetuning_scaling_factor", "W_dec", "b_dec"}
    scale = trainer.sae.finetuning_scaling_factor
    assert not torch.equal(scale, torch.ones_like(scale))  # it trained during fine-tuning


def test_fine_tuning_the_scale_alone_keeps_the_normalised_decoder_fixed(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, training_tokens=16 * 10, finetuning_tokens=16 * 5, finetuning_method="scale"
    )
    assert cfg.normalize_sae_decoder
    trainer = make_trainer(cfg)
    trainer.fit()
    trainable = {n for n, p in trainer.sae.named_parameters() if p.requires_grad}
    assert trainable == {"finetuning_scaling_factor"}
    scale = trainer.sae.finetuning_scaling_factor
    assert not torch.equal(scale, torch.ones_like(scale))


def test_autocast_runs_the_sae_step_in_bfloat16(tmp_path: Path) -> None:
    trainer = make_trainer(make_cfg(tmp_path, training_tokens=16 * 3, autocast=True))
    seen = []
    forward = trainer._training_forward_pass

    def recording(**kwargs: Any) -> Any:
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(**kwargs)

    trainer._training_forward_pass = recording
    trainer.fit()
    assert seen == [True, True, True]
    assert all(torch.isfinite(p).all() for p in trainer.sae.parameters())


def test_metrics_file_is_json_lines_in_the_run_folder(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 4, wandb_log_frequency=2)
    make_trainer(cfg).fit()
    lines = (Path(cfg.checkpoint_path) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 3]


def test_compile_sae_trains_like_the_eager_trainer(tmp_path: Path) -> None:
    """`compile_sae` runs the SAE's training forward through torch.compile (inductor on
    CPU) and reaches the same weights as the eager trainer."""
    weights = []
    for compile_sae in (False, True):
        cfg = make_cfg(tmp_path / str(compile_sae), training_tokens=16 * 5, compile_sae=compile_sae)
        trainer = make_trainer(cfg)
        compiled = trainer._training_forward_pass != trainer.sae.training_forward_pass
        assert compiled == compile_sae
        trainer.fit()
        weights.append({n: p.detach().clone() for n, p in trainer.sae.named_parameters()})
    for name, eager_value in weights[0].items():
        torch.testing.assert_close(weights[1][name], eager_value, atol=1e-5, rtol=1e-4, msg=name)
    assert not torch.equal(weights[0]["W_enc"], make_trainer(make_cfg(tmp_path)).sae.W_enc)
