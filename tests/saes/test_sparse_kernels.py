"""`topk_encode`: the TopK encoder whose backward touches only the k selected latents must
give the values and gradients of the dense `relu(topk(x @ W_enc + b_enc))`."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from sae_lens.saes.sparse_kernels import sparse_decode, topk_encode

N, D_IN, D_SAE, K = 9, 5, 16, 4


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    W_enc = torch.randn(D_IN, D_SAE, generator=g, dtype=torch.float64)
    b_enc = torch.randn(D_SAE, generator=g, dtype=torch.float64) - 1.5  # some top-k < 0
    return x, W_enc, b_enc


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _dense_reference(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden_pre = x @ W_enc + b_enc
    top = hidden_pre.topk(K, dim=-1, sorted=False)
    return torch.relu(top.values), top.indices, hidden_pre


def test_forward_matches_dense_topk() -> None:
    x, W_enc, b_enc = _inputs()
    values, indices, hidden_pre = topk_encode(x, W_enc, b_enc, K)
    ref_values, ref_indices, ref_pre = _dense_reference(x, W_enc, b_enc)
    assert_close(hidden_pre, ref_pre)
    dense = torch.zeros(N, D_SAE, dtype=x.dtype).scatter(-1, indices, values)
    ref_dense = torch.zeros(N, D_SAE, dtype=x.dtype).scatter(-1, ref_indices, ref_values)
    assert_close(dense, ref_dense)
    assert (values >= 0).all() and (values == 0).any()  # the ReLU cut some selections


@pytest.mark.parametrize("pre_gets_gradient", [False, True])
def test_gradients_match_dense_autograd(pre_gets_gradient: bool) -> None:
    """Through the kept values only (the sparse backward), and also through hidden_pre
    (the dense fallback, as the AuxK loss uses it)."""
    inputs = _inputs(1)
    g = torch.Generator().manual_seed(2)
    grad_dense = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)
    grad_pre = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)

    def loss(values: torch.Tensor, indices: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.zeros_like(pre).scatter(-1, indices, values)
        out = (acts * grad_dense).sum()
        return out + (pre * grad_pre).sum() if pre_gets_gradient else out

    fused = _leaves(*inputs)
    loss(*topk_encode(*fused, K)).backward()
    dense = _leaves(*inputs)
    loss(*_dense_reference(*dense)).backward()
    for name, a, b in zip(("x", "W_enc", "b_enc"), fused, dense, strict=True):
        assert_close(a.grad, b.grad, msg=name)


def test_noise_is_added_before_the_selection() -> None:
    x, W_enc, b_enc = _inputs(3)
    shift = torch.zeros(D_SAE, dtype=x.dtype)
    shift[0] = 100.0  # latent 0 always wins once the "noise" is added
    values, indices, hidden_pre = topk_encode(x, W_enc, b_enc, K, lambda pre: pre + shift)
    assert (indices == 0).any(dim=-1).all()
    assert_close(hidden_pre, x @ W_enc + b_enc + shift)


def test_only_the_selected_encoder_columns_get_gradient() -> None:
    x, W_enc, b_enc = _leaves(*_inputs(4))
    values, indices, _ = topk_encode(x, W_enc, b_enc, K)
    values.sum().backward()
    untouched = torch.ones(D_SAE, dtype=torch.bool)
    untouched[indices.flatten()] = False
    assert untouched.any()
    assert (W_enc.grad[:, untouched] == 0).all() and (b_enc.grad[untouched] == 0).all()


def test_encode_then_decode_in_low_precision() -> None:
    """The sparse products also run in bfloat16 (CPU)."""
    x, W_enc, b_enc = (t.to(torch.bfloat16).requires_grad_() for t in _inputs(5))
    W_dec = torch.randn(D_SAE, D_IN, dtype=torch.bfloat16, requires_grad=True)
    values, indices, _ = topk_encode(x, W_enc, b_enc, K)
    out = sparse_decode(values, indices, W_dec)
    out.sum().backward()
    assert out.dtype == torch.bfloat16
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (x, W_enc, W_dec))
