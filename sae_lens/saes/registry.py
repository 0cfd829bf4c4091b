"""The architecture registry: architecture name -> its `Architecture`. Adding an
architecture is one module under `sae_lens/saes/` plus one entry in `_BUILTIN` (or a
`register_architecture` call from outside the package)."""

from __future__ import annotations

from collections.abc import Iterator

from sae_lens.saes.base import Architecture
from sae_lens.saes.batchtopk import BatchTopKArchitecture
from sae_lens.saes.clt import CLTArchitecture
from sae_lens.saes.gated import GatedArchitecture
from sae_lens.saes.jumprelu import JumpReLUArchitecture
from sae_lens.saes.matryoshka_batchtopk import MatryoshkaBatchTopKArchitecture
from sae_lens.saes.standard import StandardArchitecture
from sae_lens.saes.topk import TopKArchitecture

_BUILTIN: tuple[Architecture, ...] = (
    StandardArchitecture(),
    GatedArchitecture(),
    JumpReLUArchitecture(),
    TopKArchitecture(),
    BatchTopKArchitecture(),
    MatryoshkaBatchTopKArchitecture(),
    CLTArchitecture(),
)

_REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in _BUILTIN}


def register_architecture(architecture: Architecture) -> None:
    """Make `architecture` available under `architecture.name` (refuses a taken name)."""
    if not architecture.name:
        raise ValueError(f"{type(architecture).__name__} has no name: set its `name` attribute")
    if architecture.name in _REGISTRY:
        raise ValueError(f"an SAE architecture named {architecture.name!r} is already registered")
    _REGISTRY[architecture.name] = architecture


def unregister_architecture(name: str) -> None:
    """Remove an architecture registered from outside the package (the built-in ones stay)."""
    if any(arch.name == name for arch in _BUILTIN):
        raise ValueError(f"{name!r} is a built-in SAE architecture and cannot be unregistered")
    if _REGISTRY.pop(name, None) is None:
        raise ValueError(f"no SAE architecture named {name!r} is registered")


def get_architecture(name: str) -> Architecture:
    """The registered architecture called `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown SAE architecture {name!r}: expected one of {architecture_names()}"
        ) from None


def architecture_names() -> list[str]:
    """Names of all registered architectures, in registration order."""
    return list(_REGISTRY)


class RegisteredArchitectureNames:
    """The registered architecture names, read at the moment they are asked for: as a
    command line's `choices`, it offers architectures registered after the config class
    was defined (e.g. by the user's own module)."""

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __iter__(self) -> Iterator[str]:
        return iter(architecture_names())

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(architecture_names())
