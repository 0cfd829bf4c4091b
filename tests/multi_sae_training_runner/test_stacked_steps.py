"""Stacked steps (`stack_saes`): SAEs of one shape step together in batched matmuls, and
end with the weights of the SAEs stepped one after another, up to float rounding."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens import multi_sae_training_runner as runner_module
from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, parse_cli_config
from sae_lens.sae import SAE
from sae_lens.saes.stacked import stacked_topk_encode
from sae_lens.training.sae_trainer import InterruptedException, TrainingDivergedError
from sae_lens.training.stacked_step import (
    stack_groups,
    stacked_forward_and_backward,
    stacking_on,
)
from sae_lens.training.training_sae import TrainingSAE
from tests.multi_sae_training_runner.test_multi_sae_training_runner import (
    assert_same_weights,
    multi_cfg,
    topk_sweep,
)
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict
from tests.sae_training_runner.runner_helpers import signal_at_batch

# Two TopK SAEs that stack (one k, one width: a learning-rate sweep), one that cannot (other
# k), and two standard SAEs on two hooks of one width that stack.
SWEEP: dict[str, dict[str, Any]] = {
    "k8_a": topk_sweep((8,), 128)["k8"],
    "k8_b": {**topk_sweep((8,), 128)["k8"], "lr": 1e-3},
    "k16": topk_sweep((16,), 128)["k16"],
    "mlp1": {
        "hook_name": "blocks.1.hook_mlp_out",
        "architecture": "standard",
        "l1_coefficient": 2.0,
        "d_sae": 64,
    },
    "resid1": {
        "hook_name": "blocks.1.hook_resid_post",
        "architecture": "standard",
        "l1_coefficient": 1.0,
        "d_sae": 64,
    },
}


def record_stacks(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names of the SAEs of each stacked step the multi runner takes from now on."""
    stacks: list[list[str]] = []

    def recording(trainers: list[Any], batches: list[torch.Tensor]) -> Any:
        stacks.append([t.cfg.checkpoint_path.rsplit("/", 1)[-1] for t in trainers])
        return stacked_forward_and_backward(trainers, batches)

    monkeypatch.setattr(runner_module, "stacked_forward_and_backward", recording)
    return stacks


def saes_of(architecture: str, n: int, dtype: torch.dtype, **overrides: Any) -> list[TrainingSAE]:
    cfg = training_sae_cfg_dict(architecture, d_in=16, d_sae=48, k=5, **overrides)
    saes = []
    for i in range(n):
        sae = perturbed_training_sae(cfg).to(dtype)
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.1 * i)  # each SAE its own weights
        saes.append(sae)
    return saes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "architecture, overrides, dead",
    [
        ("topk", {}, False),
        ("topk", {"apply_b_dec_to_input": True}, False),
        ("topk", {}, True),  # AuxK: hidden_pre gets a dense gradient
        ("standard", {}, False),
        (
            "standard",
            {"apply_b_dec_to_input": True, "scale_sparsity_penalty_by_decoder_norm": True},
            False,
        ),
    ],
)
def test_a_stacked_forward_gives_each_saes_own_loss_and_gradients(
    architecture: str, overrides: dict[str, Any], dead: bool, dtype: torch.dtype
) -> None:
    alone = saes_of(architecture, 3, dtype, **overrides)
    together = saes_of(architecture, 3, dtype, **overrides)
    torch.manual_seed(1)
    batches = [torch.randn(40, 16, dtype=dtype) for _ in alone]
    masks = [torch.rand(48) < 0.5 if dead else None for _ in alone]
    expected = []
    for sae, batch, mask in zip(alone, batches, masks, strict=True):
        output = sae.training_forward_pass(batch, 0.5, mask)
        output.loss.backward()
        expected.append(output)
    assert together[0].architecture.stack_key(together[0], batches[0]) is not None
    xs = [sae.process_sae_in(batch) for sae, batch in zip(together, batches, strict=True)]
    forwards = together[0].architecture.stacked_training_forward(together, torch.stack(xs))
    outputs = [
        sae.training_step_output(batch, x, forward, 0.5, mask)
        for sae, batch, x, forward, mask in zip(together, batches, xs, forwards, masks, strict=True)
    ]
    torch.stack([o.loss for o in outputs]).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b, sae_a, sae_b in zip(expected, outputs, alone, together, strict=True):
        torch.testing.assert_close(b.loss, a.loss, **tol)
        assert b.losses.keys() == a.losses.keys()
        for key in a.losses:
            torch.testing.assert_close(b.losses[key], a.losses[key], **tol)
        torch.testing.assert_close(b.feature_acts, a.feature_acts, **tol)
        torch.testing.assert_close(b.sae_out, a.sae_out, **tol)
        if architecture == "topk":
            assert torch.equal(b.firing_counts, a.firing_counts)
        for (name, p), q in zip(sae_a.named_parameters(), sae_b.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, **tol, msg=f"gradient of {name}")


