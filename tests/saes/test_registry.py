"""The architecture registry: lookups, clear errors, and adding an architecture as one
class plus one registration, with SAE and TrainingSAE picking it up unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sae_lens.saes.registry as registry
from sae_lens.sae import SAE
from sae_lens.saes import architecture_names, get_architecture, register_architecture
from sae_lens.saes.standard import StandardArchitecture
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import sae_cfg_dict, training_sae_cfg_dict

CFG = sae_cfg_dict(d_in=4, d_sae=8)
TRAINING = {k: v for k, v in training_sae_cfg_dict(d_in=4, d_sae=8).items() if k not in CFG}


class ShiftedReLU(StandardArchitecture):
    """A toy architecture: latents fire only above 1."""

    name = "shifted_relu"

    def encode(self, sae, x):  # noqa: ANN001, ANN201
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)
        return sae.hook_sae_acts_post(torch.relu(hidden_pre - 1)), hidden_pre

    training_encode = encode


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtin_architectures() -> None:
    assert architecture_names() == [
        "standard", "gated", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk", "clt"
    ]  # fmt: skip
    assert all(get_architecture(name).name == name for name in architecture_names())


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown SAE architecture 'nope': expected one of ['standard', 'gated', 'jumprelu', "
            "'topk', 'batchtopk', 'matryoshka_batchtopk', 'clt']"
        ),
    ):
        get_architecture("nope")


def test_a_registered_architecture_works_in_sae_and_training_sae(isolated_registry: None) -> None:
    register_architecture(ShiftedReLU())
    sae = SAE.from_dict({**CFG, "architecture": "shifted_relu"})
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc - 1)
        torch.testing.assert_close(sae.encode(x), expected)

    training = TrainingSAE.from_dict({**CFG, **TRAINING, "architecture": "shifted_relu"})
    out = training.training_forward_pass(x, current_l1_coefficient=0.5)
    assert set(out.losses) == {"l1_loss", "mse_loss"}
    torch.testing.assert_close(out.losses["l1_loss"], 0.5 * out.feature_acts.sum(-1).mean())


def test_registering_a_taken_or_empty_name_is_refused(isolated_registry: None) -> None:
    with pytest.raises(ValueError, match="'standard' is already registered"):
        register_architecture(StandardArchitecture())

    class Nameless(StandardArchitecture):
        name = ""

    with pytest.raises(ValueError, match="Nameless has no name"):
        register_architecture(Nameless())


def test_a_subclass_with_its_own_training_encode_trains_with_it(isolated_registry: None) -> None:
    # The standard architecture's fused training step must not stand in for a subclass's
    # own encode: the latents are ReLU(pre - 1), not ReLU(pre).
    register_architecture(ShiftedReLU())
    training = TrainingSAE.from_dict({**CFG, **TRAINING, "architecture": "shifted_relu"})
    with torch.no_grad():
        training.b_enc.fill_(0.5)
    x = torch.randn(64, 4) * 3
    out = training.training_forward_pass(x, current_l1_coefficient=0.5)
    with torch.no_grad():
        pre = (x - training.b_dec) @ training.W_enc + training.b_enc
        torch.testing.assert_close(out.feature_acts, torch.relu(pre - 1))
        assert (out.feature_acts < torch.relu(pre)).any()


def test_unregistering_removes_only_added_architectures(isolated_registry: None) -> None:
    register_architecture(ShiftedReLU())
    registry.unregister_architecture("shifted_relu")
    assert "shifted_relu" not in architecture_names()
    with pytest.raises(ValueError, match="'topk' is a built-in SAE architecture"):
        registry.unregister_architecture("topk")
    with pytest.raises(ValueError, match="no SAE architecture named 'nope'"):
        registry.unregister_architecture("nope")


_PACKAGE = Path(__file__).parents[2] / "sae_lens"


@pytest.mark.parametrize(
    "module",
    sorted(str(p.relative_to(_PACKAGE)) for p in _PACKAGE.rglob("*.py") if p.parent.name != "saes"),
)
def test_nothing_outside_saes_branches_on_the_architecture_name(module: str) -> None:
    source = (_PACKAGE / module).read_text()
    # ("topk" and "standard" also name an activation function and a positional embedding,
    # so only comparisons with the architecture field or the other names count.)
    branches = re.findall(
        r"architecture\s*(?:==|!=|\bin\b)|(?:==|!=) *[\"'](?:gated|jumprelu)[\"']|"
        r"isinstance\([^)]*Architecture\)",
        source,
    )
    assert branches == []
