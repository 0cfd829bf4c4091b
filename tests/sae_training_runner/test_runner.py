import copy
import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from safetensors.torch import load_file

from sae_lens.sae import SAE
from sae_lens.sae_training_runner import InterruptedException, SAETrainingRunner
from sae_lens.training import checkpoints
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.geometric_median import compute_geometric_median
from sae_lens.training.metrics_log import read_metrics
from sae_lens.training.sae_trainer import TrainingDivergedError
from sae_lens.training.training_sae import TrainingSAE
from tests.conftest import build_tiny_tl_model
from tests.sae_training_runner.runner_helpers import (
    final_state,
    signal_at_batch,
    tiny_cfg,
    tiny_runner,
    token_dataset,
)


def test_run_saves_the_final_sae_metrics_and_plot(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, n_checkpoints=2)
    sae = tiny_runner(cfg).run()
    run_dir = Path(cfg.checkpoint_path)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "1920", "992", "final_1920", "metrics.jsonl", "run_config.json", "training_curves.png",
    ]  # fmt: skip
    final = run_dir / "final_1920"
    assert sorted(p.name for p in final.iterdir()) == [
        "cfg.json", "checkpoint.json", "sae_weights.safetensors", "sparsity.safetensors",
    ]  # fmt: skip
    loaded = SAE.load_from_pretrained(str(final))
    x = torch.randn(7, cfg.d_in)
    assert torch.allclose(loaded(x), sae.eval()(x), atol=1e-6)
    assert json.loads((final / "cfg.json").read_text())["training_tokens"] == cfg.training_tokens
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == list(range(4, 60, 5))
    assert json.loads((run_dir / "run_config.json").read_text())["lr"] == cfg.lr


@pytest.mark.parametrize("method", ["geometric_median", "mean", "zeros"])
def test_b_dec_starts_at_the_centre_of_the_activations(tmp_path: Path, method: str) -> None:
    from sae_lens.training.activations_store import ActivationsStore
    from tests.conftest import build_tiny_tl_model

    cfg = tiny_cfg(tmp_path, b_dec_init_method=method)
    runner = tiny_runner(cfg)
    twin = ActivationsStore.from_config(build_tiny_tl_model(), cfg, token_dataset())
    acts = twin.storage_buffer[:, 0, :]  # the same buffer the runner initialised from
    expected = {
        "geometric_median": compute_geometric_median(acts, maxiter=100).median,
        "mean": acts.mean(0),
        "zeros": torch.zeros(cfg.d_in),
    }[method]
    assert torch.allclose(runner.sae.b_dec, expected, atol=1e-5)


def test_norm_scaling_factor_is_folded_into_the_final_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    fold = TrainingSAE.fold_activation_norm_scaling_factor

    def recording_fold(self: TrainingSAE, factor: float) -> None:
        seen["before"], seen["factor"] = copy.deepcopy(self), factor
        fold(self, factor)

    monkeypatch.setattr(TrainingSAE, "fold_activation_norm_scaling_factor", recording_fold)
    cfg = tiny_cfg(tmp_path, normalize_activations="expected_average_only_in")
    runner = tiny_runner(cfg)
    factor = runner.activations_store.estimated_norm_scaling_factor  # estimated before b_dec init
    assert factor is not None and factor > 0
    runner.run()
    assert seen["factor"] == factor
    final = SAE.load_from_pretrained(str(next(Path(cfg.checkpoint_path).glob("final_*"))))
    x = torch.randn(9, cfg.d_in) * 3  # raw, unscaled activations
    expected = seen["before"].eval()(x * factor) / factor
    assert torch.allclose(final(x), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("stop_at_batch", "overrides"),
    [
        (3, {}),
        (23, {"noise_scale": 0.2, "eval_every_n_wandb_logs": 2}),
        (41, {"normalize_activations": "expected_average_only_in", "n_checkpoints": 2}),
    ],
)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at_batch: int, overrides: dict
) -> None:
    reference = tiny_cfg(tmp_path / "a", **overrides)
    tiny_runner(reference).run()

    cfg = tiny_cfg(tmp_path / "b", **overrides)
    handler_before = signal.getsignal(signal.SIGINT)
    with signal_at_batch(monkeypatch, stop_at_batch):
        with pytest.raises(InterruptedException, match="received SIGINT") as info:
            tiny_runner(cfg).run()
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert info.value.checkpoint == str(Path(cfg.checkpoint_path) / str(32 * stop_at_batch))
    assert not list(Path(cfg.checkpoint_path).glob("final_*"))

    resume_cfg = tiny_cfg(tmp_path / "b", resume=True, **overrides)
    resume_cfg.checkpoint_path = str(tmp_path / "b" / "runs")  # the parent: the run is found
    tiny_runner(resume_cfg).run()
    assert resume_cfg.checkpoint_path == cfg.checkpoint_path

    expected, actual = final_state(reference.checkpoint_path), final_state(cfg.checkpoint_path)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    metrics = read_metrics(Path(cfg.checkpoint_path) / "metrics.jsonl")
    assert metrics == read_metrics(Path(reference.checkpoint_path) / "metrics.jsonl")


