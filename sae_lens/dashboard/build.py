"""The whole dashboard job from Python: load the SAE (a local folder, or a release and SAE
id) and its model, gather the data in one pass, and write the page, the data as JSON and
the Neuronpedia batch files (`build_dashboard`)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sae_lens.dashboard.collect import DashboardSettings, check_features, gather_dashboard_data
from sae_lens.dashboard.data import DashboardData
from sae_lens.dashboard.html_page import DEFAULT_LATENTS_PER_PAGE, write_html
from sae_lens.dashboard.neuronpedia import write_neuronpedia
from sae_lens.sae import SAE

DATA_FILE = "dashboard.json"
NEURONPEDIA_DIR = "neuronpedia"


def load_sae(
    sae_path: str | None = None,
    release: str | None = None,
    sae_id: str | None = None,
    device: str = "cpu",
) -> tuple[SAE, str]:
    """(SAE, a name for it) from a local folder, or from a release and SAE id."""
    with warnings.catch_warnings():  # the model is loaded with those kwargs below
        warnings.filterwarnings("ignore", message="This SAE was trained on a model loaded")
        if sae_path is not None:
            if not Path(sae_path).is_dir():
                raise FileNotFoundError(f"SAE folder {sae_path!r} does not exist")
            return SAE.load_from_pretrained(sae_path, device=device), Path(sae_path).name
        if release is None or sae_id is None:
            raise ValueError("give an SAE folder (sae_path), or a release and an sae_id")
        return SAE.from_pretrained(release, sae_id, device=device)[0], f"{release}/{sae_id}"


def model_class_for(sae: SAE, sae_path: str | None, override: str | None = None) -> str:
    """How to load the SAE's model: `override`, else the class its folder's cfg.json
    records, else HookedTransformer for a TransformerLens hook name (holding `hook_`)."""
    if override is not None:
        return override
    if sae_path is not None:
        try:
            recorded = json.loads((Path(sae_path) / "cfg.json").read_text())
        except (OSError, ValueError):
            recorded = {}
        if isinstance(recorded, dict) and isinstance(recorded.get("model_class_name"), str):
            return recorded["model_class_name"]
    return "HookedTransformer" if "hook_" in sae.cfg.hook_name else "AutoModelForCausalLM"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_dashboard(
    sae: SAE,
    features: Sequence[int] = range(16),
    settings: DashboardSettings | None = None,
    model: Any = None,
    output_dir: str | Path | None = None,
    dataset: str | None = None,
    context_size: int | None = None,
    tokens: torch.Tensor | None = None,
    model_name: str | None = None,
    model_class_name: str | None = None,
    sae_name: str = "",
    neuronpedia: bool = True,
    latents_per_page: int | None = None,
    progress: bool = True,
) -> DashboardData:
    """Gather the dashboards of latents `features` of `sae` and, with `output_dir`, write
    `index.html`, `dashboard.json` and (with `neuronpedia`) `neuronpedia/batch-*.json`.

    The model is `model`, else `model_name` (default the SAE's) loaded as
    `model_class_name` (default HookedTransformer) on the SAE's device; the tokens are
    `tokens`, else read from `dataset` (default the SAE's) in sequences of `context_size`
    (default the SAE's). Returns the data (it shows itself in Jupyter)."""
    check_features(features, sae.cfg.d_sae)  # before loading a model
    if model is None:
        from sae_lens.load_model import load_model

        model = load_model(
            model_class_name or "HookedTransformer",
            model_name or sae.cfg.model_name,
            device=str(sae.W_dec.device),
            model_from_pretrained_kwargs=sae.cfg.model_from_pretrained_kwargs,
        )
    data = gather_dashboard_data(
        sae,
        model,
        features,
        settings,
        tokens=tokens,
        dataset=dataset,
        context_size=context_size,
        sae_name=sae_name,
        progress=progress,
    )
    if output_dir is not None:
        write_outputs(data, Path(output_dir), neuronpedia, latents_per_page)
    return data


def write_outputs(
    data: DashboardData,
    output_dir: Path,
    neuronpedia: bool = True,
    latents_per_page: int | None = None,
) -> list[Path]:
    """Write the page(s), the JSON data and the Neuronpedia batches; return the main files."""
    per_page = latents_per_page or DEFAULT_LATENTS_PER_PAGE
    written = [write_html(data, output_dir, per_page), data.save_json(output_dir / DATA_FILE)]
    if neuronpedia:
        written += write_neuronpedia(data, output_dir / NEURONPEDIA_DIR)
    return written
