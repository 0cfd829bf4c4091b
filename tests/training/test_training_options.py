"""The training options SAELens 5.6.0 lacked, each against a direct computation, and the
exactness of a resumed run with each."""

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training import checkpoints
from sae_lens.training.optimizers import Muon, SignSGD
from sae_lens.training.sae_trainer import InterruptedException, SAETrainer
from sae_lens.training.training_options import k_at_step, log_checkpoint_steps
from tests.training.test_checkpoints import _stop_after
from tests.training.trainer_fakes import FakeActivationStore, RecordingSave, make_cfg, make_trainer

# the tests record gradients by wrapping optimizer.step, which torch's schedulers notice
pytestmark = pytest.mark.filterwarnings(
    "ignore:Seems like `optimizer.step\\(\\)` has been overridden"
)

TOPK = {"architecture": "topk", "activation_fn_kwargs": {"k": 4}}


def _record_forward(trainer: SAETrainer, what: Any) -> list[Any]:
    """Wrap the trainer's forward pass to keep `what(trainer, kwargs)` at each call."""
    seen: list[Any] = []
    forward = trainer._training_forward_pass

    def recording(**kwargs: Any) -> Any:
        seen.append(what(trainer, kwargs))
        return forward(**kwargs)

    trainer._training_forward_pass = recording
    return seen


# --- the default is 5.6.0's ----------------------------------------------------------------
def test_default_trainer_builds_5_6_0s_optimizer_and_schedule(tmp_path: Path) -> None:
    trainer = make_trainer(make_cfg(tmp_path, lr_warm_up_steps=3))
    opt = trainer.optimizer
    assert type(opt) is torch.optim.Adam
    group = opt.param_groups[0]
    assert (group["initial_lr"], group["betas"], group["eps"]) == (3e-3, (0.0, 0.999), 1e-8)
    assert group["fused"] is True  # torch's fused Adam on CPU, as before
    assert [type(s).__name__ for s in trainer.lr_scheduler._schedulers] == [
        "LinearLR",
        "LambdaLR",
    ]
    assert trainer.cfg.max_grad_norm == 1.0  # 5.6.0 clips the gradient norm at 1


# --- k decay -------------------------------------------------------------------------------
def test_k_schedule_values() -> None:
    ks = [k_at_step(t, initial_k=100, final_k=20, decay_steps=8) for t in range(10)]
    assert ks == [100, 90, 80, 70, 60, 50, 40, 30, 20, 20]
    assert k_at_step(1, initial_k=32, final_k=4, decay_steps=3) == round(32 - 28 / 3)


def test_trainer_decays_k_per_step_and_saves_the_final_k(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 8, k_decay_steps=5, initial_k=24, **TOPK)
    trainer = make_trainer(cfg)
    ks = _record_forward(trainer, lambda t, _: t.sae.activation_fn.k)
    l0s = _record_forward(
        trainer, lambda t, kw: int((t.sae.encode(kw["sae_in"]) > 0).sum(-1).max())
    )
    trainer.fit()
    assert ks == [24, 20, 16, 12, 8, 4, 4, 4]
    assert all(l0 <= k for l0, k in zip(l0s, ks, strict=True))
    assert trainer.sae.activation_fn.k == 4


