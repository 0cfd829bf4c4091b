"""BatchTopK: the batch keeps the k x n_tokens pre-activations of largest score (times the
decoder row norm); the sparse training step gives the losses and gradients of the plain
dense formulas; a running threshold tracks the smallest kept score, travels in the state
dict, and becomes the per-latent `threshold` of the JumpReLU SAE that is saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.sae import SAE
from sae_lens.saes import sparse_kernels
from sae_lens.saes.batchtopk import batch_topk
from sae_lens.saes.sparse_kernels import (
    RowSelection,
    batch_topk_flat_indices,
    batchtopk_encode,
    sparse_decode_rows,
)
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict

N, D_IN, D_SAE, K = 12, 6, 40, 3


def make_sae(architecture: str = "batchtopk", **overrides: Any) -> TrainingSAE:
    options = {"dtype": "float64", "activation_fn_kwargs": {"k": K}, **overrides}
    cfg = training_sae_cfg_dict(architecture, d_in=D_IN, d_sae=D_SAE, **options)
    return perturbed_training_sae(cfg)


def batch(seed: int = 1, n: int = N) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense_batch_topk(
    pre: torch.Tensor, n_keep: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The plain formula: ReLU, then the n_keep entries of the flattened batch with the
    largest score relu(pre) * weights, at their pre-activation values."""
    scores = pre.relu() * (1 if weights is None else weights)
    top = scores.flatten().topk(n_keep)
    flat = pre.relu().flatten()
    return torch.zeros_like(flat).scatter(0, top.indices, flat[top.indices]).view_as(pre)


# --- the selection ----------------------------------------------------------------------
@pytest.mark.parametrize(("n", "d_sae", "n_keep"), [(50, 64, 100), (7, 3000, 20), (300, 128, 9000)])
def test_selection_is_the_flat_top_n_keep(n: int, d_sae: int, n_keep: int) -> None:
    g = torch.Generator().manual_seed(n)
    pre = torch.randn(n, d_sae, generator=g)
    flat = batch_topk_flat_indices(pre, n_keep)
    assert torch.equal(flat, pre.flatten().topk(n_keep).indices.sort().values)
    weights = torch.rand(d_sae, generator=g) * 2 + 0.1
    flat = batch_topk_flat_indices(pre, n_keep, weights)
    expected = (pre * weights).flatten().topk(n_keep).indices.sort().values
    assert torch.equal(flat, expected)


def test_selection_keeps_only_positive_entries_and_all_ties() -> None:
    pre = torch.full((4, 10), -1.0)
    pre[0, :3] = torch.tensor([2.0, 1.0, 3.0])
    assert batch_topk_flat_indices(pre, 8).tolist() == [0, 1, 2]  # fewer positive than 8
    pre[1, :2] = 1.0  # three entries tied at the cut of the top 3
    assert batch_topk_flat_indices(pre, 3).tolist() == [0, 1, 2, 10, 11]


