"""`python -m sae_lens.evals` end to end on the embedded model and corpus with a local SAE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from sae_lens.evals import main

HOOK = "blocks.0.hook_resid_post"
CTX = 16
BATCH = 2


def strict_json(text: str) -> object:
    """Parse JSON refusing NaN/Infinity, which are not valid JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def sae_folder(tmp_path, make_sae, embedded_model) -> Path:
    sae = make_sae(
        HOOK,
        d_in=embedded_model.cfg.d_model,
        d_sae=64,
        model_name="tiny-pydoc-gpt2",
        dataset_path="pydoc-corpus",
        context_size=CTX,
    )
    folder = tmp_path / "my_sae"
    sae.save_model(folder)
    return folder


def run_cli(*args: str) -> dict:
    common = ["--ctx_lens", str(CTX), "--batch_size_prompts", str(BATCH), "--device", "cpu"]
    common += ["--n_eval_reconstruction_batches", "1", "--n_eval_sparsity_variance_batches", "1"]
    return main([*args, *common])


def test_cli_evaluates_a_local_sae_folder_and_writes_csv_json_and_report(tmp_path, sae_folder):
    from sae_lens.load_model import load_model
    from sae_lens.sae import SAE
    from sae_lens.training.activations_store import ActivationsStore

    out = tmp_path / "results"
    files = run_cli(str(sae_folder), "--output_dir", str(out), "--plots")

    table = pd.read_csv(files["csv"])
    assert len(table) == 1
    metric_columns = {c.removeprefix("metrics.") for c in table.columns if c.startswith("metrics.")}
    assert metric_columns == {
        "model_behavior_preservation.kl_div_score",
        "model_behavior_preservation.kl_div_with_ablation",
        "model_behavior_preservation.kl_div_with_sae",
        "model_performance_preservation.ce_loss_score",
        "model_performance_preservation.ce_loss_with_ablation",
        "model_performance_preservation.ce_loss_with_sae",
        "model_performance_preservation.ce_loss_without_sae",
        "reconstruction_quality.explained_variance",
        "reconstruction_quality.explained_variance_legacy",
        "reconstruction_quality.mse",
        "reconstruction_quality.cossim",
        "shrinkage.l2_norm_in",
        "shrinkage.l2_norm_out",
        "shrinkage.l2_ratio",
        "shrinkage.relative_reconstruction_bias",
        "sparsity.l0",
        "sparsity.l1",
        "token_stats.total_tokens_eval_reconstruction",
        "token_stats.total_tokens_eval_sparsity_variance",
    }
    row = table.iloc[0]
    assert row["sae_set"] == "local" and row["sae_id"] == str(sae_folder)
    assert row["eval_cfg.dataset"] == "pydoc-corpus" and row["eval_cfg.context_size"] == CTX
    assert row["sae_cfg.hook_name"] == HOOK

    combined = strict_json(Path(files["combined_json"]).read_text())
    assert isinstance(combined, list) and len(combined) == 1
    [individual] = files["individual_jsons"]
    assert strict_json(Path(individual).read_text()) == combined[0]
    assert len(combined[0]["feature_metrics"]["feature_density"]) == 64
    assert (out / "index.html").is_file() and len(list(out.glob("*.png"))) == 1

    # The same batches computed directly: CE of the model on the first (the reconstruction
    # pass), L0 of the SAE on the second (the sparsity pass reads on), both leaving out the
    # BOS/EOS/pad token positions as the command line does.
    model = load_model("HookedTransformer", "tiny-pydoc-gpt2", device="cpu")
    sae = SAE.load_from_pretrained(str(sae_folder))
    store = ActivationsStore.from_sae(
        model, sae, context_size=CTX, dataset="pydoc-corpus", store_batch_size_prompts=BATCH
    )
    store.shuffle_input_dataset(seed=42)
    special = torch.tensor(sorted({model.tokenizer.bos_token_id, model.tokenizer.eos_token_id}))
    first, second = store.get_batch_tokens(BATCH), store.get_batch_tokens(BATCH)
    kept_first, kept_second = ~torch.isin(first, special), ~torch.isin(second, special)
    assert not kept_first.all()  # the BOS token really is left out
    with torch.no_grad():
        logits = model(first)
        nll = -logits.log_softmax(-1)[:, :-1].gather(-1, first[:, 1:, None])[..., 0]
        acts = model.run_with_cache(second, names_filter=HOOK)[1][HOOK]
        latents = torch.relu((acts - sae.b_dec) @ sae.W_enc + sae.b_enc)
    assert row["metrics.model_performance_preservation.ce_loss_without_sae"] == pytest.approx(
        nll[kept_first[:, :-1]].mean().item(), rel=1e-5
    )
    assert row["metrics.sparsity.l0"] == pytest.approx(
        (latents > 0).sum(-1)[kept_second].float().mean().item(), rel=1e-6
    )


def test_metric_flags_select_what_is_computed(tmp_path, sae_folder):
    files = run_cli(
        "--sae_paths", str(sae_folder), "--output_dir", str(tmp_path), "--compute_sparsity_metrics"
    )
    result = strict_json(Path(files["combined_json"]).read_text())[0]
    assert set(result["metrics"]) == {"sparsity", "token_stats"}
    assert result["feature_metrics"] == {}
    assert result["eval_cfg"]["compute_kl"] is False


def test_cli_needs_something_to_evaluate(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: give SAE_REGEX and BLOCK_REGEX, an SAE folder, or --sae_paths\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["--sae_paths", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith("nowhere' does not exist\n")


def test_help_documents_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "sae_lens.evals", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for flag in ("sae_regex_pattern", "--sae_paths", "--datasets", "--ctx_lens", "--plots"):
        assert flag in result.stdout


def test_the_cli_does_not_warn_about_how_to_load_the_model(
    tmp_path, make_sae, embedded_model, recwarn
):
    # The SAE says to load its model with its kwargs; the evals command does exactly that,
    # so the warning would only mislead there. Python users still get it.
    sae = make_sae(
        HOOK,
        d_in=embedded_model.cfg.d_model,
        d_sae=64,
        model_name="tiny-pydoc-gpt2",
        dataset_path="pydoc-corpus",
        context_size=CTX,
        model_from_pretrained_kwargs={"center_writing_weights": False},
    )
    sae.save_model(tmp_path / "sae")
    recwarn.clear()  # building the SAE above warned, as it should
    run_cli(str(tmp_path / "sae"), "--output_dir", str(tmp_path / "out"))
    assert not [w for w in recwarn if "This SAE was trained on a model" in str(w.message)]
    from sae_lens.sae import SAE

    with pytest.warns(UserWarning, match="This SAE was trained on a model loaded"):
        SAE.load_from_pretrained(str(tmp_path / "sae"))
