"""circuit-tracer's layouts as a user meets them: `export_circuit_tracer` writes a CLT, or
per-layer transcoders, as a folder circuit-tracer reads; `load_circuit_tracer` reads such a
folder back as sae_lens SAEs. The layouts themselves: sae_lens.toolkit.loaders.circuit_tracer.
"""

from __future__ import annotations

from pathlib import Path

from sae_lens.sae import SAE
from sae_lens.toolkit.loaders.circuit_tracer import CLT_KIND, export_circuit_tracer, read_config

__all__ = ["export_circuit_tracer", "load_circuit_tracer"]


def load_circuit_tracer(path: str | Path, device: str = "cpu") -> SAE | list[SAE]:
    """The SAE(s) of a circuit-tracer folder: one CLT, or the per-layer transcoders in layer
    order (each also loads alone: `SAE.load_from_pretrained(".../layer_3.safetensors")`)."""
    folder = Path(path)
    if read_config(folder)["model_kind"] == CLT_KIND:
        return SAE.load_from_pretrained(str(folder), device=device)
    files = sorted(folder.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    return [SAE.load_from_pretrained(str(file), device=device) for file in files]