def test_the_stacked_topk_encoder_backward_matches_autograd() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 20, 8, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 8, 30, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 30, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 20, 4, dtype=torch.float64)
    for dense in (False, True):
        values, indices, hidden_pre = stacked_topk_encode(x, W, b, 4)
        loss = (values * weights).sum() + (hidden_pre.pow(2).sum() if dense else 0)
        grads = torch.autograd.grad(loss, (x, W, b))
        reference_pre = torch.baddbmm(b.unsqueeze(1), x, W)
        reference_values = reference_pre.gather(-1, indices).relu()
        reference = (reference_values * weights).sum()
        reference = reference + (reference_pre.pow(2).sum() if dense else 0)
        for got, want in zip(grads, torch.autograd.grad(reference, (x, W, b)), strict=True):
            torch.testing.assert_close(got, want)


def test_only_saes_of_one_shape_and_options_are_grouped(tmp_path: Path) -> None:
    saes = {
        **SWEEP,
        "accumulated": {**SWEEP["mlp1"], "gradient_accumulation_steps": 2},
        "l2": {**SWEEP["mlp1"], "lp_norm": 2.0},  # the stacked forward is the L1 penalty's
        "wide": {**SWEEP["mlp1"], "d_sae": 128},
    }
    runner = MultiSAETrainingRunner(multi_cfg(tmp_path, saes, training_tokens=256))
    trainers = {name: runner._trainer(name) for name in runner.sae_cfgs}
    batches = {name: torch.randn(256, 128) for name in trainers}
    groups = stack_groups(trainers, batches)
    assert groups == [
        ["k8_a", "k8_b"],
        ["k16"],
        ["mlp1", "resid1"],
        ["accumulated"],
        ["l2"],
        ["wide"],
    ]


def test_stack_saes_auto_stacks_on_cuda_only() -> None:
    assert not stacking_on("auto", "cpu")
    assert stacking_on("auto", "cuda:0")
    assert stacking_on(True, "cpu") and not stacking_on(False, "cuda")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_stack_saes_value_is_named(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match='stack_saes must be "auto", true or false'):
        multi_cfg(tmp_path, SWEEP, stack_saes=value)


def test_stack_saes_from_the_command_line_and_the_run_config(tmp_path: Path) -> None:
    saes = '{"a": {"hook_name": "blocks.0.hook_resid_post", "d_sae": 32}}'
    base = ["--saes", saes, "--checkpoint_path", str(tmp_path)]
    assert parse_cli_config(base).stack_saes == "auto"
    assert parse_cli_config([*base, "--stack_saes", "true"]).stack_saes is True
    assert parse_cli_config([*base, "--stack_saes", "false"]).stack_saes is False
    cfg = parse_cli_config([*base, "--stack_saes", "true"])
    assert MultiSAETrainingRunnerConfig.from_dict(cfg.to_dict()).stack_saes is True
    assert "stack_saes" not in parse_cli_config(base).to_dict()


