"""Pictures of an evals run: a feature-density histogram per result and an index.html page with
a table of the scalar metrics and those images (`python -m sae_lens.evals ... --plots`)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_feature_density_histogram(
    feature_density: Sequence[float], path: str | Path, title: str
) -> Path:
    """Save a histogram of log10(feature density) to `path` (PNG); latents that never fired
    (density 0, or -1/NaN where it could not be computed) are counted in the legend."""
    densities = [d for d in feature_density if d is not None and not math.isnan(d)]
    live = [math.log10(d) for d in densities if d > 0]
    n_dead = len(feature_density) - len(live)
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    axes.hist(live, bins=50, color="tab:blue", label=f"{len(live)} live latents")
    axes.plot([], [], " ", label=f"{n_dead} never fired")
    axes.set_xlabel("log10(feature density)")
    axes.set_ylabel("latents")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def _scalar_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """ "group.metric" -> value for the scalar metrics of one result."""
    return {
        f"{group}.{name}": value
        for group, values in result.get("metrics", {}).items()
        for name, value in values.items()
    }


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _image_name(index: int, result: dict[str, Any]) -> str:
    cfg = result.get("eval_cfg", {})
    stem = f"{index:03d}_{result.get('unique_id', 'sae')}_{cfg.get('context_size', '')}"
    stem += f"_{cfg.get('dataset', '')}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return f"{safe}_feature_density.png"


def write_eval_report(results: list[dict[str, Any]], output_dir: str | Path) -> Path:
    """Write a density histogram per result (when it has `feature_density`) and
    `index.html` in `output_dir`; returns the path of index.html."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    images: dict[int, str] = {}
    for index, result in enumerate(results):
        density = result.get("feature_metrics", {}).get("feature_density")
        if density:
            name = _image_name(index, result)
            title = f"{result.get('unique_id')} on {result.get('eval_cfg', {}).get('dataset')}"
            plot_feature_density_histogram(density, output_dir / name, title)
            images[index] = name

    metric_names = sorted({name for result in results for name in _scalar_metrics(result)})
    header = ["SAE", "dataset", "context"] + metric_names
    rows = []
    for result in results:
        cfg = result.get("eval_cfg", {})
        metrics = _scalar_metrics(result)
        cells = [result.get("unique_id"), cfg.get("dataset"), cfg.get("context_size")]
        cells += [metrics.get(name, "") for name in metric_names]
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(_format(c))}</td>" for c in cells) + "</tr>"
        )

    figures = [
        f'<figure><img src="{html.escape(name)}" alt="feature density">'
        f"<figcaption>{html.escape(str(results[index].get('unique_id')))}</figcaption></figure>"
        for index, name in images.items()
    ]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>SAE evals</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }}
</style></head><body>
<h1>SAE evals: {len(results)} results</h1>
<table>
<tr>{"".join(f"<th>{html.escape(h)}</th>" for h in header)}</tr>
{chr(10).join(rows)}
</table>
<h2>Feature density</h2>
{chr(10).join(figures) or "<p>No feature densities were computed.</p>"}
</body></html>
"""
    index_path = output_dir / "index.html"
    index_path.write_text(page, encoding="utf-8")
    return index_path
