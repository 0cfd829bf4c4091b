"""The dashboard as one self-contained HTML page: styles, the search script and the SVG
charts are inline, and a Content-Security-Policy forbids loading anything, so the page
works offline and cannot reach the network. Every token's text is HTML-escaped.

`DIR/index.html` shows every latent's panels; only sets larger than `latents_per_page` are
split, `index.html` holding the first latents and `page-2.html`, `page-3.html`, ... the
rest, each page listing all latents with relative links."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from html import escape
from pathlib import Path

from sae_lens.dashboard.data import (
    NOTEBOOK_RENDERERS,
    ActivationExample,
    DashboardData,
    LatentDashboard,
    LogitToken,
)
from sae_lens.dashboard.svg_charts import histogram_svg

DEFAULT_LATENTS_PER_PAGE = 1000
_VISIBLE = {"\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:10px 18px;background:#2c3e50;color:#fff}
header h1{font-size:18px;margin:0 0 4px}
header p{margin:0;font-size:13px;opacity:.85}
.layout{display:flex;align-items:flex-start}
nav{position:sticky;top:0;width:250px;height:100vh;overflow-y:auto;border-right:1px solid #ddd;
background:#fff;padding:8px;box-sizing:border-box;flex-shrink:0}
nav input{width:100%;box-sizing:border-box;padding:5px;margin-bottom:6px}
nav a{display:block;padding:2px 4px;font-size:12px;color:#2c3e50;text-decoration:none;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
nav a:hover{background:#eef}
nav .hint{font-size:11px;color:#777;margin-bottom:6px}
main{flex:1;padding:12px 18px;min-width:0}
section.latent{background:#fff;border:1px solid #ddd;border-radius:6px;margin-bottom:18px;padding:10px 14px}
section.latent h2{margin:0 0 4px;font-size:17px}
.stats{font-size:13px;color:#555;margin-bottom:8px}
.panels{display:flex;flex-wrap:wrap;gap:14px}
.panel{border:1px solid #e4e4e4;border-radius:4px;padding:6px 10px;min-width:300px}
.panel.wide{flex-basis:100%}
.panel h3{font-size:13px;margin:0 0 6px;color:#34495e}
.panel h4{font-size:12px;margin:8px 0 4px;color:#555;font-weight:600}
svg.chart text{font-size:10px;fill:#555}
table.logits{border-collapse:collapse;font-size:12px;display:inline-table;margin-right:14px;vertical-align:top}
table.logits td{padding:1px 6px}
td.pos{color:#1565c0}td.neg{color:#c62828}
.ex{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;margin:2px 0;
white-space:pre-wrap;word-break:break-all}
.ex .val{display:inline-block;width:60px;color:#777;text-align:right;margin-right:8px}
.tok{border-radius:2px;padding:0 1px}
.tok.here{outline:1.5px solid #000}
.empty{color:#999;font-size:12px}
"""

_SCRIPT = """
(function () {
  var box = document.getElementById("latent-search");
  var links = Array.prototype.slice.call(document.querySelectorAll("nav a[data-index]"));
  function matches(link, query) {
    if (!query) { return true; }
    if (/^\\d+$/.test(query)) { return link.getAttribute("data-index").indexOf(query) === 0; }
    return link.getAttribute("data-text").toLowerCase().indexOf(query.toLowerCase()) !== -1;
  }
  box.addEventListener("input", function () {
    var query = box.value.trim();
    links.forEach(function (link) { link.style.display = matches(link, query) ? "" : "none"; });
  });
  box.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") { return; }
    var query = box.value.trim();
    var exact = links.filter(function (l) { return l.getAttribute("data-index") === query; });
    var first = exact.length ? exact[0] : links.filter(function (l) { return matches(l, query); })[0];
    if (first) { window.location.href = first.getAttribute("href"); }
  });
})();
"""


@functools.lru_cache(maxsize=1 << 16)
def token_text(token: str) -> str:
    """A token's text with newlines and tabs made visible, HTML-escaped."""
    return escape("".join(_VISIBLE.get(ch, ch) for ch in token), quote=True)


def example_html(example: ActivationExample, scale: float) -> str:
    """One example: its activation, then its tokens shaded by the latent's activation
    (relative to `scale`, the latent's maximum); the example's own token is outlined."""
    spans = []
    for i, (token, value) in enumerate(zip(example.tokens, example.activations, strict=True)):
        alpha = min(value / scale, 1.0) if scale > 0 and value > 0 else 0.0
        here = " here" if i == example.position else ""
        if alpha > 0 or here:  # shaded tokens tell their activation on hover
            tip = f"{value:.4g}"
            style = f' style="background:rgba(255,140,0,{alpha:.3f})"' if alpha > 0 else ""
            spans.append(f'<span class="tok{here}"{style} title="{tip}">{token_text(token)}</span>')
        else:
            spans.append(f'<span class="tok">{token_text(token)}</span>')
    return (
        f'<div class="ex"><span class="val">{example.activation:.3f}</span>{"".join(spans)}</div>'
    )


def _examples_block(examples: Sequence[ActivationExample], scale: float) -> str:
    if not examples:
        return '<div class="empty">no token activated this latent</div>'
    return "".join(example_html(e, scale) for e in examples)


def _listed_token(token: str) -> str:
    """A token alone in a table: whitespace-only tokens made visible (a space as ␣)."""
    return token_text(token if token.strip() else token.replace(" ", "\u2423"))


def _logit_rows(tokens: Sequence[LogitToken], css: str) -> str:
    rows = "".join(
        f'<tr><td class="{css}">{t.value:+.3f}</td><td><span class="tok">'
        f"{_listed_token(t.token)}</span></td></tr>"
        for t in tokens
    )
    return rows or '<tr><td class="empty">none</td></tr>'


