"""Calls written the way sae-lens 5.6.0 code and tests make them: the JumpReLU and Step
autograd functions with their backward, `run_evaluations` calling `multiple_evals`, and
`SAETrainingRunner` on a Hugging Face model with 5.6.0-style configs and overrides.

The autograd literals were recorded by running sae-lens 5.6.0 on the same inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock, patch

import pytest
import torch
from datasets import Dataset
from transformer_lens import HookedTransformer

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.evals import run_evaluations
from sae_lens.load_model import HookedProxyLM, load_model
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.training_sae import JumpReLU, Step, TrainingSAE

X = [[0.2, 0.9, 1.4], [1.05, 0.5, 0.0], [2.0, 0.95, 1.1], [-1.0, 1.0, 0.99]]
BANDWIDTH = 0.25

# From sae-lens 5.6.0: fn.apply(X, threshold, 0.25), then backward of
# (y * [[1, 2, 3], [4, 5, 6], ...]).sum().
EXPECTED_AUTOGRAD = {
    ("JumpReLU", "vector"): {
        "y": [[0.0, 0.9, 1.4], [1.05, 0.0, 0.0], [2.0, 0.95, 0.0], [0.0, 1.0, 0.0]],
        "x_grad": [[0.0, 2.0, 3.0], [4.0, 0.0, 0.0], [7.0, 8.0, 0.0], [0.0, 11.0, 0.0]],
        "t_grad": [-16.0, -6.4, -43.2],
    },
    ("JumpReLU", "scalar"): {
        "y": [[0.0, 0.0, 1.4], [1.05, 0.0, 0.0], [2.0, 0.0, 1.1], [0.0, 0.0, 0.0]],
        "x_grad": [[0.0, 0.0, 3.0], [4.0, 0.0, 0.0], [7.0, 0.0, 9.0], [0.0, 0.0, 0.0]],
        "t_grad": -184.0,
    },
    ("Step", "vector"): {
        "y": [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
        "x_grad": None,
        "t_grad": [-16.0, -8.0, -36.0],
    },
    ("Step", "scalar"): {
        "y": [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
        "x_grad": None,
        "t_grad": -184.0,
    },
}
THRESHOLDS = {"vector": [1.0, 0.8, 1.2], "scalar": 1.0}
FUNCTIONS = {"JumpReLU": JumpReLU, "Step": Step}


@pytest.mark.parametrize("fn_name, threshold_kind", list(EXPECTED_AUTOGRAD))
def test_apply_and_backward_match_5_6_0(fn_name: str, threshold_kind: str) -> None:
    x = torch.tensor(X, requires_grad=True)
    threshold = torch.tensor(THRESHOLDS[threshold_kind], requires_grad=True)
    y = FUNCTIONS[fn_name].apply(x, threshold, BANDWIDTH)
    (y * torch.arange(1.0, 13.0).reshape(4, 3)).sum().backward()
    expected = EXPECTED_AUTOGRAD[(fn_name, threshold_kind)]
    assert torch.allclose(y, torch.tensor(expected["y"]))
    if expected["x_grad"] is None:
        assert x.grad is None
    else:
        assert x.grad is not None and torch.allclose(x.grad, torch.tensor(expected["x_grad"]))
    assert threshold.grad is not None
    assert torch.allclose(threshold.grad, torch.tensor(expected["t_grad"]))


def test_threshold_gradient_sums_over_every_broadcast_dimension() -> None:
    # 5.6.0 gives the same for [batch, seq, d_sae] inputs: the extra dims are summed too
    x2d = torch.tensor(X, requires_grad=True)
    x3d = torch.stack([torch.tensor(X), torch.tensor(X)]).requires_grad_(True)
    grads = []
    for x in (x2d, x3d):
        threshold = torch.tensor(THRESHOLDS["vector"], requires_grad=True)
        JumpReLU.apply(x, threshold, BANDWIDTH).sum().backward()
        grads.append(threshold.grad)
    assert torch.allclose(grads[1], 2 * grads[0])


def test_autograd_functions_keep_5_6_0_signatures() -> None:
    x, threshold = torch.tensor(X), torch.tensor(THRESHOLDS["vector"])
    assert torch.equal(JumpReLU.forward(x, threshold, BANDWIDTH), x * (x > threshold))
    assert torch.equal(Step.forward(x, threshold, BANDWIDTH), (x > threshold).float())

    class FakeCtx:  # what autograd hands setup_context and backward
        def save_for_backward(self, *tensors: torch.Tensor) -> None:
            self.saved_tensors = tensors

    ctx = FakeCtx()
    JumpReLU.setup_context(ctx, (x, threshold, BANDWIDTH), x)
    assert ctx.saved_tensors == (x, threshold) and ctx.bandwidth == BANDWIDTH  # type: ignore[attr-defined]
    x_grad, t_grad, bandwidth_grad = JumpReLU.backward(ctx, torch.ones_like(x))
    assert bandwidth_grad is None and x_grad.shape == x.shape and t_grad.shape == (3,)
    assert Step.backward(ctx, torch.ones_like(x))[0] is None


@pytest.fixture
def mock_args() -> argparse.Namespace:
    args = argparse.Namespace()
    args.sae_regex_pattern = "test_pattern"
    args.sae_block_pattern = "test_block"
    args.num_eval_batches = 2
    args.batch_size_prompts = 4
    args.eval_batch_size_prompts = 4
    args.n_eval_reconstruction_batches = 1
    args.n_eval_sparsity_variance_batches = 1
    args.datasets = ["test_dataset"]
    args.ctx_lens = [64]
    args.output_dir = "test_output"
    args.verbose = False
    return args


@patch("sae_lens.evals.get_saes_from_regex")
@patch("sae_lens.evals.multiple_evals")
def test_run_evaluations_calls_multiple_evals_with_5_6_0_arguments(
    mock_multiple_evals: MagicMock,
    mock_get_saes_from_regex: MagicMock,
    mock_args: argparse.Namespace,
) -> None:
    mock_get_saes_from_regex.return_value = [
        ("release1", "sae1", 0.8, 10),
        ("release2", "sae2", 0.7, 8),
    ]
    mock_multiple_evals.return_value = [{"test": "result"}]

    result = run_evaluations(mock_args)

    mock_get_saes_from_regex.assert_called_once_with(
        mock_args.sae_regex_pattern, mock_args.sae_block_pattern
    )
    mock_multiple_evals.assert_called_once_with(
        sae_regex_pattern=mock_args.sae_regex_pattern,
        sae_block_pattern=mock_args.sae_block_pattern,
        eval_batch_size_prompts=mock_args.eval_batch_size_prompts,
        n_eval_reconstruction_batches=mock_args.n_eval_reconstruction_batches,
        n_eval_sparsity_variance_batches=mock_args.n_eval_sparsity_variance_batches,
        datasets=mock_args.datasets,
        ctx_lens=mock_args.ctx_lens,
        output_dir=mock_args.output_dir,
        verbose=mock_args.verbose,
    )
    assert result == [{"test": "result"}]


def build_sae_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    """Like 5.6.0's tests/helpers.build_sae_cfg, on the embedded model and corpus."""
    fields: dict[str, Any] = dict(
        model_name="tiny-pydoc-gpt2",
        hook_name="blocks.0.hook_mlp_out",
        hook_layer=0,
        hook_head_index=None,
        dataset_path="pydoc-corpus",
        dataset_trust_remote_code=True,
        is_dataset_tokenized=False,
        use_cached_activations=False,
        d_in=128,
        l1_coefficient=2e-3,
        lp_norm=1,
        lr=2e-4,
        train_batch_size_tokens=4,
        context_size=6,
        feature_sampling_window=50,
        dead_feature_threshold=1e-7,
        dead_feature_window=1000,
        n_batches_in_buffer=2,
        training_tokens=1_000_000,
        store_batch_size_prompts=4,
        log_to_wandb=False,
        wandb_project="test_project",
        wandb_entity="test_entity",
        wandb_log_frequency=10,
        device="cpu",
        seed=24,
        checkpoint_path="test/checkpoints",
        dtype="float32",
        prepend_bos=True,
        normalize_activations="none",
    )
    fields.update(kwargs)
    cfg = LanguageModelSAERunnerConfig(**fields)
    cfg.checkpoint_path = kwargs.get("checkpoint_path", "test/checkpoints")
    return cfg


