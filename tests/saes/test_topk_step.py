"""`topk_sae_forward`, the TopK SAE's whole training step as one autograd function, and its
CPU kernels (`cpu_kernels.topk_relu_`, `cpu_kernels.topk_backward`): values and gradients
must be those of the dense torch formulas `relu(topk(x @ W_enc + b_enc)) @ W_dec`, on the
numba kernels and on the torch path other devices run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.testing import assert_close

from sae_lens.saes import cpu_kernels, topk_step
from sae_lens.saes.topk_step import topk_sae_forward
from tests.saes.step_checks import assert_step_matches

# odd sizes: d_sae not a multiple of the kernels' lane count, k not a power of two
SHAPES = [(37, 13, 101, 7), (8, 5, 300, 1), (6, 3, 9, 9), (33, 17, 515, 32)]


@pytest.fixture(params=["numba", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs on the CPU kernels and on the torch ops (forced)."""
    if request.param == "torch":
        monkeypatch.setattr(topk_step.cpu_kernels, "serves", lambda *tensors: False)
    yield request.param


def _leaves(n: int, d: int, m: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    W_enc = torch.randn(d, m, generator=g, dtype=dtype)
    b_enc = torch.randn(m, generator=g, dtype=dtype) - 1.0  # some kept values below 0
    W_dec = torch.randn(m, d + 2, generator=g, dtype=dtype)  # d_out != d_in
    return [t.requires_grad_() for t in (x, W_enc, b_enc, W_dec)]


def _reference(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden_pre = x @ W_enc + b_enc
    top = hidden_pre.topk(k, dim=-1)
    acts = torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values.relu())
    return acts @ W_dec, acts, hidden_pre


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d", "m", "k"), SHAPES)
@pytest.mark.parametrize("used", [(1, 0, 0), (1, 1, 0), (1, 1, 1), (0, 1, 0), (0, 0, 1)])
def test_values_and_gradients_match_the_dense_formulas(
    backend: str,
    dtype: torch.dtype,
    n: int,
    d: int,
    m: int,
    k: int,
    used: tuple[int, int, int],
) -> None:
    """Outputs, and the gradients of x, W_enc, b_enc and W_dec for a loss on any subset of
    (latent_sum, feature_acts, hidden_pre): hidden_pre's gradient takes the dense path."""
    leaves = _leaves(n, d, m, dtype, seed=n + m)
    ours = topk_sae_forward(*leaves, k)
    ref = _reference(*leaves, k)
    assert_step_matches(ours, ref, leaves, used, seed=7)


@pytest.mark.parametrize(("n", "m", "k"), [(50, 4096, 32), (7, 257, 5), (4, 64, 64)])
def test_topk_relu_kernel_keeps_each_rows_k_largest(n: int, m: int, k: int) -> None:
    g = torch.Generator().manual_seed(m)
    x_enc, b_enc = torch.randn(n, m, generator=g), torch.randn(m, generator=g)
    hidden_pre = x_enc + b_enc
    values, indices, acts = cpu_kernels.topk_relu_(x_enc, b_enc, k)
    assert_close(x_enc, hidden_pre, rtol=0, atol=0)  # the bias added in place
    top = hidden_pre.topk(k, dim=-1)
    assert_close(values.sort(-1).values, top.values.relu().sort(-1).values)
    assert_close(indices.sort(-1).values, top.indices.sort(-1).values)
    expected = torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values.relu())
    assert_close(acts, expected)


def test_topk_backward_kernel_matches_the_torch_ops() -> None:
    n, d, m, k = 29, 11, 203, 6
    x, W_enc, b_enc, W_dec = (t.detach() for t in _leaves(n, d, m, torch.float64, seed=3))
    values, indices, _ = cpu_kernels.topk_relu_(x @ W_enc, b_enc, k)
    g = torch.Generator().manual_seed(4)
    grad_sum = torch.randn(n, d + 2, generator=g, dtype=torch.float64)
    grad_values = torch.randn(n, k, generator=g, dtype=torch.float64)
    ours = cpu_kernels.topk_backward(
        grad_sum, x, W_enc, W_dec, values, indices, grad_values.clone()
    )
    ref = topk_step._torch_backward(grad_sum, x, W_enc, W_dec, values, indices, grad_values)
    for a, b in zip(ours, ref, strict=True):
        assert_close(a, b)


def test_a_nan_input_reaches_the_output() -> None:
    """NaN pre-activations go through torch.topk (which ranks NaN first), as the
    step-by-step path does, so that the loss turns NaN instead of hiding it."""
    x, W_enc, b_enc, W_dec = (t.detach() for t in _leaves(5, 4, 40, torch.float32, seed=1))
    x[2, 1] = float("nan")
    latent_sum, acts, _ = topk_sae_forward(x, W_enc, b_enc, W_dec, 3)
    assert latent_sum[2].isnan().all() and acts[2].isnan().any()
    assert not latent_sum[[0, 1, 3, 4]].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(50, 300), (3, 7, 65), (4, 9)])
def test_the_topk_activation_is_the_same_on_its_one_pass_kernel(
    dtype: torch.dtype, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TopK` (inference: encode, evals) on CPU runs `topk_relu_`; the output is exactly
    that of torch.topk, a ReLU and the scatter into zeros."""
    from sae_lens.saes import activations
    from sae_lens.saes.activations import TopK

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    x[..., 0] = -5.0  # a row may keep values the ReLU zeroes
    top = x.topk(9, dim=-1)
    expected = torch.zeros_like(x).scatter(-1, top.indices, top.values.relu())
    calls = []
    kernel = activations.cpu_kernels.topk_relu_
    monkeypatch.setattr(
        activations.cpu_kernels, "topk_relu_", lambda *a: calls.append(1) or kernel(*a)
    )
    assert_close(TopK(9)(x.clone()), expected, rtol=0, atol=0)
    assert calls == [1]
    # with a gradient, a NaN, or another activation after the selection: torch ops
    x_grad = x.clone().requires_grad_()
    TopK(9)(x_grad).sum().backward()
    assert_close(x_grad.grad, (expected != 0).to(dtype), rtol=0, atol=0)
    x_nan = x.clone()
    x_nan.view(-1, shape[-1])[1, 2] = float("nan")
    assert TopK(9)(x_nan).view(-1, shape[-1])[1].isnan().any()
    assert_close(
        TopK(9, torch.nn.Identity())(x), torch.zeros_like(x).scatter(-1, top.indices, top.values)
    )
    assert calls == [1]
