"""The page in a real browser (headless Chromium, driven over the DevTools protocol): no
console error, no request beyond the page itself, every latent's panels rendered with
their charts and highlighted tokens, search and jump working, a screenshot that is not
blank. Skipped where no `chromium` binary is installed (`.ci/run` installs it)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from sae_lens.dashboard import ActivationExample, write_html
from tests.dashboard.chromium import CHROMIUM, open_page
from tests.dashboard.conftest import EMBEDDED_FEATURES

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium binary")

COUNTS = """JSON.stringify(Array.from(document.querySelectorAll('section.latent')).map(s => ({
  id: s.id,
  panels: Array.from(s.querySelectorAll('.panel h3')).map(h => h.textContent),
  bars: s.querySelectorAll('svg.chart rect').length,
  lit: Array.from(s.querySelectorAll('.tok')).filter(t => t.style.background).length,
  height: s.getBoundingClientRect().height
})))"""

SEARCH = """(() => {
  const box = document.getElementById('latent-search');
  box.value = '1'; box.dispatchEvent(new Event('input'));
  const shown = Array.from(document.querySelectorAll('nav a'))
    .filter(a => getComputedStyle(a).display !== 'none').map(a => a.dataset.index);
  box.value = '%s'; box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));
  return JSON.stringify({shown: shown, hash: location.hash, top: Math.round(window.scrollY)});
})()"""


def assert_not_blank(png: bytes) -> None:
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, charts, highlighted tokens
    most_common = max(count for count, _ in colours)
    assert most_common < 0.9 * image.size[0] * image.size[1]


def test_the_page_renders_every_panel_with_no_error_and_no_request(embedded_dashboard):
    _, folder = embedded_dashboard
    index = folder / "index.html"
    jump_to = EMBEDDED_FEATURES[-1]
    report = open_page(index, {"sections": COUNTS, "search": SEARCH % jump_to})
    assert report.console_errors == []
    assert report.requests == [index.resolve().as_uri()]
    sections = json.loads(report.values["sections"])
    assert [s["id"] for s in sections] == [f"latent-{i}" for i in EMBEDDED_FEATURES]
    for section, index_ in zip(sections, EMBEDDED_FEATURES, strict=True):
        assert len(section["panels"]) == 4
        assert all(f"Latent {index_}" in title for title in section["panels"])
        assert section["bars"] > 2 and section["lit"] > 5 and section["height"] > 200
    search = json.loads(report.values["search"])
    assert search["shown"] == [str(i) for i in EMBEDDED_FEATURES if str(i).startswith("1")]
    assert search["hash"] == f"#latent-{jump_to}" and search["top"] > 0
    assert_not_blank(report.screenshot)


def test_hostile_token_text_stays_text_in_the_browser(embedded_dashboard, tmp_path):
    data, _ = embedded_dashboard
    hostile = [
        "<script>console.error('injected')</script>",
        "<img src=x onerror=\"console.error('injected')\">",
        "</span></div><b>",
    ]
    latent = data.latents[0]
    example = ActivationExample(hostile, [1, 2, 3], [1.0, 2.0, 0.5], 1, 0, 1)
    latent = type(latent)(**{**vars(latent), "top_examples": [example, *latent.top_examples]})
    page = write_html(replace(data, latents=[latent]), tmp_path)
    first_example = "document.querySelector('.panel.wide .ex').textContent"
    report = open_page(
        page, {"text": first_example, "bold": "document.querySelectorAll('b').length"}
    )
    assert report.console_errors == []
    assert report.requests == [page.resolve().as_uri()]
    assert all(token in report.values["text"] for token in hostile)
    assert report.values["bold"] == 0


def test_the_checks_catch_errors_and_requests(tmp_path):
    """The browser driver itself: a page that logs an error and tries to load a remote
    image is reported as such (so an empty report above means something)."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><script>console.error('boom')</script>"
        "<img src='http://127.0.0.1:9/missing.png'></body></html>"
    )
    report = open_page(page)
    assert "boom" in report.console_errors
    assert "http://127.0.0.1:9/missing.png" in report.requests