def test_a_stacked_run_ends_with_the_weights_of_saes_stepped_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one = MultiSAETrainingRunner(multi_cfg(tmp_path / "a", SWEEP, stack_saes=False)).run()
    stacks = record_stacks(monkeypatch)
    together = MultiSAETrainingRunner(multi_cfg(tmp_path / "b", SWEEP, stack_saes=True)).run()
    assert stacks == [["k8_a", "k8_b"], ["mlp1", "resid1"]] * 8  # 8 steps
    assert list(together) == list(SWEEP)
    for name, sae in one_by_one.items():
        if name == "k16":  # alone in its group: the same step as without stacking
            assert_same_weights(together[name], sae)
            continue
        for key, value in sae.state_dict().items():
            stacked = together[name].state_dict()[key]
            torch.testing.assert_close(stacked, value, rtol=1e-4, atol=1e-5, msg=f"{name} {key}")
    # the folders hold the SAEs returned
    (final,) = (tmp_path / "b" / "multi").glob("*/k8_b/final_2048")
    assert_same_weights(SAE.load_from_pretrained(str(final)), together["k8_b"])


def test_an_interrupted_stacked_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saes = {name: SWEEP[name] for name in ("k8_a", "k8_b", "mlp1", "resid1")}
    whole = MultiSAETrainingRunner(multi_cfg(tmp_path / "whole", saes, stack_saes=True)).run()
    cfg = multi_cfg(tmp_path / "cut", saes, stack_saes=True)
    # 4 stores take a batch per step: the 18th batch served is step 4's
    with signal_at_batch(monkeypatch, 18, signals=(signal.SIGTERM,)):
        with pytest.raises(InterruptedException, match="saved a checkpoint"):
            MultiSAETrainingRunner(cfg).run()
    data = {**cfg.to_dict(), "resume": True}
    resumed = MultiSAETrainingRunner(MultiSAETrainingRunnerConfig.from_dict(data)).run()
    for name in whole:
        assert_same_weights(resumed[name], whole[name])


def test_saes_stack_by_the_k_of_each_step_under_k_decay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "decay" keeps 16 latents at step 0, then 14, 12, 10, and 8 from step 4: it steps with
    # "k16" at step 0 only, and with "k8" from step 4 on
    decay = {**SWEEP["k8_a"], "k_decay_steps": 4, "initial_k": 16}
    saes = {"decay": decay, "k16": SWEEP["k16"], "k8": SWEEP["k8_a"]}
    one_by_one = MultiSAETrainingRunner(multi_cfg(tmp_path / "a", saes, stack_saes=False)).run()
    stacks = record_stacks(monkeypatch)
    together = MultiSAETrainingRunner(multi_cfg(tmp_path / "b", saes, stack_saes=True)).run()
    assert stacks == [["decay", "k16"]] + [["decay", "k8"]] * 4  # steps 0, then 4..7
    for name, sae in one_by_one.items():
        for key, value in sae.state_dict().items():
            stacked = together[name].state_dict()[key]
            torch.testing.assert_close(stacked, value, rtol=1e-4, atol=1e-5, msg=f"{name} {key}")


def test_a_diverged_sae_of_a_stack_stops_the_run_naming_it(tmp_path: Path) -> None:
    saes = {name: SWEEP[name] for name in ("k8_a", "k8_b")}
    runner = MultiSAETrainingRunner(multi_cfg(tmp_path, saes, stack_saes=True))
    with torch.no_grad():
        runner.saes["k8_b"].W_enc[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"^SAE 'k8_b': training diverged at step 0"):
        runner.run()
    # the NaN stays in its SAE: the stack mate stepped on a finite gradient
    assert torch.isfinite(runner.saes["k8_a"].W_enc).all()
