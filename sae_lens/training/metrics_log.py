"""The local record of a training run: one JSON object per logged step in `metrics.jsonl`,
and a PNG of the main training curves drawn from it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILENAME = "metrics.jsonl"
CURVES_FILENAME = "training_curves.png"

# (panel title, metric key) of the four curves drawn by `plot_training_curves`.
CURVE_PANELS = (
    ("loss", "losses/overall_loss"),
    ("L0 (active latents per token)", "metrics/l0"),
    ("explained variance", "metrics/explained_variance"),
    ("dead features", "sparsity/dead_features"),
)


def _json_value(value: Any) -> Any:
    """A JSON-safe number: non-finite floats become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends one JSON object per logged step to a JSON-lines file.

    Each line holds `"step"` and the logged metrics; values that are not plain numbers,
    strings or booleans (e.g. wandb histograms) are left out. A log that is not `writes`
    (a data-parallel run's processes other than the first) touches no file.
    """

    def __init__(self, path: str | Path, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes
        if writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if not self.writes:
            return
        record: dict[str, Any] = {"step": step}
        for key, value in metrics.items():
            if isinstance(value, (bool, int, float, str)):
                record[key] = _json_value(value)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records logged after `step` (used when a run resumes from a checkpoint)."""
        if not self.writes or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        tmp_path = self.path.with_name(self.path.name + ".tmp")
        with open(tmp_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp_path, self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file, in order. A torn last line (crash mid-write) is skipped."""
    records = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON: {line[:80]!r}") from None
    return records


def curve_points(
    records: list[dict[str, Any]],
) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """The x axis key and, per curve key, the (x, y) values that `plot_training_curves`
    draws: x is training tokens, or the step when token counts were not logged."""
    x_key = "details/n_training_tokens"
    if not any(x_key in r for r in records):
        x_key = "step"
    curves = {}
    for _, key in CURVE_PANELS:
        points = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        curves[key] = (xs, ys)
    return x_key, curves


def plot_training_curves(metrics_jsonl_path: str | Path, png_path: str | Path) -> Path:
    """Draw loss, L0, explained variance and dead features from a metrics file into a
    PNG (2x2 panels, 1000x700 pixels); returns the PNG's path."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    records = read_metrics(metrics_jsonl_path)
    if not records:
        raise ValueError(f"no metrics to plot in {metrics_jsonl_path}")
    x_key, curves = curve_points(records)
    # fixed margins: a constrained layout would cost 40% of the drawing time, which a
    # multi-SAE run pays once per SAE
    figure = Figure(figsize=(10, 7), dpi=100)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.95, wspace=0.2, hspace=0.3)
    axes = figure.subplots(2, 2).flatten()
    for ax, (title, key) in zip(axes, CURVE_PANELS, strict=True):
        xs, ys = curves[key]
        ax.set_title(title)
        ax.set_xlabel("step" if x_key == "step" else "training tokens")
        if ys:
            ax.plot(xs, ys, linewidth=1.2)
            if key == "losses/overall_loss" and min(ys) > 0:
                ax.set_yscale("log")
        else:
            ax.text(
                0.5, 0.5, f"no '{key}' logged", ha="center", va="center", transform=ax.transAxes
            )
        ax.grid(alpha=0.3)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = png_path.with_name(png_path.name + ".tmp.png")
    figure.savefig(tmp_path)
    os.replace(tmp_path, png_path)
    return png_path
