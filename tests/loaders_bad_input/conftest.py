"""Fixtures for the bad-input cases: a saved SAE folder to damage, a tiny Hugging Face GPT-2
wrapped as HookedProxyLM, and the embedded model as a HookedSAETransformer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
from sae_lens.load_model import HookedProxyLM
from sae_lens.sae import SAE
from tests.sae_configs import sae_cfg_dict
from tests.toolkit.conftest import OfflineHubCache as OfflineHubCache
from tests.toolkit.conftest import hub_cache as hub_cache  # the offline hub cache fixture

D_IN, D_SAE = 4, 8


def make_sae(**overrides: Any) -> SAE:
    """A small standard SAE with random weights."""
    torch.manual_seed(0)
    sae = SAE.from_dict(sae_cfg_dict(d_in=overrides.pop("d_in", D_IN), d_sae=D_SAE, **overrides))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    return sae


def edit_cfg(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite `folder`/cfg.json after `edit` changed its dict in place."""
    cfg = json.loads((folder / "cfg.json").read_text())
    edit(cfg)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def assert_one_line(error: BaseException, *parts: str) -> None:
    """The error's message is one line holding every one of `parts`."""
    message = str(error)
    assert "\n" not in message, f"message spans lines: {message!r}"
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: equal before and after means untouched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def sae_folder(tmp_path: Path) -> Path:
    """A saved sae_lens folder (cfg.json + sae_weights.safetensors) to damage."""
    folder = tmp_path / "final_4096"
    make_sae().save_model(folder)
    return folder


@pytest.fixture(scope="module")
def hf_proxy() -> HookedProxyLM:
    """A 2-block GPT-2 (d_model 16) built from a config, wrapped as the runner wraps an
    AutoModelForCausalLM; hook names are module paths such as 'transformer.h.1.mlp'."""
    from sae_lens.embedded import load_embedded_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=4096)
    return HookedProxyLM(GPT2LMHeadModel(config).eval(), load_embedded_tokenizer())


@pytest.fixture(scope="module")
def sae_transformer() -> HookedSAETransformer:
    """The embedded default model as a HookedSAETransformer (d_model 128)."""
    return HookedSAETransformer.from_pretrained("tiny-pydoc-gpt2")
