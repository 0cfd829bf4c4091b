"""The numba kernels of the standard, gated and JumpReLU training steps equal the torch formulas they
replace, in float32 and float64, on shapes that do not divide into the kernels' row
blocks, and the training steps on CPU actually use them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.saes import cpu_kernels
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict

N, D_SAE = 37, 53
DTYPES = [torch.float32, torch.float64]


def rand(*shape: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_kernels_match_torch(dtype: torch.dtype) -> None:
    x_enc, b_enc = rand(N, D_SAE, dtype=dtype, seed=0), rand(D_SAE, dtype=dtype, seed=1)
    weights = rand(D_SAE, dtype=dtype, seed=2).abs()
    x_enc[3, 4] = float("nan")  # a NaN stays NaN, as with torch.relu
    hidden_pre = x_enc.clone()
    acts, penalty, counts = cpu_kernels.relu_forward_(hidden_pre, b_enc, weights)
    expected_pre = x_enc + b_enc
    assert counts.tolist() == (torch.relu(expected_pre) != 0).sum(1).tolist()  # NaN counts
    assert_close(hidden_pre, expected_pre, equal_nan=True, rtol=0, atol=0)
    assert_close(acts, torch.relu(expected_pre), equal_nan=True, rtol=0, atol=0)
    assert_close(penalty, torch.relu(expected_pre) @ weights, equal_nan=True)
    assert penalty[3].isnan() and not penalty[:3].isnan().any()

    acts = torch.nan_to_num(acts)
    grad_latents, grad_penalty = rand(N, D_SAE, dtype=dtype, seed=3), rand(N, dtype=dtype, seed=4)
    expected = (grad_latents + torch.outer(grad_penalty, weights)) * (acts > 0)
    buffer = grad_latents.clone()
    grad_pre, grad_bias, grad_weights = cpu_kernels.relu_backward(
        buffer, acts, grad_penalty, weights, want_weights_grad=True
    )
    assert_close(grad_weights, acts.t() @ grad_penalty)
    assert grad_pre is buffer
    assert_close(grad_pre, expected)
    assert_close(grad_bias, expected.sum(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_forward_matches_torch(dtype: torch.dtype) -> None:
    x_enc, b_gate, b_mag = (
        rand(N, D_SAE, dtype=dtype, seed=0),
        *(rand(D_SAE, dtype=dtype, seed=s) for s in (1, 2)),
    )
    scale, norms = rand(D_SAE, dtype=dtype, seed=3).exp(), rand(D_SAE, dtype=dtype, seed=4).abs()
    magnitude_pre = x_enc.clone()
    gate_acts, acts, penalty = cpu_kernels.gated_forward_(
        magnitude_pre, b_gate, b_mag, scale, norms
    )
    expected_magnitude = x_enc * scale + b_mag
    expected_gate = torch.relu(x_enc + b_gate)
    expected_acts = torch.relu(expected_magnitude) * (expected_gate > 0)
    assert_close(magnitude_pre, expected_magnitude)
    assert torch.equal(gate_acts, expected_gate)
    assert_close(acts, expected_acts)
    assert_close(penalty, expected_gate @ norms)
    # gate and magnitude disagree somewhere, so the combined mask is exercised
    assert ((expected_gate > 0) & (expected_magnitude <= 0)).any()
    assert ((expected_gate <= 0) & (expected_magnitude > 0)).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_backward_matches_torch(dtype: torch.dtype) -> None:
    grad_latents, grad_gate, x_enc = (rand(N, D_SAE, dtype=dtype, seed=s) for s in (0, 1, 2))
    gate_acts = torch.relu(rand(N, D_SAE, dtype=dtype, seed=4))
    grad_penalty = rand(N, dtype=dtype, seed=5)
    norms, scale = rand(D_SAE, dtype=dtype, seed=6).abs(), rand(D_SAE, dtype=dtype, seed=7).exp()
    b_mag = rand(D_SAE, dtype=dtype, seed=8)
    acts = torch.relu(x_enc * scale + b_mag) * (gate_acts > 0)  # consistent with x_enc

    through_gate = (grad_gate + torch.outer(grad_penalty, norms)) * (gate_acts > 0)
    through_magnitude = grad_latents * (acts > 0)
    expected = (
        through_gate + through_magnitude * scale,
        through_gate.sum(0),
        through_magnitude.sum(0),
        scale * (through_magnitude * x_enc).sum(0),
    )
    buffer = grad_gate.clone()
    result = cpu_kernels.gated_backward(
        grad_latents, buffer, acts, gate_acts, grad_penalty, norms, scale, b_mag
    )
    assert result[0] is buffer  # d x_enc is written into the caller's buffer
    for name, got, want in zip(
        ["x_enc", "b_gate", "b_mag", "r_mag"], result, expected, strict=True
    ):
        assert_close(got, want, msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jumprelu_kernels_match_torch(dtype: torch.dtype) -> None:
    x_enc, b_enc = rand(N, D_SAE, dtype=dtype, seed=0), rand(D_SAE, dtype=dtype, seed=4)
    threshold = rand(D_SAE, dtype=dtype, seed=1).abs()
    x_enc[0, :5] = threshold[:5] - b_enc[:5]
    expected_pre = x_enc + b_enc
    grad_acts, grad_l0 = rand(N, D_SAE, dtype=dtype, seed=2), rand(N, dtype=dtype, seed=3)
    bandwidth = 0.4

    hidden_pre = x_enc.clone()
    acts, l0 = cpu_kernels.jumprelu_forward_(hidden_pre, b_enc, threshold)
    fires = expected_pre > threshold
    assert torch.equal(hidden_pre, expected_pre)
    assert torch.equal(acts, expected_pre * fires)
    assert torch.equal(l0, fires.sum(-1).to(dtype))

    buffer = grad_acts.clone()
    grad_pre, grad_threshold, grad_bias = cpu_kernels.jumprelu_backward_(
        buffer, grad_l0, hidden_pre, threshold, bandwidth
    )
    assert grad_pre is buffer
    window = (((hidden_pre - threshold) / bandwidth).abs() < 0.5).to(dtype)
    assert torch.equal(grad_pre, grad_acts * fires)
    expected = -(window * (threshold * grad_acts + grad_l0[:, None])).sum(0) / bandwidth
    assert_close(grad_threshold, expected)
    assert_close(grad_bias, (grad_acts * fires).sum(0))
    assert 0 < window.mean() < 1
    assert (hidden_pre[0, :5] == threshold[:5]).any()  # a tie exists and does not fire
    assert not fires[0, :5][hidden_pre[0, :5] == threshold[:5]].any()


@pytest.mark.parametrize(
    "tensors, expected",
    [
        ([torch.zeros(3, 4), torch.zeros(4)], True),
        ([torch.zeros(3, 4, dtype=torch.float64)], True),
        ([torch.zeros(3, 4, dtype=torch.float16)], False),
        ([torch.zeros(3, 4, dtype=torch.bfloat16)], False),
        ([torch.zeros(3, 4), torch.zeros(4, dtype=torch.float64)], False),
        ([torch.zeros(4, 3).t()], False),
        ([torch.zeros(4).expand(3, 4)], False),
        ([torch.zeros(3, 4, device="meta")], False),
    ],
)
def test_serves_only_contiguous_cpu_float_tensors_of_one_dtype(
    tensors: list[torch.Tensor], expected: bool
) -> None:
    assert cpu_kernels.serves(*tensors) is expected


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    kernel: Callable[..., Any] = getattr(cpu_kernels, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(cpu_kernels, name, counted)
    return calls


KERNELS = {
    "standard": ("relu_forward_", "relu_backward"),
    "gated": ("gated_forward_", "gated_backward"),
    "jumprelu": ("jumprelu_forward_", "jumprelu_backward_"),
}


@pytest.mark.parametrize("architecture", list(KERNELS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_step_on_cpu_uses_the_kernels(
    architecture: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward, backward = (_count_calls(monkeypatch, name) for name in KERNELS[architecture])
    cfg = training_sae_cfg_dict(architecture, d_in=6, d_sae=24, dtype=dtype)
    sae = perturbed_training_sae(cfg)
    x = torch.randn(9, 6, dtype=getattr(torch, dtype))
    sae.training_forward_pass(x, current_l1_coefficient=0.5).loss.backward()
    assert (len(forward), len(backward)) == (1, 1)


def test_numba_is_loaded_only_when_a_kernel_runs() -> None:
    """Building an SAE and encoding with it (no kernel) leave numba and LLVM (~100 MB) out
    of the process; a CPU training step loads them."""
    script = (
        "import sys, torch\n"
        "from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict\n"
        "sae = perturbed_training_sae(training_sae_cfg_dict('topk', d_in=6, d_sae=24, k=3))\n"
        "sae.decode(sae.encode(torch.randn(9, 6)))\n"
        "assert 'numba' not in sys.modules, 'encoding loaded numba'\n"
        "sae.training_forward_pass(torch.randn(9, 6), 0.5).loss.backward()\n"
        "assert 'numba' in sys.modules, 'topk did not use the kernels'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=120)


def test_kernels_leave_torch_thread_count_as_set() -> None:
    """numba's OpenMP pool shares the OpenMP runtime with torch; starting it must not
    change torch's thread count (a 1-thread run would otherwise use every core)."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from sae_lens.saes import cpu_kernels\n"
        "from sae_lens.saes.numba_loops import use_torch_thread_count\n"
        "use_torch_thread_count()\n"
        "print(torch.get_num_threads())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"