def test_second_signal_stops_at_once_without_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg(tmp_path, n_checkpoints=3)  # first checkpoint after 640 tokens (batch 21)
    with signal_at_batch(monkeypatch, 25, signals=(signal.SIGTERM, signal.SIGINT)):
        with pytest.raises(InterruptedException, match="middle of a step") as info:
            tiny_runner(cfg).run()
    assert info.value.checkpoint is None
    run_dir = Path(cfg.checkpoint_path)
    assert [i.path.name for i in checkpoints.list_checkpoints(run_dir, kind=None)] == ["672"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens.training.activations_store import ActivationsStore

    served = 0
    next_batch = ActivationsStore.next_batch

    def poisoned(self: ActivationsStore) -> torch.Tensor:
        nonlocal served
        served += 1
        batch = next_batch(self)
        return batch * float("nan") if served == 30 else batch

    monkeypatch.setattr(ActivationsStore, "next_batch", poisoned)
    cfg = tiny_cfg(tmp_path, n_checkpoints=3)
    with pytest.raises(TrainingDivergedError, match="training diverged at step 29 .*mse_loss=nan"):
        tiny_runner(cfg).run()
    run_dir = Path(cfg.checkpoint_path)
    assert [i.path.name for i in checkpoints.list_checkpoints(run_dir, kind=None)] == ["672"]
    assert (run_dir / "training_curves.png").is_file()  # curves up to the failure


def test_resuming_a_finished_run_returns_its_final_sae(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    trained = tiny_runner(cfg).run()
    resumed = tiny_runner(tiny_cfg(tmp_path, resume=True, checkpoint_path=cfg.checkpoint_path))
    sae = resumed.run()
    for name, param in trained.state_dict().items():
        assert torch.equal(param, sae.state_dict()[name]), name


def test_resume_errors_come_before_the_model_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sae_lens.load_model

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(sae_lens.load_model, "load_model", no_model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint was found in .*empty"):
        SAETrainingRunner(tiny_cfg(tmp_path, resume=True, checkpoint_path=str(tmp_path / "empty")))

    cfg = tiny_cfg(tmp_path, n_checkpoints=1, training_tokens=32 * 10)
    with signal_at_batch(monkeypatch, 2), pytest.raises(InterruptedException):
        tiny_runner(cfg).run()
    changed = tiny_cfg(tmp_path, resume=True, checkpoint_path=cfg.checkpoint_path, d_sae=64,
                       training_tokens=32 * 10)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"cannot resume: .* in \['d_sae'\] \(d_sae: checkpoint 32, now 64\)"
    ):
        SAETrainingRunner(changed)


def test_a_verbose_run_says_what_it_trains_where_and_from_which_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_cfg(tmp_path, verbose=True)
    run_dir = Path(cfg.checkpoint_path).resolve()
    with signal_at_batch(monkeypatch, 30):
        with pytest.raises(InterruptedException):
            tiny_runner(cfg).run()
    err = capsys.readouterr().err
    assert (
        "training a standard SAE (d_in=16, d_sae=32) on tiny-test-model "
        f"blocks.1.hook_resid_pre: 60 steps of 32 tokens; run folder {run_dir}"
    ) in err

    tiny_runner(tiny_cfg(tmp_path, resume=True, verbose=True, checkpoint_path=str(run_dir))).run()
    assert "resuming at step 30: standard SAE (d_in=16, d_sae=32)" in capsys.readouterr().err

    tiny_runner(tiny_cfg(tmp_path, resume=True, verbose=True, checkpoint_path=str(run_dir))).run()
    assert f"run {run_dir} already finished" in capsys.readouterr().err

    tiny_runner(tiny_cfg(tmp_path / "quiet")).run()  # verbose=False: nothing said
    assert capsys.readouterr().err == ""


def test_compile_llm_compiles_the_activation_pass_or_is_refused_before_training(
    tmp_path: Path,
) -> None:
    from sae_lens.fused_forward import FusedHookReader

    runner = tiny_runner(tiny_cfg(tmp_path, compile_llm=True))
    reader = runner.activations_store._fused_reader
    assert isinstance(reader, FusedHookReader)
    assert reader._forward != reader._fused_pass  # the compiled pass serves activations

    unserved = build_tiny_tl_model(use_attn_result=True)
    with pytest.raises(ValueError, match="compile_llm needs the fused forward pass"):
        SAETrainingRunner(
            tiny_cfg(tmp_path, compile_llm=True),
            override_model=unserved,
            override_dataset=token_dataset(),
        )


def test_evaluation_frequency_does_not_change_the_trained_weights(tmp_path: Path) -> None:
    # Periodic evaluation reads a stream of its own: evaluating every 10 steps or never
    # trains on exactly the same batches.
    never = tiny_runner(tiny_cfg(tmp_path / "never")).run()
    runner = tiny_runner(tiny_cfg(tmp_path / "often", eval_every_n_wandb_logs=2))
    assert runner.eval_activations_store is not runner.activations_store
    often = runner.run()
    for name, param in never.state_dict().items():
        assert torch.equal(param, often.state_dict()[name]), name
    rows = read_metrics(Path(runner.cfg.checkpoint_path) / "metrics.jsonl")
    evaluated = [r for r in rows if "reconstruction_quality/explained_variance" in r]
    assert len(evaluated) == 6  # after steps 10, 20, ..., 60


def test_evaluation_reads_the_held_out_split_where_the_dataset_has_one(tmp_path: Path) -> None:
    train = token_dataset(400, seed=0)
    test = token_dataset(50, seed=1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "data"))
    cfg = tiny_cfg(tmp_path, dataset_path=str(tmp_path / "data"), eval_every_n_wandb_logs=2)
    runner = SAETrainingRunner(cfg, override_model=build_tiny_tl_model())
    held_out = runner.eval_activations_store.get_batch_tokens().tolist()
    trained_on = runner.activations_store.get_batch_tokens().tolist()
    assert all(row in test["tokens"] for row in held_out)
    assert all(row in train["tokens"] and row not in test["tokens"] for row in trained_on)


def test_metrics_have_one_row_per_step_the_last_step_and_the_final_evaluation(
    tmp_path: Path,
) -> None:
    cfg = tiny_cfg(tmp_path, wandb_log_frequency=7, eval_every_n_wandb_logs=1)
    tiny_runner(cfg).run()
    rows = read_metrics(Path(cfg.checkpoint_path) / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == [*range(6, 60, 7), 59]  # every 7th step, then the last one
    evaluated = [r["step"] for r in rows if "reconstruction_quality/explained_variance" in r]
    assert evaluated == steps  # evaluations share their step's row; the final one too
    assert all("losses/overall_loss" in r for r in rows)


def test_the_final_sparsity_file_describes_the_final_sae(tmp_path: Path) -> None:
    # A standard SAE fires densely early on; the saved frequencies must be the final
    # SAE's (its L0 on fresh activations), not an average over the whole run.
    cfg = tiny_cfg(tmp_path, l1_coefficient=3.0, n_eval_batches=20)
    runner = tiny_runner(cfg)
    sae = runner.run()
    folder = checkpoints.final_sae_folder(cfg.checkpoint_path)
    saved = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    saved_l0 = (10**saved).sum().item()
    fresh = ActivationsStore.from_config(runner.model, cfg, override_dataset=token_dataset(seed=5))
    with torch.no_grad():
        acts = torch.cat([fresh.next_batch()[:, 0] for _ in range(20)])
        final_l0 = (sae.eval().encode(acts) > 0).float().sum(-1).mean().item()
        first_l0 = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict()).encode(acts) > 0
    assert first_l0.float().sum(-1).mean().item() > 2 * final_l0  # the run did sparsify
    assert saved_l0 == pytest.approx(final_l0, rel=0.2)


def test_without_an_evaluation_stream_the_final_sparsity_reads_the_unserved_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # too short to evaluate: the activations left in the shuffle buffer (never trained on)
    # give the final firing frequencies, and no model forward runs for them
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = tiny_cfg(tmp_path, n_eval_batches=3)
    runner = tiny_runner(cfg)
    assert runner.eval_activations_store is None
    seen: dict[str, Any] = {}
    finish = SAETrainer.finish_training

    def finish_and_watch(trainer: SAETrainer) -> TrainingSAE:
        store = trainer.activations_store
        seen["rows"] = store.unserved_rows(3 * cfg.train_batch_size_tokens)[:, 0].clone()
        forwards = []
        monkeypatch.setattr(store, "_next_activation_batch", lambda *a: forwards.append(a))
        result = finish(trainer)
        seen["forwards"] = len(forwards)
        return result

    monkeypatch.setattr(SAETrainer, "finish_training", finish_and_watch)
    sae = runner.run()
    assert seen["forwards"] == 0
    assert seen["rows"].shape[0] == 3 * cfg.train_batch_size_tokens  # the buffer had enough
    with torch.no_grad():
        expected = (sae.eval().encode(seen["rows"]) > 0).float().mean(0)
    folder = checkpoints.final_sae_folder(cfg.checkpoint_path)
    saved = load_file(str(folder / "sparsity.safetensors"))["sparsity"]
    torch.testing.assert_close(saved, torch.log10(expected + 1e-10))


def test_a_signal_during_an_evaluation_stops_the_run_without_finishing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from sae_lens.training import sae_trainer

    def slow_evaluation(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)  # an evaluation that would take a minute
        raise AssertionError("the evaluation was not interrupted")

    monkeypatch.setattr(sae_trainer, "run_evals", slow_evaluation)
    cfg = tiny_cfg(tmp_path, eval_every_n_wandb_logs=2)  # first evaluation at step 9
    started = time.monotonic()
    with pytest.raises(InterruptedException, match="stopped after step 9") as info:
        tiny_runner(cfg).run()
    assert time.monotonic() - started < 30
    assert info.value.checkpoint == str(Path(cfg.checkpoint_path) / "320")
    rows = read_metrics(Path(cfg.checkpoint_path) / "metrics.jsonl")
    assert rows[-1]["step"] == 9 and not any(k.startswith("reconstruction") for k in rows[-1])


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_from_pretrained_path_continues_from_an_sae_saved_for_inference(
    tmp_path: Path, architecture: str
) -> None:
    from sae_lens.sae import SAE

    base = tiny_cfg(tmp_path / "base", architecture=architecture)
    inference_sae = SAE.from_dict(base.get_base_sae_cfg_dict())
    with torch.no_grad():
        for param in inference_sae.parameters():
            param.copy_(torch.rand_like(param) * 0.1)
    inference_sae.save_model(str(tmp_path / "published"))  # cfg.json without training fields

    cfg = tiny_cfg(
        tmp_path, architecture=architecture, from_pretrained_path=str(tmp_path / "published")
    )
    runner = tiny_runner(cfg)
    x = torch.randn(5, cfg.d_in)
    with torch.no_grad():
        torch.testing.assert_close(runner.sae.eval().encode(x), inference_sae.encode(x))
    trained = runner.run()
    assert not torch.equal(trained.W_dec, inference_sae.W_dec)

    with pytest.raises(
        ValueError, match=r"holds an SAE with d_sae=32 but the run config has d_sae=64"
    ):
        tiny_runner(
            tiny_cfg(
                tmp_path,
                architecture=architecture,
                d_sae=64,
                from_pretrained_path=str(tmp_path / "published"),
            )
        )


def test_resuming_a_finished_run_with_other_settings_or_fewer_tokens_is_refused(
    tmp_path: Path,
) -> None:
    cfg = tiny_cfg(tmp_path)
    tiny_runner(cfg).run()
    with pytest.raises(ValueError, match=r"cannot resume: the config differs .*\['lr', 'lr_end'\]"):
        tiny_runner(tiny_cfg(tmp_path, resume=True, lr=1e-2, checkpoint_path=cfg.checkpoint_path))
    with pytest.raises(ValueError, match=r"already trained 1,920 tokens.*extended, not shortened"):
        tiny_runner(
            tiny_cfg(
                tmp_path, resume=True, training_tokens=32 * 40, checkpoint_path=cfg.checkpoint_path
            )
        )


def _final_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    folder = checkpoints.final_sae_folder(run_dir)
    assert folder is not None
    return load_file(folder / "sae_weights.safetensors")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"lr_warm_up_steps": 10, "l1_warm_up_steps": 10, "n_checkpoints": 3}],
)
def test_a_finished_run_extended_to_more_tokens_equals_a_run_configured_that_long(
    tmp_path: Path, overrides: dict
) -> None:
    reference = tiny_cfg(tmp_path / "a", training_tokens=32 * 90, **overrides)
    tiny_runner(reference).run()
    cfg = tiny_cfg(tmp_path / "b", **overrides)
    tiny_runner(cfg).run()
    longer = tiny_cfg(
        tmp_path / "b",
        resume=True,
        training_tokens=32 * 90,
        checkpoint_path=cfg.checkpoint_path,
        **overrides,
    )
    tiny_runner(longer).run()

    run_dir = Path(cfg.checkpoint_path)
    finals = [i.path.name for i in checkpoints.list_checkpoints(run_dir, checkpoints.FINAL_KIND)]
    assert finals == ["final_1920", "final_2880"]  # the first run's SAE stays as it was
    expected, actual = _final_weights(reference.checkpoint_path), _final_weights(run_dir)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == [
        r["step"] for r in read_metrics(Path(reference.checkpoint_path) / "metrics.jsonl")
    ]
    # resuming at the new length now returns the new final SAE
    again = tiny_runner(longer).run()
    assert torch.equal(again.W_enc.detach(), actual["W_enc"])


