"""Neuronpedia helpers: open an SAE feature's dashboard, build quick lists, fetch features
and make lists through the Neuronpedia API, and run OpenAI-style automated
interpretability ("autointerp") on features and upload the explanations.

HTTP goes through the standard library (`urllib.request`), so no extra package is needed.
Autointerp needs OpenAI's `neuron_explainer` (PyPI: `automated-interpretability`) and an
OpenAI API key; this package does not depend on them, so they are imported only when
autointerp runs, and a clear ImportError says what to install when they are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from sae_lens import logger
from sae_lens.sae import SAE

NEURONPEDIA_DOMAIN = "https://neuronpedia.org"

# Stand-ins for values JSON cannot carry.
POSITIVE_INF_REPLACEMENT = 9999
NEGATIVE_INF_REPLACEMENT = -9999
NAN_REPLACEMENT = 0
OTHER_INVALID_REPLACEMENT = -99999

AUTOINTERP_INSTALL_HINT = (
    "autointerp needs OpenAI's neuron_explainer package, which sae_lens does not install: "
    "`pip install automated-interpretability` (it brings the openai client), then set "
    "OPENAI_API_KEY"
)
_NO_NEURONPEDIA_ID = (
    "SAE has no Neuronpedia id: either Neuronpedia has no dashboards for it (yet), or it was "
    "not loaded with SAE.from_pretrained from a release that lists one"
)

T = TypeVar("T")


def NanAndInfReplacer(value: str) -> float:  # noqa: N802 (5.6.0 name)
    """`json.loads(..., parse_constant=...)` hook: NaN / +-Infinity become finite numbers."""
    replacements = {
        "-Infinity": NEGATIVE_INF_REPLACEMENT,
        "Infinity": POSITIVE_INF_REPLACEMENT,
        "NaN": NAN_REPLACEMENT,
    }
    return float(replacements.get(value, NAN_REPLACEMENT))


# --- URLs in the browser -------------------------------------------------------------------


def open_neuronpedia_feature_dashboard(sae: SAE, index: int) -> str | None:
    """Open feature `index` of `sae` on Neuronpedia; returns the URL (None, with a warning,
    when the SAE has no Neuronpedia id)."""
    neuronpedia_id = sae.cfg.neuronpedia_id
    if neuronpedia_id is None:
        logger.warning(_NO_NEURONPEDIA_ID)
        return None
    url = f"{NEURONPEDIA_DOMAIN}/{neuronpedia_id}/{index}"
    webbrowser.open(url)
    return url


def get_neuronpedia_quick_list(sae: SAE, features: list[int], name: str = "temporary_list") -> str:
    """Open (and return) a Neuronpedia quick-list URL showing `features` of `sae`."""
    neuronpedia_id = sae.cfg.neuronpedia_id
    if neuronpedia_id is None:
        raise ValueError(_NO_NEURONPEDIA_ID)
    layer = neuronpedia_id.split("/")[1]
    listed = [
        {"modelId": sae.cfg.model_name, "layer": layer, "index": str(feature)}
        for feature in features
    ]
    url = (
        f"{NEURONPEDIA_DOMAIN}/quick-list/?name={urllib.parse.quote(name)}"
        f"&features={urllib.parse.quote(json.dumps(listed))}"
    )
    webbrowser.open(url)
    return url


# --- the API -------------------------------------------------------------------------------


def _request_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body or {'message': text}) of one request."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except urllib.error.URLError as e:
        raise ConnectionError(f"could not reach {url}: {e.reason}") from e
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text, parse_constant=NanAndInfReplacer)
    except json.JSONDecodeError:
        return status, {"message": text}


def get_neuronpedia_feature(
    feature: int, layer: int, model: str = "gpt2-small", dataset: str = "res-jb"
) -> dict[str, Any]:
    """A feature's data from the Neuronpedia API (activations, explanations, ...)."""
    url = f"{NEURONPEDIA_DOMAIN}/api/feature/{model}/{layer}-{dataset}/{feature}"
    status, result = _request_json("GET", url)
    if status != 200 or not isinstance(result, dict):
        raise ValueError(
            f"Neuronpedia has no feature {model}/{layer}-{dataset}/{feature} (HTTP {status})"
        )
    if "index" in result:
        result["index"] = int(result["index"])
    return result


class NeuronpediaActivation:
    """One activation record of a feature: tokens and the feature's value on each."""

    def __init__(self, id: str, tokens: list[str], act_values: list[float]):  # noqa: A002
        self.id = id
        self.tokens = tokens
        self.act_values = act_values


