"""The fast training paths of the architectures compute what the 5.6.0 formulas compute:
TopK's fused encoder (and its step-by-step fallback when a hook is attached), the
standard sparsity penalty as one matrix-vector product, gated's shared encoder matmul, and
JumpReLU's fused activation + L0 count. Standard, gated and JumpReLU are checked both with
the CPU kernels (`cpu_kernels`) and with the torch ops that other devices use."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.saes import cpu_kernels
from sae_lens.saes.base import TrainingLossInputs
from sae_lens.saes.fused_ops import hooks_active
from sae_lens.saes.jumprelu import JumpReLU, JumpReLUDecode, Step
from sae_lens.saes.registry import get_architecture
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict

D_IN, D_SAE, N = 5, 12, 10


def make_sae(architecture: str, **overrides: Any) -> TrainingSAE:
    base = dict(
        dtype="float64", l1_coefficient=0.7, jumprelu_init_threshold=0.3, jumprelu_bandwidth=0.5
    )
    cfg = training_sae_cfg_dict(architecture, d_in=D_IN, d_sae=D_SAE, k=3, **{**base, **overrides})
    return perturbed_training_sae(cfg)


def batch(seed: int = 1) -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(params=["cpu kernels", "torch ops"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once with the CPU kernels and once with the torch-ops path."""
    if request.param == "torch ops":
        monkeypatch.setattr(cpu_kernels, "serves", lambda *tensors: False)
    return request.param


def loss_and_grads(sae: TrainingSAE, x: torch.Tensor) -> tuple[dict, dict[str, torch.Tensor]]:
    sae.zero_grad()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    out.loss.backward()
    losses = {k: torch.as_tensor(v).detach() for k, v in out.losses.items()}
    losses["loss"] = out.loss.detach()
    return losses, {n: p.grad.clone() for n, p in sae.named_parameters()}


def test_hooks_active_sees_forward_and_backward_hooks() -> None:
    sae = make_sae("standard")
    assert not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts)
    assert hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    sae.reset_hooks()
    sae.hook_sae_acts_pre.add_hook(lambda grad, hook: None, dir="bwd")
    assert hooks_active(sae.hook_sae_acts_pre)
    sae.reset_hooks()
    assert not hooks_active(sae.hook_sae_acts_pre)


@pytest.mark.parametrize("hook_name", ["hook_sae_acts_pre", "hook_sae_acts_post"])
def test_topk_training_honours_hooks(hook_name: str) -> None:
    """With a hook attached, TopK training runs the step-by-step path, so the hook's edit
    changes the output exactly as in 5.6.0."""
    sae = make_sae("topk")
    x = batch()
    seen: list[torch.Tensor] = []

    def double(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        seen.append(acts.detach())
        return acts * 2

    getattr(sae, hook_name).add_hook(double)
    out = sae.training_forward_pass(x, current_l1_coefficient=0.0)
    assert len(seen) == 1
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        if hook_name == "hook_sae_acts_pre":
            pre = pre * 2
        top = pre.topk(3, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if hook_name == "hook_sae_acts_post":
            acts = acts * 2
    assert_close(out.feature_acts, acts)
    assert_close(out.sae_out, acts @ sae.W_dec + sae.b_dec)


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu", "topk"])
def test_fused_and_step_by_step_paths_agree(architecture: str, kernels: str) -> None:
    """An identity hook on the latents makes training take the step-by-step path: losses
    and gradients must not change."""
    sae = make_sae(architecture)
    x = batch()
    fused = loss_and_grads(sae, x)
    sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts)  # forces the fallback path
    stepwise = loss_and_grads(sae, x)
    for name in fused[0]:
        assert_close(fused[0][name], stepwise[0][name], msg=name)
    for name in fused[1]:
        assert_close(fused[1][name], stepwise[1][name], msg=name)


def _norm_penalty(sae: TrainingSAE, acts: torch.Tensor) -> torch.Tensor:
    weighted = (
        acts * sae.W_dec.norm(dim=1) if sae.cfg.scale_sparsity_penalty_by_decoder_norm else acts
    )
    return weighted.norm(p=sae.cfg.lp_norm, dim=-1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"scale_sparsity_penalty_by_decoder_norm": True},
        {"lp_norm": 2.0},
        {"activation_fn_str": "tanh-relu"},
    ],
)
def test_standard_sparsity_penalty_matches_the_lp_norm(
    overrides: dict[str, Any], kernels: str
) -> None:
    """Loss and every gradient equal those of 5.6.0's `acts.norm(p=lp_norm)` penalty."""
    sae = make_sae("standard", **overrides)
    x = batch()
    losses, grads = loss_and_grads(sae, x)

    sae.zero_grad()
    xin = x - sae.b_dec
    acts = sae.activation_fn(xin @ sae.W_enc + sae.b_enc)
    sae_out = acts @ sae.W_dec + sae.b_dec
    mse = (sae_out - x).pow(2).sum(-1).mean()
    l1 = (0.7 * _norm_penalty(sae, acts)).mean()
    (mse + l1).backward()
    assert_close(losses["l1_loss"], l1.detach())
    assert_close(losses["loss"], (mse + l1).detach())
    for name, p in sae.named_parameters():
        assert_close(grads[name], p.grad, msg=name)


