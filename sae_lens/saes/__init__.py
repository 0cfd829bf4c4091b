"""SAE architectures: one module per architecture, looked up by name in the registry."""

from sae_lens.saes.base import Architecture, TrainingForward, TrainingLossInputs
from sae_lens.saes.registry import (
    architecture_names,
    get_architecture,
    register_architecture,
    unregister_architecture,
)

__all__ = [
    "Architecture",
    "TrainingForward",
    "TrainingLossInputs",
    "architecture_names",
    "get_architecture",
    "register_architecture",
    "unregister_architecture",
]
