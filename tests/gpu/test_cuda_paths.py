"""The CUDA code paths, run only where a CUDA device exists (marker `gpu`; skipped on CPU
machines, see `benchmark/gpu_check.sh`): every architecture's training step on CUDA
against the same step on CPU, the fused activation reader on CUDA against the model's own
forward, and short training runs on CUDA with autocast and with a compiled SAE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import SAE_ARCHITECTURES, perturbed_training_sae, training_sae_cfg_dict

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("architecture", SAE_ARCHITECTURES)
def test_a_training_step_on_cuda_matches_the_same_step_on_cpu(architecture: str) -> None:
    cfg = training_sae_cfg_dict(
        architecture, d_in=24, d_sae=96, l1_coefficient=0.3, activation_fn_kwargs={"k": 8}
    )
    cpu_sae = perturbed_training_sae(cfg)
    cuda_sae = TrainingSAE.from_dict({**cfg, "device": "cuda"})
    cuda_sae.load_state_dict(cpu_sae.state_dict())
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(1))
    outputs = []
    for sae, batch in ((cpu_sae, x), (cuda_sae, x.cuda())):
        sae.train()
        out = sae.training_forward_pass(sae_in=batch, current_l1_coefficient=0.3)
        out.loss.backward()
        grads = {n: p.grad.detach().cpu() for n, p in sae.named_parameters() if p.grad is not None}
        outputs.append((out.loss.detach().cpu(), out.sae_out.detach().cpu(), grads))
    (cpu_loss, cpu_out, cpu_grads), (cuda_loss, cuda_out, cuda_grads) = outputs
    assert_close(cuda_loss, cpu_loss, rtol=1e-4, atol=1e-5)
    assert_close(cuda_out, cpu_out, rtol=1e-4, atol=1e-5)
    assert cuda_grads.keys() == cpu_grads.keys()
    for name in cpu_grads:
        assert_close(cuda_grads[name], cpu_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_the_fused_reader_on_cuda_matches_the_models_forward() -> None:
    from sae_lens.embedded import load_embedded_hooked_transformer
    from sae_lens.fused_forward import FusedHookReader

    model = load_embedded_hooked_transformer().to("cuda").eval()
    tokens = torch.randint(1, model.cfg.d_vocab, (4, 32), device="cuda")
    hook = "blocks.1.hook_resid_pre"
    reader = FusedHookReader.for_model(model, hook)
    assert reader is not None and reader.can_run()
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        fused = reader(tokens)
    assert fused.device.type == "cuda"
    assert_close(fused, cache[hook], rtol=1e-4, atol=1e-5)


# A short run of the embedded model on CUDA (shared fields of the single and multi runs).
_CUDA_RUN: dict[str, object] = dict(
    model_name="tiny-pydoc-gpt2",
    dataset_path="pydoc-corpus",
    training_tokens=64 * 2048,
    train_batch_size_tokens=2048,
    context_size=64,
    device="cuda",
    log_to_wandb=False,
    verbose=False,
)


def _cuda_run(tmp_path: Path, **overrides: object) -> LanguageModelSAERunnerConfig:
    settings: dict[str, object] = dict(
        _CUDA_RUN,
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        d_sae=256,
        checkpoint_path=str(tmp_path / "runs"),
    )
    settings.update(overrides)
    return LanguageModelSAERunnerConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"architecture": "standard"},
        {"architecture": "topk", "activation_fn_kwargs": {"k": 16}, "autocast": True},
        {"architecture": "jumprelu", "compile_sae": True},
    ],
    ids=["standard", "topk-autocast", "jumprelu-compiled"],
)
def test_a_short_cuda_run_trains_and_its_sae_loads_back(tmp_path: Path, options: dict) -> None:
    cfg = _cuda_run(tmp_path, **options)
    sae = SAETrainingRunner(cfg).run()
    assert sae.W_enc.device.type == "cuda"
    folder = next(Path(cfg.checkpoint_path).glob("final_*"))
    loaded = SAE.load_from_pretrained(str(folder), device="cuda")
    x = torch.randn(8, loaded.cfg.d_in, device="cuda")
    out = loaded(x)
    assert torch.isfinite(out).all()
    assert_close(out, sae.eval()(x), rtol=1e-4, atol=1e-4)


def test_a_multi_run_on_cuda_stacks_same_shape_saes_like_one_by_one(tmp_path: Path) -> None:
    from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner

    topk = {"architecture": "topk", "activation_fn_kwargs": {"k": 16}, "d_sae": 256}
    saes = {
        "resid": {"hook_name": "blocks.*.hook_resid_post", **topk},  # one per layer: stacked
        "mlp": {"hook_name": "blocks.*.hook_mlp_out", "l1_coefficient": 2.0, "d_sae": 256},
    }
    shared = {**_CUDA_RUN, "training_tokens": 16 * 2048}
    runs = {}
    for stack in ("auto", False):  # "auto" stacks on CUDA
        cfg = MultiSAETrainingRunnerConfig(
            saes, stack_saes=stack, checkpoint_path=str(tmp_path / str(stack)), **shared
        )
        runs[stack] = MultiSAETrainingRunner(cfg).run()
    for name, sae in runs[False].items():
        for key, value in sae.state_dict().items():
            stacked = runs["auto"][name].state_dict()[key]
            assert stacked.device.type == "cuda"
            assert_close(stacked, value, rtol=1e-3, atol=1e-4, msg=f"{name} {key}")