def test_standard_penalty_of_hook_edited_latents_uses_the_norm() -> None:
    """A hook may make latents negative: the penalty is then the true L1 norm."""
    sae = make_sae("standard")
    sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts - 0.5)
    out = sae.training_forward_pass(batch(), current_l1_coefficient=0.7)
    assert (out.feature_acts < 0).any()
    assert_close(out.losses["l1_loss"], (0.7 * out.feature_acts.norm(p=1, dim=-1)).mean())


def test_gated_shared_matmul_matches_the_5_6_0_formula(kernels: str) -> None:
    sae = make_sae("gated")
    x = batch()
    losses, grads = loss_and_grads(sae, x)

    sae.zero_grad()
    xin = x - sae.b_dec
    gate_pre = xin @ sae.W_enc + sae.b_gate
    magnitude = torch.relu(xin @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
    acts = (gate_pre > 0).double() * magnitude
    sae_out = acts @ sae.W_dec + sae.b_dec
    mse = (sae_out - x).pow(2).sum(-1).mean()
    gate_acts = torch.relu(gate_pre)
    l1 = 0.7 * (gate_acts * sae.W_dec.norm(dim=1)).sum(-1).mean()
    aux = (gate_acts @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean()
    (mse + l1 + aux).backward()
    assert_close(losses["l1_loss"], l1.detach())
    assert_close(losses["auxiliary_reconstruction_loss"], aux.detach())
    for name, p in sae.named_parameters():
        assert_close(grads[name], p.grad, msg=name)


def test_gated_losses_recompute_the_gate_without_intermediates() -> None:
    """training_losses called on inputs built elsewhere (no `gate_pre` intermediate)."""
    sae = make_sae("gated")
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    inputs = TrainingLossInputs(
        sae_in=x,
        x=x - sae.b_dec,
        feature_acts=out.feature_acts,
        hidden_pre=out.hidden_pre,
        sae_out=out.sae_out,
        per_item_mse_loss=(out.sae_out - x).pow(2),
        l1_coefficient=0.7,
        dead_neuron_mask=None,
    )
    recomputed = get_architecture("gated").training_losses(sae, inputs)
    for name, value in recomputed.items():
        assert_close(value, out.losses[name], msg=name)


@pytest.mark.parametrize(
    "losses_on", ["sum and l0", "sum", "l0", "sum, l0 and acts", "sum, l0, acts and pre"]
)
def test_jumprelu_decode_equals_bias_jumprelu_step_and_matmul(kernels: str, losses_on: str) -> None:
    g = torch.Generator().manual_seed(3)
    x_enc0 = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)  # some below 0
    b_enc0 = torch.randn(D_SAE, generator=g, dtype=torch.float64) * 0.1
    threshold0 = torch.rand(D_SAE, generator=g, dtype=torch.float64) * 0.5
    threshold0[0] = 0.0
    W_dec0 = torch.randn(D_SAE, D_IN, generator=g, dtype=torch.float64)
    grad_sum = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    grad_l0 = torch.randn(N, generator=g, dtype=torch.float64)
    grad_acts = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)
    grad_pre = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)
    bandwidth = 0.3

    def loss(pre: Any, acts: Any, latent_sum: Any, l0: Any) -> torch.Tensor:
        terms = {
            "sum": (latent_sum * grad_sum).sum(),
            "l0": (l0 * grad_l0).sum(),
            "acts": (acts * grad_acts).sum(),
            "pre": (pre * grad_pre).sum(),
        }
        return sum(value for name, value in terms.items() if name in losses_on)

    inputs = [t.clone().requires_grad_() for t in (x_enc0, b_enc0, threshold0, W_dec0)]
    x_enc = inputs[0] * 1.0  # a non-leaf, as the encoder matmul's output is
    pre, acts, latent_sum, l0 = JumpReLUDecode.apply(x_enc, *inputs[1:], bandwidth)
    assert pre is x_enc  # hidden_pre is built in place
    loss(pre, acts, latent_sum, l0).backward()

    refs = [t.clone().requires_grad_() for t in (x_enc0, b_enc0, threshold0, W_dec0)]
    pre_ref = refs[0] + refs[1]
    acts_ref = JumpReLU.apply(pre_ref, refs[2], bandwidth)
    l0_ref = Step.apply(pre_ref, refs[2], bandwidth).sum(-1)
    loss(pre_ref, acts_ref, acts_ref @ refs[3], l0_ref).backward()

    assert_close(pre, pre_ref)
    assert_close(acts, acts_ref)
    assert_close(l0, l0_ref)
    names = ["x_enc", "b_enc", "threshold", "W_dec"]
    for name, got, want in zip(names, inputs, refs, strict=True):
        if want.grad is None or not want.grad.any():
            assert got.grad is None or not got.grad.any(), name
        else:
            assert_close(got.grad, want.grad, msg=name)
    assert 0 < l0.min() and l0.max() < D_SAE  # both firing and silent latents were tested
    threshold_grad = inputs[2].grad
    assert threshold_grad.abs().min() < threshold_grad.abs().max()  # the window varies


