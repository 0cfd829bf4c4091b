import math

import pytest
import torch
from torch import nn

from sae_lens.training.optimizers import (
    Muon,
    SignSGD,
    averaged_weights,
    newton_schulz_orthogonalize,
    use_averaged_weights,
    width_lr_factor,
)


def _param(*values: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _step_with_grad(opt: torch.optim.Optimizer, p: nn.Parameter, grad: list[float]) -> None:
    p.grad = torch.tensor(grad, dtype=p.dtype)
    opt.step()


def test_signsgd_moves_each_weight_by_lr_against_its_gradient_sign() -> None:
    p = _param(1.0, -2.0, 0.5, 3.0)
    opt = SignSGD([p], lr=0.1)
    _step_with_grad(opt, p, [0.3, -1e-6, 0.0, -40.0])
    assert p.tolist() == pytest.approx([0.9, -1.9, 0.5, 3.1])


def test_schedule_free_signsgd_matches_a_hand_computation() -> None:
    """y is where gradients are taken; z the signSGD iterate; x the average of the z's
    weighted by lr_max ** 2 (uniform until the lr rises); y = (1 - b) z + b x."""
    b, lrs = 0.9, [0.1, 0.1, 0.2]
    grads = [[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]
    p = _param(1.0, 2.0)
    opt = SignSGD([p], lr=lrs[0], schedule_free_momentum=b)
    z = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x, weight_sum = z.clone(), 0.0
    for t, (lr, grad) in enumerate(zip(lrs, grads, strict=True)):
        opt.param_groups[0]["lr"] = lr
        _step_with_grad(opt, p, grad)
        z = z - lr * torch.tensor(grad, dtype=torch.float64).sign()
        weight = max(lrs[: t + 1]) ** 2
        weight_sum += weight
        x = x + weight / weight_sum * (z - x)
        assert torch.allclose(p.detach(), (1 - b) * z + b * x)
    # the average weights z_1, z_2, z_3 by 1/6, 1/6, 4/6
    assert torch.allclose(opt.state[p]["z"], z)
    with averaged_weights(opt):
        assert torch.allclose(p.detach(), x)
    assert torch.allclose(p.detach(), (1 - b) * z + b * x)


def test_a_change_to_the_parameters_between_steps_carries_over_to_the_average() -> None:
    """As schedulefree's wrapper: the trainer renormalises y's decoder rows after a step;
    x = (y - (1 - b) z) / b is derived from the changed y at the next step."""
    b = 0.5
    p = _param(1.0, 1.0)
    opt = SignSGD([p], lr=0.1, schedule_free_momentum=b)
    _step_with_grad(opt, p, [1.0, 1.0])  # z = x = 0.9: y = 0.9
    with torch.no_grad():
        p.mul_(2.0)  # y = 1.8, so x = (1.8 - 0.5 * 0.9) / 0.5 = 2.7
    with averaged_weights(opt):
        assert p.tolist() == pytest.approx([2.7, 2.7])
    _step_with_grad(opt, p, [1.0, -1.0])  # z = 0.8, 1.0; x = (2.7 + z) / 2; y = (z + x) / 2
    x = [(2.7 + 0.8) / 2, (2.7 + 1.0) / 2]
    assert p.tolist() == pytest.approx([(0.8 + x[0]) / 2, (1.0 + x[1]) / 2])


def test_averaged_weights_swap_in_and_out_exactly() -> None:
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 3))
    opt = SignSGD([p], lr=0.01, schedule_free_momentum=0.95)
    for _ in range(3):
        p.grad = torch.randn(5, 3)
        opt.step()
    training = p.detach().clone()
    average = torch.lerp(training, opt.state[p]["z"], 1 - 1 / 0.95)
    with averaged_weights(opt):
        assert torch.equal(p.detach(), average)
    assert torch.equal(p.detach(), training)
    use_averaged_weights(opt)
    assert torch.equal(p.detach(), average)


def test_averaged_weights_is_a_no_op_without_averaging() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p])
    with averaged_weights(opt):
        assert torch.equal(p.detach(), torch.ones(3))


def test_newton_schulz_orthogonalizes_with_the_gradients_singular_vectors() -> None:
    torch.manual_seed(0)
    for shape in [(16, 64), (64, 16)]:
        g = torch.randn(*shape, dtype=torch.float64)
        o = newton_schulz_orthogonalize(g)
        u, s, vh = torch.linalg.svd(o, full_matrices=False)
        # the quintic iteration leaves singular values near 1 (0.7..1.2), not exactly 1
        assert s.min() > 0.6 and s.max() < 1.25, s
        # and keeps g's singular directions: o is close to U V^T of g
        gu, _, gvh = torch.linalg.svd(g, full_matrices=False)
        polar = gu @ gvh
        cosine = (o * polar).sum() / (o.norm() * polar.norm())
        assert cosine > 0.98


def test_newton_schulz_is_the_quintic_iteration() -> None:
    torch.manual_seed(1)
    g = torch.randn(4, 6, dtype=torch.float64)
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    assert torch.allclose(newton_schulz_orthogonalize(g), x)
    assert torch.allclose(newton_schulz_orthogonalize(g.T), x.T)


def test_muon_updates_matrices_by_orthogonalized_nesterov_momentum() -> None:
    torch.manual_seed(2)
    w = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    opt = Muon([w], lr=0.01, momentum=0.9, weight_decay=0.1)
    expected = w.detach().clone()
    buf = torch.zeros_like(expected)
    for _ in range(2):
        g = torch.randn(6, 4, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + 0.1 * g
        direction = 0.1 * g + 0.9 * buf
        expected = expected * (1 - 0.01 * 0.1)
        expected -= 0.01 * 0.2 * math.sqrt(6) * newton_schulz_orthogonalize(direction)
        assert torch.allclose(w.detach(), expected)


def test_muon_uses_adam_for_vectors() -> None:
    torch.manual_seed(3)
    b1 = nn.Parameter(torch.randn(5))
    b2 = nn.Parameter(b1.detach().clone())
    muon = Muon([b1], lr=0.01, adam_betas=(0.8, 0.99))
    adam = torch.optim.Adam([b2], lr=0.01, betas=(0.8, 0.99))
    assert [g["use_muon"] for g in muon.param_groups] == [False]
    for _ in range(4):
        g = torch.randn(5)
        b1.grad, b2.grad = g.clone(), g.clone()
        muon.step()
        adam.step()
    assert torch.allclose(b1.detach(), b2.detach(), atol=1e-6)


def test_width_lr_factor_is_sparsifys() -> None:
    assert width_lr_factor(2**14) == 1.0
    assert width_lr_factor(4096) == pytest.approx(2.0)
    assert width_lr_factor(2**16) == pytest.approx(0.5)
