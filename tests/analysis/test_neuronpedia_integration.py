"""Neuronpedia helpers with the browser and the HTTP client replaced: exact URLs, request
bodies and headers, error handling, and autointerp's orchestration with a stand-in
`neuron_explainer`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import types
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import sae_lens.analysis.neuronpedia_integration as npi


@dataclass
class FakeCfg:
    neuronpedia_id: str | None
    model_name: str = "gpt2-small"


@dataclass
class FakeSAE:
    cfg: FakeCfg


@dataclass
class FakeServer:
    """Answers urlopen by URL path; records every request."""

    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def urlopen(self, request: urllib.request.Request, timeout: float = 0) -> Any:
        body = json.loads(request.data) if request.data else None
        headers = {k.lower(): v for k, v in request.header_items()}
        self.requests.append(
            {
                "method": request.get_method(),
                "url": request.full_url,
                "body": body,
                "headers": headers,
            }
        )
        path = request.full_url.removeprefix(npi.NEURONPEDIA_DOMAIN)
        status, payload = self.routes[path]
        raw = json.dumps(payload).encode()
        if status >= 400:
            raise urllib.error.HTTPError(request.full_url, status, "error", {}, io.BytesIO(raw))  # type: ignore[arg-type]
        return _Context(types.SimpleNamespace(status=status, read=lambda: raw))


class _Context:
    def __init__(self, response: Any) -> None:
        self.response = response

    def __enter__(self) -> Any:
        return self.response

    def __exit__(self, *args: Any) -> None:
        return None


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    urls: list[str] = []
    monkeypatch.setattr(npi.webbrowser, "open", urls.append)
    return urls


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(urllib.request, "urlopen", fake.urlopen)
    return fake


# --- URLs ------------------------------------------------------------------------------------


def test_feature_dashboard_url(opened: list[str]) -> None:
    url = npi.open_neuronpedia_feature_dashboard(FakeSAE(FakeCfg("gpt2-small/0-res-jb")), 7)  # type: ignore[arg-type]
    assert url == "https://neuronpedia.org/gpt2-small/0-res-jb/7"
    assert opened == [url]


def test_feature_dashboard_without_id_warns_and_opens_nothing(
    opened: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sae_lens"):
        assert npi.open_neuronpedia_feature_dashboard(FakeSAE(FakeCfg(None)), 7) is None  # type: ignore[arg-type]
    assert opened == []
    assert "SAE has no Neuronpedia id" in caplog.text


def test_quick_list_url(opened: list[str]) -> None:
    sae = FakeSAE(FakeCfg("gpt2-small/0-res-jb"))
    url = npi.get_neuronpedia_quick_list(sae, [3, 12], name="my list")  # type: ignore[arg-type]
    expected_features = (
        "%5B%7B%22modelId%22%3A%20%22gpt2-small%22%2C%20%22layer%22%3A%20%220-res-jb%22%2C%20"
        "%22index%22%3A%20%223%22%7D%2C%20%7B%22modelId%22%3A%20%22gpt2-small%22%2C%20"
        "%22layer%22%3A%20%220-res-jb%22%2C%20%22index%22%3A%20%2212%22%7D%5D"
    )
    assert url == f"https://neuronpedia.org/quick-list/?name=my%20list&features={expected_features}"
    assert opened == [url]


def test_quick_list_without_id_is_an_error(opened: list[str]) -> None:
    with pytest.raises(ValueError, match="SAE has no Neuronpedia id"):
        npi.get_neuronpedia_quick_list(FakeSAE(FakeCfg(None)), [1])  # type: ignore[arg-type]
    assert opened == []


# --- API calls --------------------------------------------------------------------------------


def test_get_feature(server: FakeServer) -> None:
    server.routes["/api/feature/gpt2-small/3-res-jb/42"] = (
        200,
        {"index": "42", "modelId": "gpt2-small"},
    )
    result = npi.get_neuronpedia_feature(42, 3)
    assert result == {"index": 42, "modelId": "gpt2-small"}
    assert server.requests[0]["method"] == "GET"


def test_get_missing_feature_is_an_error(server: FakeServer) -> None:
    server.routes["/api/feature/gemma-2-2b/1-x/9"] = (404, {"message": "not found"})
    with pytest.raises(ValueError, match=r"no feature gemma-2-2b/1-x/9 \(HTTP 404\)"):
        npi.get_neuronpedia_feature(9, 1, model="gemma-2-2b", dataset="x")


def test_make_list_posts_features_and_opens_the_list(server: FakeServer, opened: list[str]) -> None:
    server.routes["/api/list/new-with-features"] = (
        200,
        {"url": "https://neuronpedia.org/list/abc"},
    )
    features = [npi.NeuronpediaFeature("gpt2-small", 0, "res-jb", 5, description="commas")]
    url = npi.make_neuronpedia_list_with_features("KEY", "my list", features, "about commas")
    assert url == "https://neuronpedia.org/list/abc" and opened == [url]
    request = server.requests[0]
    assert request["method"] == "POST" and request["headers"]["x-api-key"] == "KEY"
    assert request["body"] == {
        "name": "my list",
        "description": "about commas",
        "features": [
            {"modelId": "gpt2-small", "layer": "0-res-jb", "index": 5, "description": "commas"}
        ],
    }


def test_make_list_error_carries_the_server_message(server: FakeServer) -> None:
    server.routes["/api/list/new-with-features"] = (401, {"message": "bad key"})
    with pytest.raises(RuntimeError, match=r"Error in creating list \(HTTP 401\): bad key"):
        npi.make_neuronpedia_list_with_features("KEY", "l", [], open_browser=False)


def test_api_key_check(server: FakeServer) -> None:
    server.routes["/api/test"] = (200, {})
    npi.test_key("GOOD")
    assert server.requests[0]["body"] == {"apiKey": "GOOD"}
    server.routes["/api/test"] = (401, {"message": "no"})
    with pytest.raises(ValueError, match="Neuronpedia API key is not valid"):
        npi.test_key("BAD")


def test_nan_and_inf_replacer() -> None:
    decoded = json.loads("[NaN, Infinity, -Infinity, 1.5]", parse_constant=npi.NanAndInfReplacer)
    assert decoded == [0.0, 9999.0, -9999.0, 1.5]


def test_has_activating_text() -> None:
    feature = npi.NeuronpediaFeature("m", 0, "d", 1)
    assert not feature.has_activating_text()
    feature.activations = [npi.NeuronpediaActivation("a", ["x"], [0.0])]
    assert not feature.has_activating_text()
    feature.activations.append(npi.NeuronpediaActivation("b", ["y"], [0.0, 0.3]))
    assert feature.has_activating_text()


# --- autointerp -------------------------------------------------------------------------------


def test_autointerp_without_neuron_explainer_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "neuron_explainer", None)
    features = [npi.NeuronpediaFeature("gpt2-small", 0, "res-jb", 1)]
    with pytest.raises(ImportError, match="pip install automated-interpretability"):
        asyncio.run(npi.autointerp_neuronpedia_features(features, openai_api_key="k"))


def _install_fake_neuron_explainer(
    monkeypatch: pytest.MonkeyPatch, explanation: str
) -> list[dict[str, Any]]:
    """A stand-in for the few neuron_explainer names autointerp uses; returns the list in
    which its explainer records the arguments it was given."""

    class ActivationRecord:
        def __init__(self, tokens: list[str], activations: list[float]) -> None:
            self.tokens, self.activations = tokens, activations

    class Explainer:
        seen: list[dict[str, Any]] = []

        def __init__(self, **kwargs: Any) -> None:
            Explainer.seen.append(kwargs)

        async def generate_explanations(self, **kwargs: Any) -> list[str]:
            Explainer.seen.append(kwargs)
            return [explanation]

    names: dict[str, dict[str, Any]] = {
        "neuron_explainer": {},
        "neuron_explainer.activations": {},
        "neuron_explainer.activations.activation_records": {
            "calculate_max_activation": lambda records: max(max(r.activations) for r in records)
        },
        "neuron_explainer.activations.activations": {"ActivationRecord": ActivationRecord},
        "neuron_explainer.explanations": {},
        "neuron_explainer.explanations.calibrated_simulator": {
            "UncalibratedNeuronSimulator": object
        },
        "neuron_explainer.explanations.explainer": {
            "HARMONY_V4_MODELS": ["gpt-4-1106-preview", "gpt-3.5-turbo"],
            "ContextSize": types.SimpleNamespace(SIXTEEN_K=16384),
            "TokenActivationPairExplainer": Explainer,
        },
        "neuron_explainer.explanations.few_shot_examples": {"FewShotExampleSet": object},
        "neuron_explainer.explanations.prompt_builder": {
            "PromptFormat": types.SimpleNamespace(HARMONY_V4="harmony_v4")
        },
        "neuron_explainer.explanations.scoring": {
            "_simulate_and_score_sequence": None,
            "aggregate_scored_sequence_simulations": None,
        },
        "neuron_explainer.explanations.simulator": {"LogprobFreeExplanationTokenSimulator": object},
    }
    for name, attrs in names.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return Explainer.seen


def test_autointerp_explains_saves_and_uploads(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer, tmp_path: Path
) -> None:
    explainer_calls = _install_fake_neuron_explainer(monkeypatch, "the word 'the'.")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.routes["/api/test"] = (200, {})
    server.routes["/api/feature/gpt2-small/0-res-jb/7"] = (
        200,
        {
            "modelId": "gpt2-small",
            "index": "7",
            "activations": [
                {"id": "a1", "tokens": ["the", "cat"], "values": [2.0, 0.0]},
                {"id": "a2", "tokens": ["a", "the"], "values": [0.0, 1.0]},
                {"id": "a3", "tokens": ["x"], "values": [0.5]},
            ],
        },
    )
    server.routes["/api/explanation/new"] = (200, {})
    feature = npi.NeuronpediaFeature("gpt2-small", 0, "res-jb", 7)

    asyncio.run(
        npi.autointerp_neuronpedia_features(
            [feature],
            openai_api_key="sk-test",
            neuronpedia_api_key="NP",
            do_score=False,
            output_dir=str(tmp_path),
            num_activations_to_use=2,
        )
    )

    assert feature.autointerp_explanation == "the word 'the'"  # trailing period dropped
    assert [a.id for a in feature.activations or []] == ["a1", "a2"]
    assert explainer_calls[0]["model_name"] == "gpt-4-1106-preview"
    assert explainer_calls[1]["max_activation"] == 2.0
    assert explainer_calls[1]["num_samples"] == 1

    expected = {
        "modelId": "gpt2-small",
        "layer": "0-res-jb",
        "index": 7,
        "explanation": "the word 'the'",
        "explanationScore": 0.0,
        "explanationModel": "gpt-4-1106-preview",
    }
    (saved,) = list(tmp_path.glob("gpt2-small-0-res-jb_feature-7_time-*.jsonl"))
    assert json.loads(saved.read_text()) == expected
    upload = server.requests[-1]
    assert upload["url"] == "https://neuronpedia.org/api/explanation/new"
    assert upload["headers"]["x-api-key"] == "NP"
    assert upload["body"] == {"feature": expected}
    assert [r["url"].removeprefix(npi.NEURONPEDIA_DOMAIN) for r in server.requests] == [
        "/api/test",
        "/api/feature/gpt2-small/0-res-jb/7",
        "/api/explanation/new",
    ]


def test_autointerp_refuses_unknown_explainer_model(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_neuron_explainer(monkeypatch, "x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ValueError, match="Invalid explainer model name: gpt-99"):
        asyncio.run(
            npi.autointerp_neuronpedia_features([], autointerp_explainer_model_name="gpt-99")
        )
