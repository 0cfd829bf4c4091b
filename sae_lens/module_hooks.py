"""Whether PyTorch would run any hook when a module is called: the module's own forward
and backward hooks, or a global module hook (`torch.nn.modules.module.register_module_*`).
Fast paths that skip a module's call (fused SAE steps, the fused model forward) are taken
only when none would run. Reads torch's hook registries, which have no public accessor."""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as torch_module


def global_hooks_active() -> bool:
    """Whether a global forward or backward module hook is registered."""
    return bool(
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks
        or torch_module._global_backward_pre_hooks
    )


def own_hooks_active(module: nn.Module) -> bool:
    """Whether `module` itself has a forward, forward-pre, backward or backward-pre hook."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def hooks_active(*modules: nn.Module) -> bool:
    """Whether any hook would run when one of `modules` is called."""
    return global_hooks_active() or any(own_hooks_active(m) for m in modules)