def test_an_extended_run_follows_the_schedule_of_its_new_length(tmp_path: Path) -> None:
    # the first run decays its lr over its last 20 steps; extended to 90 steps, it follows
    # the 90-step schedule from step 60 on: back at the peak lr, decaying over 70..89
    settings: dict[str, Any] = dict(lr_decay_steps=20, l1_warm_up_steps=75, wandb_log_frequency=1)
    reference = tiny_cfg(tmp_path / "a", training_tokens=32 * 90, **settings)
    tiny_runner(reference).run()
    cfg = tiny_cfg(tmp_path / "b", **settings)
    tiny_runner(cfg).run()
    longer = tiny_cfg(
        tmp_path / "b",
        resume=True,
        training_tokens=32 * 90,
        checkpoint_path=cfg.checkpoint_path,
        **settings,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # fast-forwarding the schedule is silent
        warnings.filterwarnings("ignore", message="dead_feature_window")
        tiny_runner(longer).run()

    def schedules(run_dir: str) -> dict[int, tuple[float, float]]:
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        keys = ("details/current_learning_rate", "details/current_l1_coefficient")
        return {r["step"]: tuple(r[k] for k in keys) for r in rows}

    extended, straight = schedules(cfg.checkpoint_path), schedules(reference.checkpoint_path)
    assert extended[55][0] < cfg.lr  # the first run's own decay
    assert extended[60][0] == cfg.lr
    assert all(extended[step] == straight[step] for step in range(60, 90))


def test_a_run_without_its_end_state_cannot_be_extended(tmp_path: Path) -> None:
    import shutil

    cfg = tiny_cfg(tmp_path)
    tiny_runner(cfg).run()
    shutil.rmtree(Path(cfg.checkpoint_path) / "1920")  # as runs written before end states
    with pytest.raises(ValueError, match=r"cannot extend run .* from_pretrained_path="):
        tiny_runner(
            tiny_cfg(
                tmp_path, resume=True, training_tokens=32 * 90, checkpoint_path=cfg.checkpoint_path
            )
        )


def test_an_interrupted_run_resumes_to_a_new_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tiny_cfg(tmp_path / "a", training_tokens=32 * 90)
    tiny_runner(reference).run()
    cfg = tiny_cfg(tmp_path / "b")
    with signal_at_batch(monkeypatch, 30):
        with pytest.raises(InterruptedException):
            tiny_runner(cfg).run()
    resumed = tiny_cfg(
        tmp_path / "b", resume=True, training_tokens=32 * 90, checkpoint_path=cfg.checkpoint_path
    )
    tiny_runner(resumed).run()
    expected, actual = (
        _final_weights(reference.checkpoint_path),
        _final_weights(cfg.checkpoint_path),
    )
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_a_run_of_no_training_step_is_refused_before_the_model_is_loaded(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, training_tokens=16)  # less than one batch of 32 tokens
    with pytest.raises(ValueError, match=r"= 16 is less than one step .* = 32: nothing would be"):
        SAETrainingRunner(cfg)  # no override model: it would load "tiny-test-model" and fail
    assert not Path(cfg.checkpoint_path).exists()