def test_k_decay_defaults_to_sparsifys_initial_k(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, training_tokens=16 * 2, k_decay_steps=10, **TOPK
    )  # 10 d_in = 80 > d_sae
    trainer = make_trainer(cfg)
    ks = _record_forward(trainer, lambda t, _: t.sae.activation_fn.k)
    trainer.fit()
    assert ks == [32, round(32 * 0.9 + 4 * 0.1)]
    assert trainer.sae.activation_fn.k == 4  # the run ended before the decay: k restored


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"k_decay_steps": 5}, "needs an architecture with a k"),
        ({**TOPK, "k_decay_steps": 5, "initial_k": 2}, "initial_k must be between"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"optimizer": "adam", "schedule_free": True}, "schedule_free"),
        ({"gradient_accumulation_steps": 3}, "divisor of train_batch_size_tokens"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"checkpoint_spacing": "cubic"}, "checkpoint_spacing"),
        ({"recipe": "6.0"}, "recipe must be one of"),
    ],
)
def test_bad_options_fail_early_naming_the_field(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_cfg(tmp_path, **overrides)


# --- clipping ------------------------------------------------------------------------------
def _gradients_at_step(trainer: SAETrainer) -> list[dict[str, torch.Tensor]]:
    """Record the gradients the optimizer sees at each step."""
    seen: list[dict[str, torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(
            {n: p.grad.clone() for n, p in trainer.sae.named_parameters() if p.grad is not None}
        )
        return step(*args, **kwargs)

    trainer.optimizer.step = recording  # type: ignore[method-assign]
    return seen


def _raw_gradients(trainer: SAETrainer, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of one step on `batch` of a copy of the trainer's SAE, unclipped."""
    sae = copy.deepcopy(trainer.sae)
    output = sae.training_forward_pass(batch, trainer.current_l1_coefficient, trainer.dead_neurons)
    output.loss.backward()
    sae.before_optimizer_step()
    return {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("max_grad_norm", [0.05, 0.0, 1e6])
def test_gradients_are_clipped_to_max_grad_norm(tmp_path: Path, max_grad_norm: float) -> None:
    trainer = make_trainer(make_cfg(tmp_path, max_grad_norm=max_grad_norm, l1_coefficient=5.0))
    seen = _gradients_at_step(trainer)
    batch = trainer.activations_store.batch(0)[:, 0, :]
    raw = _raw_gradients(trainer, batch)
    trainer._train_step(trainer.sae, batch)
    norm = torch.cat([g.flatten() for g in raw.values()]).norm()
    assert norm > 0.05  # so the smallest setting clips
    scale = min(1.0, max_grad_norm / (norm.item() + 1e-6)) if max_grad_norm > 0 else 1.0
    for name, grad in raw.items():
        torch.testing.assert_close(seen[0][name], grad * scale)


# --- gradient accumulation -----------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu", "topk"])
def test_accumulating_micro_batches_equals_one_big_batch(tmp_path: Path, architecture: str) -> None:
    extra = {"activation_fn_kwargs": {"k": 4}} if architecture == "topk" else {}
    common = dict(architecture=architecture, dtype="float64", training_tokens=16 * 3, **extra)
    whole = make_trainer(make_cfg(tmp_path, **common))
    split = make_trainer(make_cfg(tmp_path, gradient_accumulation_steps=4, **common))
    grads_whole, grads_split = _gradients_at_step(whole), _gradients_at_step(split)
    whole.fit()
    split.fit()
    for a, b in zip(grads_whole, grads_split, strict=True):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-10, atol=1e-12)
    for name, param in whole.sae.state_dict().items():
        torch.testing.assert_close(param, split.sae.state_dict()[name], rtol=1e-9, atol=1e-10)
    assert torch.equal(whole.act_freq_scores, split.act_freq_scores)
    assert torch.equal(whole.n_forward_passes_since_fired, split.n_forward_passes_since_fired)


def test_accumulated_step_output_covers_the_whole_batch(tmp_path: Path) -> None:
    trainer = make_trainer(make_cfg(tmp_path, gradient_accumulation_steps=2, dtype="float64"))
    reference = copy.deepcopy(trainer.sae)
    batch = trainer.activations_store.batch(0)[:, 0, :].double()
    output = trainer._train_step(trainer.sae, batch)
    expected = reference.training_forward_pass(batch, trainer.current_l1_coefficient)
    assert output.feature_acts.shape == (16, 32)
    torch.testing.assert_close(output.sae_out, expected.sae_out.detach())
    torch.testing.assert_close(output.losses["mse_loss"], expected.losses["mse_loss"].detach())


# --- checkpoint spacing --------------------------------------------------------------------
def test_log_spaced_checkpoint_steps() -> None:
    # ceil(1000 ** (i / 4)): 5.6 -> 6, 31.6 -> 32, 177.8 -> 178
    assert log_checkpoint_steps(1000, 4) == [6, 32, 178]
    assert log_checkpoint_steps(100, 2) == [10]
    assert log_checkpoint_steps(8, 6) == [2, 3, 4, 6]  # 1.4 and 2 both -> 2: merged


def test_trainer_writes_log_spaced_checkpoints(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 100, n_checkpoints=4, checkpoint_spacing="log")
    save = RecordingSave()
    make_trainer(cfg, save=save).fit()
    # after steps ceil(100 ** (i / 4)) = 4, 10, 32; then the end state and the final SAE
    assert [steps for _, steps, _ in save.calls] == [4, 10, 32, 100, 100]
    assert [name for name, _, _ in save.calls][:3] == ["64", "160", "512"]


def test_linear_checkpoints_are_5_6_0s(tmp_path: Path) -> None:
    save = RecordingSave()
    make_trainer(make_cfg(tmp_path, n_checkpoints=4), save=save).fit()
    assert [steps for _, steps, _ in save.calls][:3] == [11, 21, 31]  # tokens > 160, 320, 480


# --- optimizers and learning rate in the trainer --------------------------------------------
def test_trainer_builds_the_chosen_optimizer_at_the_width_scaled_lr(tmp_path: Path) -> None:
    trainer = make_trainer(
        make_cfg(tmp_path, optimizer="signsgd", schedule_free=True, scale_lr_with_width=True)
    )
    assert isinstance(trainer.optimizer, SignSGD)
    assert trainer.optimizer.param_groups[0]["schedule_free_momentum"] == 0.95
    # d_sae 32: lr * sqrt(16384 / 32)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * 512**0.5)
    muon = make_trainer(make_cfg(tmp_path, optimizer="muon")).optimizer
    assert isinstance(muon, Muon)
    assert [len(g["params"]) for g in muon.param_groups] == [2, 2]  # W_enc, W_dec | biases


def test_schedule_free_run_evaluates_and_saves_the_averaged_weights(tmp_path: Path) -> None:
    """The resumable state holds the training point y and the iterate z; the checkpoint's
    SAE folder, the evaluations and the final SAE hold the average x = (y - 0.05 z) / 0.95."""
    from safetensors.torch import load_file

    cfg = make_cfg(
        tmp_path,
        optimizer="signsgd",
        schedule_free=True,
        training_tokens=16 * 5,
        n_checkpoints=2,
    )
    trainer = make_trainer(cfg, save=SAETrainingRunner.save_checkpoint)
    encoded: list[torch.Tensor] = []  # W_enc at each call of encode (the final sparsity)
    encode = trainer.sae.encode

    def recording_encode(x: torch.Tensor) -> torch.Tensor:
        encoded.append(trainer.sae.W_enc.detach().clone())
        return encode(x)

    trainer.sae.encode = recording_encode  # type: ignore[method-assign]
    trainer.fit()
    folder = checkpoints.latest_checkpoint(cfg.checkpoint_path)
    assert folder is not None and folder.name == str(16 * 5)  # the end state
    state = checkpoints.load_training_state(folder)
    names = [n for n, _ in trainer.sae.named_parameters()]
    saved = load_file(str(folder / "sae_weights.safetensors"))
    for index, name in enumerate(names):
        y = state["sae_state_dict"][name]
        z = state["trainer"]["optimizer"]["state"][index]["z"]
        x = torch.lerp(y, z, 1 - 1 / 0.95)
        torch.testing.assert_close(saved[name], x)  # the folder: the average
        torch.testing.assert_close(getattr(trainer.sae, name).detach(), x)  # the final SAE
        assert not torch.allclose(y, x)
    assert torch.equal(encoded[-1], trainer.sae.W_enc.detach())  # final sparsity: x too


# --- resume exactness ----------------------------------------------------------------------
OPTION_SETS = {
    "signsgd": {"optimizer": "signsgd", "lr": 1e-3},
    "signsgd_schedule_free": {"optimizer": "signsgd", "schedule_free": True, "lr": 1e-3},
    "muon": {"optimizer": "muon"},
    "scaled_lr": {"scale_lr_with_width": True, "lr": 1e-4},
    "clipping": {"max_grad_norm": 0.05},
    "no_clipping": {"max_grad_norm": 0.0},
    "accumulation": {"gradient_accumulation_steps": 4},
    "k_decay": {**TOPK, "k_decay_steps": 20, "initial_k": 16},
    "log_checkpoints": {"checkpoint_spacing": "log", "n_checkpoints": 5},
    "recommended": {"recipe": "recommended", **TOPK},
}


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_resumed_run_with_each_option_equals_the_uninterrupted_one(
    tmp_path: Path, name: str
) -> None:
    cfg = make_cfg(
        tmp_path,
        lr_scheduler_name="cosineannealing",
        l1_warm_up_steps=5,
        feature_sampling_window=6,
        dead_feature_window=3,
        **{"n_checkpoints": 2, **OPTION_SETS[name]},
    )
    uninterrupted = make_trainer(cfg, seed=1)
    uninterrupted.fit()

    interrupted = make_trainer(cfg, save=SAETrainingRunner.save_checkpoint, seed=1)
    _stop_after(interrupted, 13)
    with pytest.raises(InterruptedException) as info:
        interrupted.fit()
    resumed = make_trainer(
        cfg,
        save=SAETrainingRunner.save_checkpoint,
        seed=2,
        store=FakeActivationStore(cfg.d_in, cfg.train_batch_size_tokens),
    )
    checkpoints.restore_training_state(
        resumed, checkpoints.load_training_state(info.value.checkpoint)
    )
    resumed.fit()

    for key, param in uninterrupted.sae.state_dict().items():
        assert torch.equal(param, resumed.sae.state_dict()[key]), key
    assert torch.equal(
        uninterrupted.n_forward_passes_since_fired, resumed.n_forward_passes_since_fired
    )
    assert uninterrupted.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