class NeuronpediaFeature:
    """A feature on Neuronpedia (model, layer, dataset, index) and what is known of it."""

    def __init__(
        self,
        modelId: str,  # noqa: N803 (Neuronpedia's field name)
        layer: int,
        dataset: str,
        feature: int,
        description: str = "",
        activations: list[NeuronpediaActivation] | None = None,
        autointerp_explanation: str = "",
        autointerp_explanation_score: float = 0.0,
    ):
        self.modelId = modelId
        self.layer = layer
        self.dataset = dataset
        self.feature = feature
        self.description = description
        self.activations = activations
        self.autointerp_explanation = autointerp_explanation
        self.autointerp_explanation_score = autointerp_explanation_score

    def has_activating_text(self) -> bool:
        """True if some activation record has a positive value."""
        if self.activations is None:
            return False
        return any(max(a.act_values) > 0 for a in self.activations if a.act_values)

    def label(self) -> str:
        return f"{self.modelId}@{self.layer}-{self.dataset}:{self.feature}"


def make_neuronpedia_list_with_features(
    api_key: str,
    list_name: str,
    features: list[NeuronpediaFeature],
    list_description: str | None = None,
    open_browser: bool = True,
) -> str:
    """Create a Neuronpedia list holding `features`; returns its URL (opened if asked)."""
    body = {
        "name": list_name,
        "description": list_description,
        "features": [
            {
                "modelId": f.modelId,
                "layer": f"{f.layer}-{f.dataset}",
                "index": f.feature,
                "description": f.description,
            }
            for f in features
        ],
    }
    status, result = _request_json(
        "POST",
        f"{NEURONPEDIA_DOMAIN}/api/list/new-with-features",
        body,
        headers={"x-api-key": api_key},
    )
    if not isinstance(result, dict) or "url" not in result:
        message = result.get("message") if isinstance(result, dict) else result
        raise RuntimeError(f"Error in creating list (HTTP {status}): {message}")
    if open_browser:
        webbrowser.open(result["url"])
    return result["url"]


def test_key(api_key: str) -> None:
    """Raise if Neuronpedia does not accept `api_key`."""
    status, _ = _request_json("POST", f"{NEURONPEDIA_DOMAIN}/api/test", {"apiKey": api_key})
    if status != 200:
        raise ValueError(f"Neuronpedia API key is not valid (HTTP {status}).")


# --- autointerp ----------------------------------------------------------------------------


def _autointerp_api() -> SimpleNamespace:
    """The neuron_explainer names autointerp uses, imported on first use."""
    try:
        from neuron_explainer.activations.activation_records import calculate_max_activation
        from neuron_explainer.activations.activations import ActivationRecord
        from neuron_explainer.explanations.calibrated_simulator import (
            UncalibratedNeuronSimulator,
        )
        from neuron_explainer.explanations.explainer import (
            HARMONY_V4_MODELS,
            ContextSize,
            TokenActivationPairExplainer,
        )
        from neuron_explainer.explanations.few_shot_examples import FewShotExampleSet
        from neuron_explainer.explanations.prompt_builder import PromptFormat
        from neuron_explainer.explanations.scoring import (
            _simulate_and_score_sequence,
            aggregate_scored_sequence_simulations,
        )
        from neuron_explainer.explanations.simulator import LogprobFreeExplanationTokenSimulator
    except ImportError as e:
        raise ImportError(f"{AUTOINTERP_INSTALL_HINT} ({e})") from e
    return SimpleNamespace(
        calculate_max_activation=calculate_max_activation,
        ActivationRecord=ActivationRecord,
        UncalibratedNeuronSimulator=UncalibratedNeuronSimulator,
        HARMONY_V4_MODELS=HARMONY_V4_MODELS,
        ContextSize=ContextSize,
        TokenActivationPairExplainer=TokenActivationPairExplainer,
        FewShotExampleSet=FewShotExampleSet,
        PromptFormat=PromptFormat,
        simulate_and_score_sequence=_simulate_and_score_sequence,
        aggregate_scored_sequence_simulations=aggregate_scored_sequence_simulations,
        LogprobFreeExplanationTokenSimulator=LogprobFreeExplanationTokenSimulator,
    )


def sleep_identity(x: T) -> T:
    """Return `x` unchanged (kept for the 5.6.0 interface; autointerp retries itself)."""
    return x


