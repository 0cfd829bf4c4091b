"""An architecture defined and registered outside the package (here, in this test module)
goes the whole way without any change to sae_lens: the config and the CLI accept it, the
runner trains it, the final folder saves and loads it, evals measure it and
HookedSAETransformer splices it. docs/adding_an_architecture.md walks through the same
class."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.embedded import load_embedded_hooked_transformer
from sae_lens.eval_metrics import get_eval_everything_config, run_evals
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import main, parse_cli_config
from sae_lens.saes import (
    Architecture,
    TrainingLossInputs,
    architecture_names,
    register_architecture,
    unregister_architecture,
)
from sae_lens.saes.base import SAEModule, TrainingSAEModule, init_linear_params, new_param
from sae_lens.training import checkpoints
from sae_lens.training.activations_store import ActivationsStore


class ScaledReLUArchitecture(Architecture):
    """ReLU latents, each multiplied by a learned positive scale exp(log_scale)."""

    name = "scaled_relu"

    def init_params(self, sae: SAEModule) -> None:
        init_linear_params(sae)  # W_enc, b_enc, W_dec, b_dec
        sae.log_scale = new_param(sae, sae.cfg.d_sae)  # [d_sae], zeros: scale 1

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)  # [..., d_sae]
        latents = torch.relu(hidden_pre) * sae.log_scale.exp()
        return sae.hook_sae_acts_post(latents), hidden_pre

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        sae.b_enc.data *= norms  # ReLU commutes with the positive per-latent factor

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        penalty = inputs.feature_acts @ sae.W_dec.norm(dim=1)  # [batch]
        return {"l1_loss": inputs.l1_coefficient * penalty.mean()}


@pytest.fixture
def scaled_relu() -> Iterator[None]:
    register_architecture(ScaledReLUArchitecture())
    yield
    unregister_architecture("scaled_relu")


def scaled_relu_latents(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """The architecture's formula written out from the SAE's weights."""
    return torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc) * sae.log_scale.exp()


RUN_FLAGS = [
    "--architecture", "scaled_relu",
    "--hook_name", "blocks.0.hook_resid_post",
    "--d_sae", "64",
    "--context_size", "32",
    "--train_batch_size_tokens", "128",
    "--training_tokens", str(128 * 60),
    "--store_batch_size_prompts", "4",
    "--n_batches_in_buffer", "4",
    "--b_dec_init_method", "mean",
    "--l1_coefficient", "0.5",
    "--lr", "5e-3",
    "--log_to_wandb", "false",
    "--verbose", "false",
]  # fmt: skip


def test_the_config_accepts_a_registered_architecture_and_names_the_others(
    scaled_relu: None,
) -> None:
    cfg = LanguageModelSAERunnerConfig(architecture="scaled_relu", log_to_wandb=False)
    assert (cfg.architecture, cfg.activation_fn) == ("scaled_relu", "relu")
    assert cfg.get_training_sae_cfg_dict()["architecture"] == "scaled_relu"
    unregister_architecture("scaled_relu")
    try:
        with pytest.raises(
            ValueError, match=r"architecture must be one of \['standard', .*got 'scaled_relu'"
        ):
            LanguageModelSAERunnerConfig(architecture="scaled_relu", log_to_wandb=False)
    finally:
        register_architecture(ScaledReLUArchitecture())


def test_the_cli_offers_a_registered_architecture(
    scaled_relu: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_cli_config(["--architecture", "scaled_relu"]).architecture == "scaled_relu"
    with pytest.raises(SystemExit):
        parse_cli_config(["--help"])
    names = "{standard,gated,jumprelu,topk,batchtopk,matryoshka_batchtopk,clt,scaled_relu}"
    assert names in capsys.readouterr().out


def test_a_module_that_registers_an_architecture_can_run_the_cli(tmp_path: Path) -> None:
    # What a user's own launcher does: import the module that registers, then hand over to
    # the CLI. Here in a fresh interpreter, so nothing of this test process leaks in.
    script = (
        "import sys\n"
        "from tests.saes.test_architecture_from_outside import ScaledReLUArchitecture\n"
        "from sae_lens.saes import register_architecture\n"
        "from sae_lens.sae_training_runner import parse_cli_config\n"
        "register_architecture(ScaledReLUArchitecture())\n"
        "print(parse_cli_config(sys.argv[1:]).architecture)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--architecture", "scaled_relu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "scaled_relu"
    assert "scaled_relu" not in architecture_names()


def test_trained_saved_loaded_evaluated_and_spliced(
    scaled_relu: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Trained by the runner, from the command line, on the embedded model.
    run_dir = tmp_path / "runs"
    assert main([*RUN_FLAGS, "--checkpoint_path", str(run_dir)]) == 0
    final = checkpoints.final_sae_folder(next(run_dir.iterdir()))
    assert f"trained SAE (scaled_relu, d_sae=64): {final}" in capsys.readouterr().out

    # Saved and loaded: the folder's config names the architecture, the weights include
    # its own parameter, and the loaded SAE computes the architecture's formula.
    sae = SAE.load_from_pretrained(str(final))
    assert sae.cfg.architecture == "scaled_relu"
    assert sae.log_scale.shape == (64,)
    assert not torch.equal(sae.log_scale, torch.zeros(64)), "log_scale never trained"
    x = torch.randn(9, sae.cfg.d_in)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), scaled_relu_latents(sae, x))
        torch.testing.assert_close(sae(x), sae.encode(x) @ sae.W_dec + sae.b_dec)
    # Folding decoder norms leaves the output unchanged (its own fold_W_dec_norm).
    folded = SAE.load_from_pretrained(str(final))
    folded.fold_W_dec_norm()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), sae(x), atol=1e-5, rtol=1e-5)

    # Evaluated: reconstruction and downstream metrics come out finite and sensible.
    model = load_embedded_hooked_transformer(
        HookedSAETransformer, **sae.cfg.model_from_pretrained_kwargs
    )
    store = ActivationsStore.from_sae(model, sae, store_batch_size_prompts=4)
    eval_cfg = get_eval_everything_config(
        n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=2
    )
    metrics, features = run_evals(sae, store, model, eval_cfg)
    explained = metrics["reconstruction_quality"]["explained_variance"]
    ce_score = metrics["model_performance_preservation"]["ce_loss_score"]
    assert 0.5 < explained <= 1.0  # 0.74 when written
    assert 0.5 < ce_score <= 1.0  # 0.95 when written
    assert features["encoder_bias"] == sae.b_enc.tolist()

    # Spliced: the SAE replaces the hook's activation; with the error term the model's
    # output is unchanged.
    tokens = store.get_batch_tokens()[:2]
    with torch.no_grad():
        clean = model(tokens)
        spliced = model.run_with_saes(tokens, saes=[sae])
        _, cache = model.run_with_cache(tokens, names_filter=sae.cfg.hook_name)
        reconstruction = sae(cache[sae.cfg.hook_name])
        _, spliced_cache = model.run_with_cache_with_saes(
            tokens, saes=[sae], names_filter=f"{sae.cfg.hook_name}.hook_sae_output"
        )
        sae.use_error_term = True
        with_error = model.run_with_saes(tokens, saes=[sae])
    assert not torch.allclose(spliced, clean, atol=1e-3)
    torch.testing.assert_close(
        spliced_cache[f"{sae.cfg.hook_name}.hook_sae_output"], reconstruction
    )
    torch.testing.assert_close(with_error, clean, atol=1e-5, rtol=1e-5)


def test_the_docs_page_shows_this_class() -> None:
    page = (Path(__file__).parents[2] / "docs" / "adding_an_architecture.md").read_text()
    assert inspect.getsource(ScaledReLUArchitecture) in page
