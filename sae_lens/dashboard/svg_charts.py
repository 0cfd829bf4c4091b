"""Histograms as inline SVG, drawn in Python: no script and nothing loaded to show them."""

from __future__ import annotations

from html import escape

from sae_lens.dashboard.data import ActivationHistogram

WIDTH, HEIGHT, MARGIN = 360, 130, 22


def _number(value: float) -> str:
    return f"{value:.3g}"


def histogram_svg(histogram: ActivationHistogram, label: str, color: str = "#e8833a") -> str:
    """A bar chart of `histogram`'s counts (trailing empty bins left out), with the first and
    last edge on the x axis; each bar's tooltip gives its range and count."""
    counts = list(histogram.counts)
    last = max((i for i, c in enumerate(counts) if c > 0), default=-1)
    if last < 0:
        return (
            f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{WIDTH}" '
            f'height="{HEIGHT}"><text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
            "no activations</text></svg>"
        )
    counts = counts[: last + 1]
    edges = histogram.bin_edges[: last + 2]
    top = max(counts)
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    bar_w = plot_w / len(counts)
    bars = []
    for i, count in enumerate(counts):
        h = plot_h * count / top
        x, y = MARGIN + i * bar_w, MARGIN + plot_h - h
        tip = f"{_number(edges[i])} to {_number(edges[i + 1])}: {count:,}"
        bars.append(
            f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 1, 0.5):.2f}" height="{h:.2f}" '
            f'fill="{color}"><title>{escape(tip)}</title></rect>'
        )
    base = MARGIN + plot_h
    axis = (
        f'<line x1="{MARGIN}" y1="{base}" x2="{WIDTH - MARGIN}" y2="{base}" stroke="#888"/>'
        f'<text x="{MARGIN}" y="{base + 14}" class="tick">{_number(edges[0])}</text>'
        f'<text x="{WIDTH - MARGIN}" y="{base + 14}" class="tick" text-anchor="end">'
        f"{_number(edges[-1])}</text>"
        f'<text x="{MARGIN}" y="{MARGIN - 6}" class="tick">max {top:,}</text>'
    )
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">{"".join(bars)}{axis}</svg>'
    )