def test_selection_is_exact_when_the_sample_misleads(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 64-entry sample of a [64, 64] matrix the stride is 65: the sample is the
    diagonal. Large diagonal values put the floor too high for the off-diagonal entries
    among the top 100; the fallback still finds them."""
    monkeypatch.setattr(sparse_kernels, "_FLOOR_SAMPLE", 64)
    pre = torch.full((64, 64), 0.1)
    pre[:10] = 50.0 + torch.arange(640, dtype=torch.float32).view(10, 64) / 1000
    pre.diagonal().copy_(100.0 + torch.arange(64, dtype=torch.float32))
    assert sparse_kernels._candidate_floor(pre.flatten(), 100, 64, None) > 100  # misled
    flat = batch_topk_flat_indices(pre, 100)
    assert torch.equal(flat, pre.flatten().topk(100).indices.sort().values)


def test_row_selection_offsets_start_each_row() -> None:
    flat = torch.tensor([1, 4, 5, 17, 18, 19])  # d_sae 6: rows 0, 0, 0, 2, 3, 3
    selection = RowSelection.from_flat(flat, n_rows=4, d_sae=6)
    assert selection.tokens.tolist() == [0, 0, 0, 2, 3, 3]
    assert selection.latents.tolist() == [1, 4, 5, 5, 0, 1]
    assert selection.offsets.tolist() == [0, 3, 3, 4]


# --- the sparse kernels -----------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pre_gets_gradient", [False, True])
def test_sparse_encode_and_decode_match_dense_autograd(
    pre_gets_gradient: bool, weighted: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    x, W_enc, b_enc, W_dec = (
        torch.randn(*shape, generator=g, dtype=torch.float64)
        for shape in ((N, D_IN), (D_IN, D_SAE), (D_SAE,), (D_SAE, D_IN))
    )
    weights = torch.rand(D_SAE, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    grad_out = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    grad_pre = torch.randn(N, D_SAE, generator=g, dtype=torch.float64)
    n_keep = K * N

    sparse = [t.clone().requires_grad_() for t in (x, W_enc, b_enc, W_dec)]
    values, selection, pre = batchtopk_encode(*sparse[:3], n_keep, weights=weights)
    out = sparse_decode_rows(values, selection, sparse[3])
    loss = (out * grad_out).sum() + ((pre * grad_pre).sum() if pre_gets_gradient else 0)
    loss.backward()

    dense = [t.clone().requires_grad_() for t in (x, W_enc, b_enc, W_dec)]
    ref_pre = dense[0] @ dense[1] + dense[2]
    ref_out = dense_batch_topk(ref_pre, n_keep, weights) @ dense[3]
    ref_loss = (ref_out * grad_out).sum() + ((ref_pre * grad_pre).sum() if pre_gets_gradient else 0)
    ref_loss.backward()

    assert values.numel() == n_keep
    assert_close(out, ref_out)
    for ours, ref in zip(sparse, dense, strict=True):
        assert_close(ours.grad, ref.grad)


# --- the architecture's training step ---------------------------------------------------
def direct_losses(
    params: dict[str, torch.Tensor], x: torch.Tensor, dead: torch.Tensor
) -> dict[str, torch.Tensor]:
    """MSE and AuxK of BatchTopK written out with plain torch ops (the batch ranks by
    pre-activation times decoder row norm)."""
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]  # [n, d_sae]
    acts = dense_batch_topk(pre, K * x.shape[0], params["W_dec"].detach().norm(dim=1))
    out = acts @ params["W_dec"] + params["b_dec"]
    mse = ((out - x) ** 2).sum(-1).mean()
    k_aux = min(D_SAE // 2, int(dead.sum()))
    dead_pre = torch.where(dead, pre, -torch.inf).topk(k_aux, dim=-1)
    aux_acts = torch.zeros_like(pre).scatter(-1, dead_pre.indices, dead_pre.values)
    residual = x - out
    aux = (
        min(int(dead.sum()) / (D_SAE // 2), 1.0)
        * ((aux_acts @ params["W_dec"] + params["b_dec"] - residual) ** 2).sum(-1).mean()
    )
    return {"mse_loss": mse, "auxiliary_reconstruction_loss": aux}


@pytest.mark.parametrize("path", ["sparse", "step by step"])
def test_losses_and_gradients_match_the_direct_formulas(path: str) -> None:
    sae = make_sae()
    if path == "step by step":  # a hook sends training through the dense path
        sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts)
    x = batch()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::4] = True
    out = sae.training_forward_pass(x, current_l1_coefficient=1.0, dead_neuron_mask=dead)
    out.loss.backward()

    params = {n: p.detach().clone().requires_grad_() for n, p in sae.named_parameters()}
    expected = direct_losses(params, x, dead)
    sum(expected.values()).backward()  # type: ignore[union-attr]
    assert set(out.losses) == set(expected)
    for name, value in expected.items():
        assert_close(torch.as_tensor(out.losses[name]), value.detach())
    for name, param in sae.named_parameters():
        assert_close(param.grad, params[name].grad, msg=name)
    assert int((out.feature_acts > 0).sum()) == K * N


def test_running_threshold_follows_the_smallest_kept_score() -> None:
    """theta_t = theta_{t-1} + alpha_t * (m_t / n_t - theta_{t-1}) per latent, with alpha_t =
    lr / (1 - (1 - lr)^t) (so theta_1 = m_1 / n_1), m_t the smallest kept score and n_t the
    decoder row norms of step t, computed here from the weights before each step."""
    lr = 0.3
    sae = make_sae(topk_threshold_lr=lr)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    theta = torch.zeros(D_SAE, dtype=torch.float64)
    for step in range(1, 5):
        x = batch(seed=step)
        with torch.no_grad():
            pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
            norms = sae.W_dec.norm(dim=1)
            kept = dense_batch_topk(pre, K * N, norms) * norms
            smallest = kept[kept > 0].min()
        theta = theta + lr / (1 - (1 - lr) ** step) * (smallest / norms - theta)
        sae.training_forward_pass(x, current_l1_coefficient=1.0).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert_close(sae.topk_threshold, theta)
        assert int(sae.topk_threshold_steps) == step


def test_running_threshold_is_state_and_moves_only_in_training() -> None:
    sae = make_sae()
    assert "topk_threshold" in sae.state_dict()
    sae.training_forward_pass(batch(), current_l1_coefficient=1.0)
    theta = sae.topk_threshold.clone()
    assert (theta > 0).all()
    sae.eval()
    sae.training_forward_pass(batch(seed=5), current_l1_coefficient=1.0)
    sae.encode(batch(seed=6))
    assert torch.equal(sae.topk_threshold, theta)
    copy = make_sae()
    copy.load_state_dict(sae.state_dict())
    assert torch.equal(copy.topk_threshold, theta)


def test_training_mode_keeps_k_per_token_on_average_and_eval_mode_uses_the_threshold() -> None:
    sae = make_sae()
    sae.training_forward_pass(batch(), current_l1_coefficient=1.0)
    x = batch(seed=3, n=40)
    with torch.no_grad():
        assert int((sae.encode(x) > 0).sum()) == K * 40  # train mode: the batch's top
        sae.eval()
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        assert_close(sae.encode(x), pre.relu() * (pre > sae.topk_threshold))


def test_batch_topk_over_several_leading_dimensions() -> None:
    pre = torch.randn(3, 5, 20, generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(0.5, 2.0, 20)
    expected = dense_batch_topk(pre.view(15, 20), 37, weights).view(3, 5, 20)
    assert_close(batch_topk(pre, 2.5, weights), expected)


def test_saved_sae_is_a_jumprelu_sae_with_the_same_outputs(tmp_path: Path) -> None:
    sae = make_sae()
    for seed in range(3):
        sae.training_forward_pass(batch(seed), current_l1_coefficient=1.0)
    sae.eval()
    sae.fold_activation_norm_scaling_factor(2.5)  # as the trainer does before saving
    sae.fold_W_dec_norm()
    x = batch(seed=9, n=30) * 2.5
    with torch.no_grad():
        expected = sae(x), sae.encode(x)
    assert (sae.topk_threshold != sae.topk_threshold[0]).any()  # one per latent
    sae.save_model(tmp_path)

    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["activation_fn_str"], cfg["activation_fn_kwargs"]) == (
        "jumprelu", "relu", {})  # fmt: skip
    loaded = SAE.load_from_pretrained(str(tmp_path), dtype="float64")
    assert_close(loaded.threshold.detach(), sae.topk_threshold)
    with torch.no_grad():
        assert_close(loaded(x), expected[0])
        assert_close(loaded.encode(x), expected[1])


def test_inference_sae_of_the_architecture_is_a_jumprelu_sae(tmp_path: Path) -> None:
    from tests.sae_configs import sae_cfg_dict

    cfg = sae_cfg_dict("batchtopk", d_in=D_IN, d_sae=D_SAE, activation_fn_kwargs={"k": K})
    sae = SAE.from_dict(cfg)
    assert set(sae.state_dict()) == {"threshold", "W_enc", "b_enc", "W_dec", "b_dec"}
    sae.save_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"activation_fn_kwargs": {"k": 0}}, r"batchtopk needs activation_fn_kwargs\['k'\] > 0"),
        ({"activation_fn_kwargs": {}}, r"needs activation_fn_kwargs\['k'\] > 0 .*got None"),
        ({"topk_threshold_lr": 0.0}, r"topk_threshold_lr must be in \(0, 1\], got 0.0"),
        ({"activation_fn_str": "topk"}, "batchtopk SAEs need activation_fn_str='relu'"),
    ],
)
def test_bad_options_are_refused(overrides: dict[str, Any], message: str) -> None:
    options = {"activation_fn_kwargs": {"k": K}, **overrides}
    cfg = training_sae_cfg_dict("batchtopk", d_in=D_IN, d_sae=D_SAE, **options)
    with pytest.raises(ValueError, match=message):
        TrainingSAE.from_dict(cfg)


def test_set_k_changes_the_kept_count_but_not_the_config() -> None:
    """The k schedule's interface (`Architecture.set_k`): the next steps keep k x n_tokens."""
    sae = make_sae()
    sae.architecture.set_k(sae, 5)
    out = sae.training_forward_pass(batch(), current_l1_coefficient=1.0)
    assert int((out.feature_acts > 0).sum()) == 5 * N
    assert sae.cfg.activation_fn_kwargs == {"k": K}


def test_a_batch_too_small_to_keep_anything_leaves_the_threshold() -> None:
    sae = make_sae(activation_fn_kwargs={"k": 0.5})
    out = sae.training_forward_pass(batch(n=1), current_l1_coefficient=1.0)  # keeps int(0.5)
    assert int((out.feature_acts > 0).sum()) == 0
    assert int(sae.topk_threshold_steps) == 0