def latent_html(latent: LatentDashboard) -> str:
    """The section of one latent: stats, histogram, logit tables, top and quantile examples."""
    i = latent.index
    scale = latent.max_activation
    stats = (
        f"density {latent.density:.4%} ({latent.n_active:,} of {latent.n_tokens:,} tokens) "
        f"&middot; max activation {latent.max_activation:.4g}"
    )
    hist = histogram_svg(latent.histogram, f"activation histogram of latent {i}")
    logits = (
        '<table class="logits"><tr><th colspan="2">promoted</th></tr>'
        f"{_logit_rows(latent.top_logits, 'pos')}</table>"
        '<table class="logits"><tr><th colspan="2">suppressed</th></tr>'
        f"{_logit_rows(latent.bottom_logits, 'neg')}</table>"
    )
    if latent.logit_histogram is not None:
        logits += histogram_svg(latent.logit_histogram, f"logit effects of latent {i}", "#5c7cfa")
    groups = "".join(
        f"<h4>quantiles {g.lower_quantile:.0%}&ndash;{g.upper_quantile:.0%} of active tokens: "
        f"activation {g.min_activation:.3g} to {g.max_activation:.3g}</h4>"
        f"{_examples_block(g.examples, scale)}"
        for g in latent.quantile_groups
    )
    return (
        f'<section class="latent" id="latent-{i}"><h2>Latent {i}</h2>'
        f'<div class="stats">{stats}</div><div class="panels">'
        f'<div class="panel"><h3>Latent {i} &middot; activation histogram (active tokens)</h3>'
        f"{hist}</div>"
        f'<div class="panel"><h3>Latent {i} &middot; logit effects of its decoder direction</h3>'
        f"{logits}</div>"
        f'<div class="panel wide"><h3>Latent {i} &middot; top activations</h3>'
        f"{_examples_block(latent.top_examples, scale)}</div>"
        f'<div class="panel wide"><h3>Latent {i} &middot; examples by activation quantile</h3>'
        f"{groups or '<div class=empty>no token activated this latent</div>'}</div>"
        "</div></section>"
    )


def _nav_html(latents: Sequence[LatentDashboard], page_of: dict[int, str], here: str) -> str:
    links = []
    for latent in latents:
        page = page_of.get(latent.index, here)
        href = f"#latent-{latent.index}" if page == here else f"{page}#latent-{latent.index}"
        words = " ".join(t.token for t in latent.top_logits[:5])
        if latent.top_examples:
            top = latent.top_examples[0]
            words += " " + top.tokens[top.position]
        label = f"Latent {latent.index} \u00b7 {latent.density:.2%}"
        links.append(
            f'<a href="{escape(href, quote=True)}" data-index="{latent.index}" '
            f'data-text="{escape(words, quote=True)}">{escape(label)}</a>'
        )
    return (
        '<nav><input id="latent-search" type="search" placeholder="latent index or token" '
        'aria-label="search latents">'
        '<div class="hint">type an index and press Enter to jump</div>'
        f"{''.join(links)}</nav>"
    )


def page_html(
    title: str,
    subtitle: str,
    shown: Sequence[LatentDashboard],
    listed: Sequence[LatentDashboard] | None = None,
    page_of: dict[int, str] | None = None,
    here: str = "index.html",
) -> str:
    """A whole page showing the panels of `shown`, its list naming `listed` (default the
    same latents), linked to the page `page_of` gives (default this one)."""
    nav = _nav_html(listed if listed is not None else shown, page_of or {}, here)
    body = "".join(latent_html(latent) for latent in shown)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f'<div class="layout">{nav}<main>{body}</main></div>'
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _subtitle(data: DashboardData) -> str:
    return (
        f"model {data.model_name} \u00b7 hook {data.hook_name} \u00b7 dataset {data.dataset} "
        f"\u00b7 {data.n_tokens:,} tokens (context {data.context_size}) \u00b7 "
        f"{len(data.latents)} latents"
    )


def write_html(
    data: DashboardData,
    output_dir: str | Path,
    latents_per_page: int = DEFAULT_LATENTS_PER_PAGE,
) -> Path:
    """Write `output_dir/index.html` (and further pages for large sets); return its path."""
    output_dir = Path(output_dir)
    if latents_per_page < 1:
        raise ValueError(f"latents_per_page must be at least 1, got {latents_per_page}")
    output_dir.mkdir(parents=True, exist_ok=True)
    chunks = [
        data.latents[start : start + latents_per_page]
        for start in range(0, max(len(data.latents), 1), latents_per_page)
    ]
    names = ["index.html"] + [f"page-{n}.html" for n in range(2, len(chunks) + 1)]
    page_of = {
        latent.index: name for name, chunk in zip(names, chunks, strict=True) for latent in chunk
    }
    title = f"SAE dashboard: {data.sae_name}"
    for name, chunk in zip(names, chunks, strict=True):
        html = page_html(title, _subtitle(data), chunk, data.latents, page_of, here=name)
        (output_dir / name).write_text(html, encoding="utf-8")
    return output_dir / "index.html"


def notebook_html(latents: Sequence[LatentDashboard], title: str) -> str:
    """The page of `latents` inside an iframe (its own styles and script, isolated from the
    notebook's), for Jupyter's `_repr_html_`."""
    page = page_html(title, "", latents)
    return (
        f'<iframe srcdoc="{escape(page, quote=True)}" style="width:100%;height:640px;'
        'border:1px solid #ddd" sandbox="allow-scripts"></iframe>'
    )


NOTEBOOK_RENDERERS["html"] = notebook_html
