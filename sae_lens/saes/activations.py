"""Activation functions an SAE config can name (`activation_fn_str`): `relu`, `tanh-relu`
and `topk` (keep the k largest pre-activations of each token, zero the rest)."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sae_lens.saes import cpu_kernels

ACTIVATION_FN_NAMES = ("relu", "tanh-relu", "topk")


def keep_where_positive_(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Zero `grad` in place where `x <= 0` (a ReLU's backward) and return it: one fused
    pass, several times faster on CPU than `masked_fill_` with a boolean mask."""
    return torch.ops.aten.threshold_backward.grad_input(grad, x, 0.0, grad_input=grad)


class TopK(nn.Module):
    """Keep the `k` largest entries of the last dimension (after `postact_fn`), zero the rest."""

    def __init__(self, k: int, postact_fn: Callable[[torch.Tensor], torch.Tensor] = nn.ReLU()):
        super().__init__()
        if not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"TopK needs a positive int k, got {k!r}")
        self.k = int(k)
        self.postact_fn = postact_fn

    def select(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The k kept values (after `postact_fn`) and their indices, both [..., k]."""
        top = torch.topk(x, k=self.k, dim=-1, sorted=False)
        return self.postact_fn(top.values), top.indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._one_pass_applies(x):
            # one pass per row that selects and writes the dense latents: about 2x
            # torch.topk followed by the scatter on CPU (adding a zero bias leaves x as is)
            rows = x.reshape(-1, x.shape[-1])
            acts = cpu_kernels.topk_relu_(rows, rows.new_zeros(rows.shape[1]), self.k)[2]
            return acts.view(x.shape)
        values, indices = self.select(x)
        return torch.zeros_like(x).scatter(-1, indices, values)

    def _one_pass_applies(self, x: torch.Tensor) -> bool:
        """Whether `cpu_kernels.topk_relu_` computes this forward: a ReLU after the
        selection, CPU float32/64 without gradient, and finite values (torch.topk ranks a
        NaN first, so a NaN still reaches the output)."""
        return (
            isinstance(self.postact_fn, nn.ReLU)
            and not x.requires_grad
            and x.dim() >= 1
            and 0 < self.k <= x.shape[-1]
            and x.numel() > 0
            and cpu_kernels.serves(x)
            and bool(torch.isfinite(x.sum()))
        )


def _tanh_relu(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(torch.relu(x))


def is_nonnegative(activation_fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether `activation_fn` (from `get_activation_fn`) never outputs a negative value."""
    if isinstance(activation_fn, TopK):
        return isinstance(activation_fn.postact_fn, nn.ReLU)
    return isinstance(activation_fn, nn.ReLU) or activation_fn is _tanh_relu


def get_activation_fn(activation_fn: str, **kwargs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation named `activation_fn`; `topk` needs `k` (and accepts `postact_fn`)."""
    if activation_fn == "relu":
        return nn.ReLU()
    if activation_fn == "tanh-relu":
        return _tanh_relu
    if activation_fn == "topk":
        if "k" not in kwargs:
            raise ValueError("activation_fn 'topk' needs activation_fn_kwargs['k'], got none")
        return TopK(kwargs["k"], kwargs.get("postact_fn", nn.ReLU()))
    raise ValueError(
        f"unknown activation_fn {activation_fn!r}: expected one of {list(ACTIVATION_FN_NAMES)}"
    )