def hf_cfg(tmp_path: Path, **kwargs: Any) -> LanguageModelSAERunnerConfig:
    return build_sae_cfg(
        d_in=128,
        d_sae=128,
        hook_layer=0,
        hook_name="transformer.h.0",
        checkpoint_path=str(tmp_path),
        model_class_name="AutoModelForCausalLM",
        training_tokens=128,
        train_batch_size_tokens=4,
        store_batch_size_prompts=4,
        n_checkpoints=1,
        log_to_wandb=False,
        **kwargs,
    )


def test_sae_training_runner_works_with_huggingface_models(tmp_path: Path) -> None:
    runner = SAETrainingRunner(hf_cfg(tmp_path))
    assert isinstance(runner.model, HookedProxyLM)
    runner.run()

    # the run folder also holds metrics.jsonl, run_config.json and training_curves.png, and
    # the end-of-run training state "128" (for extending the run), which 5.6.0 did not write
    checkpoint_dirs = sorted(path for path in tmp_path.glob("*") if path.is_dir())
    assert [path.name for path in checkpoint_dirs] == ["128", "final_128"]
    with open(checkpoint_dirs[1] / "cfg.json") as f:
        saved_cfg = json.load(f)
    assert saved_cfg["model_name"] == "tiny-pydoc-gpt2"
    assert saved_cfg["training_tokens"] == 128
    assert saved_cfg["train_batch_size_tokens"] == 4
    assert saved_cfg["store_batch_size_prompts"] == 4
    assert saved_cfg["log_to_wandb"] is False
    assert saved_cfg["model_class_name"] == "AutoModelForCausalLM"
    sae = SAE.load_from_pretrained(str(checkpoint_dirs[0]))
    assert isinstance(sae, SAE) and sae.cfg.hook_name == "transformer.h.0"


