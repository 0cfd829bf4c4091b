"""Encoding only the chosen latents gives the full SAE's activations of those latents, for
every architecture: a sliced SAE where latents are independent, the full SAE where they
compete (TopK keeps the k largest of all latents, which a slice cannot know)."""

from __future__ import annotations

import pytest
import torch

from sae_lens.dashboard import latent_subset
from sae_lens.dashboard.latent_subset import latent_encoder
from sae_lens.sae import SAE
from tests.sae_configs import sae_cfg_dict

FEATURES = torch.tensor([1, 4, 7])


def make_random_sae(architecture: str, d_sae: int = 40) -> SAE:
    sae = SAE.from_dict(sae_cfg_dict(architecture, d_in=6, d_sae=d_sae, k=3))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
            if name == "threshold":
                param.abs_()
    return sae


def is_sliced(encode) -> bool:  # noqa: ANN001
    owner = getattr(encode, "__self__", None)
    return isinstance(owner, SAE) and owner.cfg.d_sae == len(FEATURES)


@pytest.mark.parametrize(
    ("architecture", "sliced"),
    [("standard", True), ("gated", True), ("jumprelu", True), ("topk", False)],
)
def test_chosen_latents_match_the_full_sae(architecture, sliced):
    sae = make_random_sae(architecture, d_sae=40)
    probe = torch.randn(2, 50, sae.cfg.d_in, generator=torch.Generator().manual_seed(0))
    encode = latent_encoder(sae, FEATURES, probe)
    assert is_sliced(encode) == sliced
    x = torch.randn(3, 20, sae.cfg.d_in, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = sae.encode(x)[..., FEATURES]
        torch.testing.assert_close(encode(x), expected, rtol=1e-5, atol=1e-6)


def test_latents_silent_on_the_probe_use_the_full_sae():
    sae = make_random_sae("standard", d_sae=40)
    with torch.no_grad():
        sae.b_enc[FEATURES] = -1e4
    encode = latent_encoder(sae, FEATURES, torch.randn(4, sae.cfg.d_in))
    assert not is_sliced(encode)  # the full SAE's encode, indexed


def test_the_check_reads_past_the_first_probe_rows_when_the_latents_are_silent_there():
    """The full SAE encodes only the probe's first `_PROBE_ROWS` inputs when the chosen
    latents fire there, else the whole probe: latents that fire only later in the probe are
    still checked (and sliced), and a TopK SAE is still caught on a short probe."""
    sae = make_random_sae("standard", d_sae=40)
    rows = latent_subset._PROBE_ROWS
    probe = 10 * torch.randn(rows + 50, sae.cfg.d_in, generator=torch.Generator().manual_seed(0))
    probe[:rows] = 0.0
    with torch.no_grad():
        sae.b_enc[FEATURES] -= 1 + sae.encode(probe[:1]).abs().max()
        assert not bool((sae.encode(probe[:rows])[:, FEATURES] > 0).any())  # silent first
        assert bool((sae.encode(probe[rows:])[:, FEATURES] > 0).any())  # firing later
    assert is_sliced(latent_encoder(sae, FEATURES, probe))  # it read the later rows
    topk = make_random_sae("topk", d_sae=40)
    long_probe = torch.randn(rows * 3, topk.cfg.d_in, generator=torch.Generator().manual_seed(2))
    assert not is_sliced(latent_encoder(topk, FEATURES, long_probe))
