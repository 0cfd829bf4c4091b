"""What a feature dashboard shows, as plain dataclasses: per latent its top activating
examples, examples from its activation quantiles, its activation histogram and density, and
the tokens its decoder direction promotes and suppresses. `DashboardData` holds the latents
of one SAE with where their numbers came from; it round-trips through JSON and shows itself
in Jupyter (`_repr_html_`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# How latents show in Jupyter: `html_page` registers its renderer here when imported (the
# package imports it), so the data classes stay a leaf that renders nothing itself.
NOTEBOOK_RENDERERS: dict[str, Callable[[Sequence[LatentDashboard], str], str]] = {}


def _notebook_html(latents: Sequence[LatentDashboard], title: str) -> str:
    render = NOTEBOOK_RENDERERS.get("html")
    if render is None:
        import html

        return f"<pre>{html.escape(title)}: import sae_lens.dashboard to see the page</pre>"
    return render(latents, title)


@dataclass
class ActivationExample:
    """One token where a latent fired, with a window of context around it.

    `tokens`, `token_ids` and `activations` cover the window (the latent's activation at
    each of its tokens); `position` is the index in the window of the token this example is
    about; `sequence_index` and `sequence_position` say where it sits in the token stream
    (the n-th sequence read, its position there)."""

    tokens: list[str]
    token_ids: list[int]
    activations: list[float]
    position: int
    sequence_index: int
    sequence_position: int

    @property
    def activation(self) -> float:
        """The latent's activation at the example's own token."""
        return self.activations[self.position]


@dataclass
class QuantileGroup:
    """Examples whose activation lies between two quantiles of the latent's nonzero
    activations (estimated from a uniform sample of its active tokens)."""

    lower_quantile: float
    upper_quantile: float
    min_activation: float
    max_activation: float
    examples: list[ActivationExample]


@dataclass
class ActivationHistogram:
    """Counts of the latent's positive activations in equal-width bins from 0; `n_inactive`
    tokens had activation 0 (or below), so `sum(counts) + n_inactive` is the token count."""

    bin_edges: list[float]
    counts: list[int]
    n_inactive: int

    @property
    def n_tokens(self) -> int:
        return sum(self.counts) + self.n_inactive


@dataclass
class LogitToken:
    """A vocabulary token and the direct effect of a latent's decoder direction on its logit."""

    token: str
    token_id: int
    value: float


@dataclass
class LatentDashboard:
    """Everything the dashboard shows for one latent (feature) of an SAE."""

    index: int
    n_tokens: int
    n_active: int
    max_activation: float
    top_examples: list[ActivationExample]
    quantile_groups: list[QuantileGroup]
    histogram: ActivationHistogram
    top_logits: list[LogitToken]
    bottom_logits: list[LogitToken]
    logit_histogram: ActivationHistogram | None = None

    @property
    def density(self) -> float:
        """Fraction of the tokens read on which the latent fired (activation > 0)."""
        return self.n_active / self.n_tokens if self.n_tokens else 0.0

    def _repr_html_(self) -> str:
        return _notebook_html([self], f"Latent {self.index}")


@dataclass
class DashboardData:
    """The dashboards of some latents of one SAE, and the run that gathered them."""

    latents: list[LatentDashboard]
    n_tokens: int
    sae_name: str
    model_name: str
    hook_name: str
    dataset: str
    context_size: int
    settings: dict[str, Any] = field(default_factory=dict)
    n_sequences: int = 0  # sequences read (n_tokens counts their tokens less special ones)

    def __getitem__(self, index: int) -> LatentDashboard:
        """The dashboard of latent `index` (the SAE's latent number, not a list position)."""
        for latent in self.latents:
            if latent.index == index:
                return latent
        shown = [latent.index for latent in self.latents]
        raise KeyError(f"latent {index} is not in this dashboard; it holds latents {shown}")

    @property
    def indices(self) -> list[int]:
        return [latent.index for latent in self.latents]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DashboardData:
        latents = [_latent_from_dict(latent) for latent in data["latents"]]
        return cls(**{**data, "latents": latents})

    def save_json(self, path: str | Path) -> Path:
        """Write the data as JSON (readable back with `load_json`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # every dataclass here holds only plain values and lists: its __dict__ is its JSON
        # object (much faster than `asdict` on tens of thousands of tokens)
        path.write_text(json.dumps(self, default=vars))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> DashboardData:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def _repr_html_(self) -> str:
        return _notebook_html(self.latents, f"{self.sae_name}: {len(self.latents)} latents")


def _example_from_dict(data: dict[str, Any]) -> ActivationExample:
    return ActivationExample(**data)


def _histogram_from_dict(data: dict[str, Any] | None) -> ActivationHistogram | None:
    return None if data is None else ActivationHistogram(**data)


def _latent_from_dict(data: dict[str, Any]) -> LatentDashboard:
    groups = [
        QuantileGroup(**{**g, "examples": [_example_from_dict(e) for e in g["examples"]]})
        for g in data["quantile_groups"]
    ]
    histogram = _histogram_from_dict(data["histogram"])
    assert histogram is not None
    return LatentDashboard(
        **{
            **data,
            "top_examples": [_example_from_dict(e) for e in data["top_examples"]],
            "quantile_groups": groups,
            "histogram": histogram,
            "top_logits": [LogitToken(**t) for t in data["top_logits"]],
            "bottom_logits": [LogitToken(**t) for t in data["bottom_logits"]],
            "logit_histogram": _histogram_from_dict(data.get("logit_histogram")),
        }
    )