def test_standard_latents_stay_differentiable(kernels: str) -> None:
    """A caller's own loss on the returned latents adds its gradient to the fused one."""
    sae = make_sae("standard", scale_sparsity_penalty_by_decoder_norm=True)
    x = batch()
    sae.zero_grad()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    (out.loss + out.feature_acts.pow(2).sum()).backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}

    sae.zero_grad()
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    sae_out = acts @ sae.W_dec + sae.b_dec
    l1 = (0.7 * (acts * sae.W_dec.norm(dim=1)).sum(-1)).mean()
    ((sae_out - x).pow(2).sum(-1).mean() + l1 + acts.pow(2).sum()).backward()
    for name, p in sae.named_parameters():
        assert_close(grads[name], p.grad, msg=name)


def test_gated_latents_stay_differentiable(kernels: str) -> None:
    """A caller's own loss on the latents and pre-activations adds its gradient to the
    fused one (the kernels then hand over to the general torch backward)."""
    sae = make_sae("gated")
    x = batch()
    sae.zero_grad()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    (out.loss + out.feature_acts.pow(2).sum() + out.hidden_pre.sin().sum()).backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}

    sae.zero_grad()
    xin = x - sae.b_dec
    gate_pre = xin @ sae.W_enc + sae.b_gate
    magnitude_pre = xin @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
    acts = (gate_pre > 0).double() * torch.relu(magnitude_pre)
    gate_acts = torch.relu(gate_pre)
    mse = (acts @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean()
    l1 = 0.7 * (gate_acts * sae.W_dec.norm(dim=1)).sum(-1).mean()
    aux = (gate_acts @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean()
    (mse + l1 + aux + acts.pow(2).sum() + magnitude_pre.sin().sum()).backward()
    for name, p in sae.named_parameters():
        assert_close(grads[name], p.grad, msg=name)


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu"])
def test_a_pre_activation_hook_is_honoured(architecture: str) -> None:
    """A hook on the pre-activations makes training take the step-by-step path, which
    calls it: doubling them doubles the returned pre-activations."""
    sae = make_sae(architecture)
    x = batch()
    clean = sae.training_forward_pass(x, current_l1_coefficient=0.7).hidden_pre.detach()
    sae.hook_sae_acts_pre.add_hook(lambda acts, hook: acts * 2)
    hooked = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    assert_close(hooked.hidden_pre.detach(), clean * 2)


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_training_noise_is_added_to_the_pre_activations(architecture: str) -> None:
    sae = make_sae(architecture)
    x = torch.randn(2000, D_IN, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    clean = sae.training_forward_pass(x, current_l1_coefficient=0.7).hidden_pre.detach()
    sae.cfg.noise_scale = 0.5
    noisy = sae.training_forward_pass(x, current_l1_coefficient=0.7).hidden_pre.detach()
    assert (noisy - clean).std().item() == pytest.approx(0.5, rel=0.05)
    sae.eval()  # no noise outside training
    assert_close(sae.training_forward_pass(x, 0.7).hidden_pre.detach(), clean)


@pytest.mark.parametrize("overrides", [{}, {"noise_scale": 0.5}, {"dtype": "float32"}])
def test_topk_reports_the_firing_counts_of_its_latents(kernels: str, overrides: dict) -> None:
    # the fused step ({}), the sparse encoder with training noise, float32's CPU kernel
    sae = make_sae("topk", **overrides)
    x = batch().to(sae.dtype)
    with torch.no_grad():
        sae.b_enc[:10] = -100.0  # 2 latents left above: each row keeps a value ReLU'd to 0
    sae.train()
    output = sae.training_forward_pass(x, current_l1_coefficient=0.0)
    assert output.firing_counts is not None
    assert ((output.feature_acts != 0).sum(dim=-1) < 3).all()  # a kept 0 is no firing
    expected = (output.feature_acts != 0).sum(dim=0)
    assert torch.equal(output.firing_counts, expected)
    assert output.firing_counts.dtype == torch.int64