async def simulate_and_score(simulator: Any, activation_records: list[Any]) -> Any:
    """Score an explanation's simulator on activation records (a neuron_explainer
    `ScoredSimulation`): how well simulated activations predict the real ones."""
    api = _autointerp_api()
    scored = await asyncio.gather(
        *(api.simulate_and_score_sequence(simulator, record) for record in activation_records)
    )
    return api.aggregate_scored_sequence_simulations(list(scored))


def _check_autointerp_args(
    api: SimpleNamespace,
    openai_api_key: str | None,
    explainer_model: str,
    scorer_model: str | None,
    do_score: bool,
    upload: bool,
    neuronpedia_api_key: str | None,
    skip_key_test: bool,
) -> None:
    if os.getenv("OPENAI_API_KEY") is None:
        if openai_api_key is None:
            raise ValueError(
                "autointerp needs an OpenAI API key: set OPENAI_API_KEY or pass openai_api_key"
            )
        os.environ["OPENAI_API_KEY"] = openai_api_key
    if explainer_model not in api.HARMONY_V4_MODELS:
        raise ValueError(
            f"Invalid explainer model name: {explainer_model}. Must be one of: {api.HARMONY_V4_MODELS}"
        )
    if do_score and scorer_model not in api.HARMONY_V4_MODELS:
        raise ValueError(
            f"Invalid scorer model name: {scorer_model}. Must be one of: {api.HARMONY_V4_MODELS}"
        )
    if upload:
        if neuronpedia_api_key is None:
            raise ValueError("upload_to_neuronpedia needs a neuronpedia_api_key")
        if not skip_key_test:
            test_key(neuronpedia_api_key)


def _fetch_activations(feature: NeuronpediaFeature, limit: int) -> None:
    data = get_neuronpedia_feature(feature.feature, feature.layer, feature.modelId, feature.dataset)
    if "modelId" not in data:
        raise ValueError(f"Feature {feature.label()} does not exist on Neuronpedia.")
    records = data.get("activations") or []
    if not records:
        raise ValueError(f"Feature {feature.label()} has no activations on Neuronpedia.")
    feature.activations = [
        NeuronpediaActivation(id=r["id"], tokens=r["tokens"], act_values=r["values"])
        for r in records[:limit]
    ]
    if not feature.has_activating_text():
        raise ValueError(f"Feature {feature.label()} appears dead: it has no activating text.")


async def _explain(
    api: SimpleNamespace, records: list[Any], model: str, attempts: int, label: str
) -> str:
    explainer = api.TokenActivationPairExplainer(
        model_name=model,
        prompt_format=api.PromptFormat.HARMONY_V4,
        context_size=api.ContextSize.SIXTEEN_K,
        max_concurrent=1,
    )
    explanations: list[str] = []
    for _ in range(attempts):
        try:
            explanations = await explainer.generate_explanations(
                all_activation_records=records,
                max_activation=api.calculate_max_activation(records),
                num_samples=1,
            )
            break
        except Exception as e:  # the OpenAI client raises many kinds; retry all of them
            logger.error(f"explaining {label} failed, retrying: {e}")
    if len(explanations) != 1:
        raise ValueError(f"Expected exactly one explanation of {label}, got {len(explanations)}")
    return explanations[0].rstrip(".")


def _scoring_records(api: SimpleNamespace, records: list[Any]) -> list[Any]:
    """Records with tokens the scorer's prompt format cannot hold rewritten."""

    def clean(token: str) -> str:
        token = token.replace("<|endoftext|>", "<|not_endoftext|>").replace(" 55", "_55")
        return token.encode("ascii", errors="backslashreplace").decode("ascii")

    return [
        api.ActivationRecord(tokens=[clean(t) for t in r.tokens], activations=r.activations)
        for r in records
    ]


async def _score(
    api: SimpleNamespace,
    records: list[Any],
    explanation: str,
    model: str,
    max_concurrent: int,
    attempts: int,
    label: str,
) -> Any | None:
    for _ in range(attempts):
        try:
            simulator = api.UncalibratedNeuronSimulator(
                api.LogprobFreeExplanationTokenSimulator(
                    model,
                    explanation,
                    json_mode=True,
                    max_concurrent=max_concurrent,
                    few_shot_example_set=api.FewShotExampleSet.JL_FINE_TUNED,
                    prompt_format=api.PromptFormat.HARMONY_V4,
                )
            )
            return await simulate_and_score(simulator, records)
        except Exception as e:  # as above
            logger.error(f"scoring {label} failed, retrying: {e}")
    return None