def test_sae_training_runner_takes_an_hf_model_dataset_and_sae_as_overrides(
    tmp_path: Path,
) -> None:
    cfg = hf_cfg(tmp_path)
    model = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2", device="cpu")
    dataset = Dataset.from_list([{"text": "hello world"}] * 2000)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    runner = SAETrainingRunner(
        cfg, override_dataset=dataset, override_model=model, override_sae=sae
    )
    assert runner.model is model and runner.sae is sae
    assert runner.activations_store.dataset is dataset
    W_enc_before = sae.W_enc.detach().clone()
    assert runner.run() is sae
    assert not torch.equal(sae.W_enc, W_enc_before)  # it trained the SAE it was given
    assert (tmp_path / "final_128" / "sae_weights.safetensors").exists()


def test_hf_and_tlens_stores_give_the_same_activations() -> None:
    hf_model = load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2", device="cpu")
    tlens_model = load_model(
        "HookedTransformer",
        "tiny-pydoc-gpt2",
        device="cpu",
        model_from_pretrained_kwargs={
            "fold_ln": False,
            "center_writing_weights": False,
            "center_unembed": False,
        },
    )
    assert isinstance(tlens_model, HookedTransformer)
    dataset = Dataset.from_list([{"text": "hello world"}] * 100)
    cfg = build_sae_cfg(hook_name="blocks.1.hook_resid_post", hook_layer=1)
    store_tlens = ActivationsStore.from_config(tlens_model, cfg, override_dataset=dataset)
    batch_tlens = store_tlens.get_batch_tokens()
    activations_tlens = store_tlens.get_activations(batch_tlens)
    cfg = build_sae_cfg(hook_name="transformer.h.1", hook_layer=1)
    store_hf = ActivationsStore.from_config(hf_model, cfg, override_dataset=dataset)
    batch_hf = store_hf.get_batch_tokens()
    assert torch.equal(batch_hf, batch_tlens)
    activations_hf = store_hf.get_activations(batch_hf)
    assert torch.allclose(activations_hf, activations_tlens, atol=1e-3)
