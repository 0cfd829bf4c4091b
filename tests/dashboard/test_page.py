"""The page as text: one self-contained file showing every latent's panels, each titled with
its latent index; token text escaped; large sets split into relatively linked pages; the
data round-trips through JSON; Jupyter gets the page in an isolated iframe."""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser

from sae_lens.dashboard import ActivationExample, DashboardData, LogitToken, write_html
from sae_lens.dashboard.html_page import example_html, latent_html
from tests.dashboard.conftest import EMBEDDED_FEATURES

PANELS = ("activation histogram", "logit effects", "top activations", "by activation quantile")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self._in_h3 = False

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append((tag, dict(attrs)))
        self._in_h3 = tag == "h3"

    def handle_data(self, data):  # noqa: ANN001
        if self._in_h3:
            self.headings.append(data)
            self._in_h3 = False


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def test_index_shows_every_panel_of_every_latent_titled_with_its_index(embedded_dashboard):
    data, folder = embedded_dashboard
    html = (folder / "index.html").read_text()
    page = parse(html)
    sections = [a["id"] for tag, a in page.tags if tag == "section"]
    assert sections == [f"latent-{i}" for i in EMBEDDED_FEATURES]
    for index in EMBEDDED_FEATURES:
        for panel in PANELS:
            assert sum(f"Latent {index} \u00b7 " in h and panel in h for h in page.headings) == 1
    assert not (folder / "page-2.html").exists()
    assert [a["href"] for tag, a in page.tags if tag == "a"] == [
        f"#latent-{i}" for i in EMBEDDED_FEATURES
    ]


def test_the_page_loads_nothing_from_anywhere(embedded_dashboard):
    _, folder = embedded_dashboard
    html = (folder / "index.html").read_text()
    page = parse(html)
    for tag, attrs in page.tags:
        assert "src" not in attrs, (tag, attrs)
        assert tag not in ("link", "iframe", "object", "embed", "img")
    assert "default-src 'none'" in html  # the policy forbids any load the page might try
    assert not re.search(r"https?://", html)


def test_token_text_is_escaped():
    nasty = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "a & b", "\n"]
    example = ActivationExample(nasty, [1, 2, 3, 4], [1.0, 0.5, 0.0, 2.0], 0, 0, 0)
    html = example_html(example, scale=2.0)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "a &amp; b" in html and "\u21b5" in html
    spans = [t for t in parse(html).tags if t[0] == "span"]
    assert len(spans) == 1 + len(nasty)  # nothing the tokens held became an element


def test_large_sets_are_split_into_relatively_linked_pages(embedded_dashboard, tmp_path):
    data, _ = embedded_dashboard
    index = write_html(data, tmp_path, latents_per_page=5)
    pages = [index, tmp_path / "page-2.html", tmp_path / "page-3.html"]
    assert all(p.exists() for p in pages) and not (tmp_path / "page-4.html").exists()
    shown = []
    for path in pages:
        page = parse(path.read_text())
        shown += [a["id"] for tag, a in page.tags if tag == "section"]
        links = [a["href"] for tag, a in page.tags if tag == "a"]
        assert len(links) == len(EMBEDDED_FEATURES)  # every page lists every latent
        assert all(not link.startswith(("/", "http", "file:")) for link in links)
    assert shown == [f"latent-{i}" for i in EMBEDDED_FEATURES]
    first = parse(index.read_text())
    links = [a["href"] for tag, a in first.tags if tag == "a"]
    assert links[0] == f"#latent-{EMBEDDED_FEATURES[0]}"
    assert links[5] == f"page-2.html#latent-{EMBEDDED_FEATURES[5]}"


def test_data_round_trips_through_json(embedded_dashboard, tmp_path):
    data, folder = embedded_dashboard
    assert DashboardData.load_json(folder / "dashboard.json") == data
    assert DashboardData.load_json(data.save_json(tmp_path / "copy.json")) == data


def test_jupyter_shows_the_page_in_an_isolated_iframe(embedded_dashboard):
    data, _ = embedded_dashboard
    html = data._repr_html_()
    assert html.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in html
    assert "<section" not in html  # the page sits escaped inside the attribute
    assert "Latent 0 \u00b7 top activations" in unescape(unescape(html))
    single = unescape(unescape(data.latents[1]._repr_html_()))
    assert "Latent 1 \u00b7 top activations" in single and "Latent 0 \u00b7" not in single


def test_a_latent_that_never_fired_says_so(embedded_dashboard):
    data, _ = embedded_dashboard
    dead = replace(data.latents[0], n_active=0, top_examples=[], quantile_groups=[])
    dead = replace(dead, histogram=replace(dead.histogram, counts=[0] * len(dead.histogram.counts)))
    html = unescape(DashboardData(**{**vars(data), "latents": [dead]})._repr_html_())
    assert "no token activated this latent" in html and "no activations" in html


def test_whitespace_logit_tokens_are_visible(embedded_dashboard):
    data, _ = embedded_dashboard
    latent = replace(data.latents[0], top_logits=[LogitToken("  ", 5, 1.0)])
    assert '<span class="tok">\u2423\u2423</span>' in latent_html(latent)