def _upload_explanation(feature_data: dict[str, Any], api_key: str, label: str) -> None:
    payload = json.loads(
        json.dumps({"feature": feature_data}, default=vars), parse_constant=NanAndInfReplacer
    )
    status, result = _request_json(
        "POST", f"{NEURONPEDIA_DOMAIN}/api/explanation/new", payload, headers={"x-api-key": api_key}
    )
    if status != 200:
        logger.error(f"Couldn't upload the explanation of {label} to Neuronpedia: {result}")
    else:
        logger.info(f"Uploaded the explanation of {label} to Neuronpedia")


async def autointerp_neuronpedia_features(  # noqa: C901
    features: list[NeuronpediaFeature],
    openai_api_key: str | None = None,
    autointerp_retry_attempts: int = 3,
    autointerp_score_max_concurrent: int = 20,
    neuronpedia_api_key: str | None = None,
    skip_neuronpedia_api_key_test: bool = False,
    do_score: bool = True,
    output_dir: str = "neuronpedia_outputs/autointerp",
    num_activations_to_use: int = 20,
    max_explanation_activation_records: int = 20,
    upload_to_neuronpedia: bool = True,
    autointerp_explainer_model_name: str = "gpt-4-1106-preview",
    autointerp_scorer_model_name: str | None = "gpt-3.5-turbo",
    save_to_disk: bool = True,
) -> None:
    """Explain (and optionally score) Neuronpedia features with an OpenAI model; save the
    results as JSON lines under `output_dir` and/or upload them to Neuronpedia.

    Steps per feature: fetch its top activations from Neuronpedia, ask the explainer model
    for a one-line explanation, score it by simulating activations from the explanation,
    save, upload. Needs `neuron_explainer` (see AUTOINTERP_INSTALL_HINT).
    """
    api = _autointerp_api()
    _check_autointerp_args(
        api,
        openai_api_key,
        autointerp_explainer_model_name,
        autointerp_scorer_model_name,
        do_score,
        upload_to_neuronpedia,
        neuronpedia_api_key,
        skip_neuronpedia_api_key_test,
    )
    for feature in features:
        _fetch_activations(feature, num_activations_to_use)

    for number, feature in enumerate(features, start=1):
        label = feature.label()
        logger.info(f"autointerp: feature {label} ({number} of {len(features)})")
        records = [
            api.ActivationRecord(tokens=a.tokens, activations=a.act_values)
            for a in feature.activations or []
        ]
        feature.autointerp_explanation = await _explain(
            api,
            records[:max_explanation_activation_records],
            autointerp_explainer_model_name,
            autointerp_retry_attempts,
            label,
        )
        scored = None
        if do_score and autointerp_scorer_model_name:
            scored = await _score(
                api,
                _scoring_records(api, records),
                feature.autointerp_explanation,
                autointerp_scorer_model_name,
                autointerp_score_max_concurrent,
                autointerp_retry_attempts,
                label,
            )
            score = None if scored is None else scored.get_preferred_score()
            if score is None or len(scored.scored_sequence_simulations) != num_activations_to_use:
                logger.error(f"Failed to score feature {label}; skipping it")
                continue
            feature.autointerp_explanation_score = score

        feature_data: dict[str, Any] = {
            "modelId": feature.modelId,
            "layer": f"{feature.layer}-{feature.dataset}",
            "index": feature.feature,
            "explanation": feature.autointerp_explanation,
            "explanationScore": feature.autointerp_explanation_score,
            "explanationModel": autointerp_explainer_model_name,
        }
        if scored is not None:
            feature_data["activations"] = feature.activations
            feature_data["simulationModel"] = autointerp_scorer_model_name
            feature_data["simulationActivations"] = scored.scored_sequence_simulations
            feature_data["simulationScore"] = feature.autointerp_explanation_score

        if save_to_disk:
            os.makedirs(output_dir, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = os.path.join(
                output_dir,
                f"{feature.modelId}-{feature.layer}-{feature.dataset}_feature-{feature.feature}_time-{stamp}.jsonl",
            )
            with open(path, "a") as f:
                f.write(json.dumps(feature_data, default=vars) + "\n")
        if upload_to_neuronpedia:
            assert neuronpedia_api_key is not None  # checked above
            _upload_explanation(feature_data, neuronpedia_api_key, label)
