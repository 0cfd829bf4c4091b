"""Feature dashboards: what each latent of an SAE responds to, as one self-contained HTML
page that works offline, as dataclasses (shown in Jupyter) and in Neuronpedia's upload
format. From the shell: `python -m sae_lens.dashboard --sae_path FOLDER --features 0:16`.

Modules, in the order the data flows: `running_stats` (bounded-memory statistics),
`collect` (the streaming pass), `logits` (decoder direction -> logit effects), `data` (the
dataclasses), `html_page` and `svg_charts` (the page), `neuronpedia` (the export),
`build` (the whole job) and `cli`."""

from sae_lens.dashboard.build import build_dashboard, load_sae, write_outputs
from sae_lens.dashboard.collect import DashboardSettings, gather_dashboard_data
from sae_lens.dashboard.data import (
    ActivationExample,
    ActivationHistogram,
    DashboardData,
    LatentDashboard,
    LogitToken,
    QuantileGroup,
)
from sae_lens.dashboard.html_page import write_html
from sae_lens.dashboard.neuronpedia import to_neuronpedia, write_neuronpedia

__all__ = [
    "ActivationExample",
    "ActivationHistogram",
    "DashboardData",
    "DashboardSettings",
    "LatentDashboard",
    "LogitToken",
    "QuantileGroup",
    "build_dashboard",
    "gather_dashboard_data",
    "load_sae",
    "to_neuronpedia",
    "write_html",
    "write_neuronpedia",
    "write_outputs",
]
