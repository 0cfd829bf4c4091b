"""`python -m sae_lens.evals`: mistakes are one line and exit code 2 with no result written;
an SAE trained through the Hugging Face path (hooks are module paths) is evaluated with its
own model class and context length, and the command says what it used."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.evals.conftest import build_sae

from .conftest import TINY_EVALS, run_main, write

HOOK = "blocks.0.hook_resid_post"


def save_sae(folder: Path, hook_name: str = HOOK, d_in: int = 128) -> Path:
    sae = build_sae(
        hook_name, d_in=d_in, d_sae=32, model_name="tiny-pydoc-gpt2",
        dataset_path="pydoc-corpus", context_size=16,
    )  # fmt: skip
    sae.save_model(folder)
    return folder


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["./no_sae"], ["SAE folder './no_sae' does not exist"]),
        (["--sae_paths", "my_sea"], ["SAE folder 'my_sea' does not exist (did you mean 'my_sae'?)"]),
        (["my_sae", "--output_dir", "taken.txt"], ["--output_dir 'taken.txt' is a file"]),
        (["my_sae", "--datasets", "./none.jsonl"], ["'./none.jsonl' does not exist"]),
        (["my_sae", "--ctx_lens", "0"], ["--ctx_lens must be at least 1, got 0"]),
        (["my_sae", "--batch_size_prompts", "0"], ["--batch_size_prompts must be at least 1, got 0"]),
        (["my_sae", "--batch_size_prompt", "4"], ["(did you mean --batch_size_prompts?)"]),
        (["my_sae", "--model_class_name", "AutoModel"], ["argument --model_class_name", "'AutoModel'"]),
        (["gpt2-smal-res-jb"], ["No SAEs matched", "(did you mean 'gpt2-small-res-jb'?)"]),
        (["my_sae", "--datasets", "empty.jsonl"], ["'empty.jsonl' is empty"]),
    ],
)  # fmt: skip
def test_evals_mistakes_found_before_loading(
    argv: list[str], fragments: list[str], workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    save_sae(workdir / "my_sae")
    write(workdir / "taken.txt", "a file")
    write(workdir / "empty.jsonl", "")
    expect_mistake("evals", [*TINY_EVALS, *argv], *fragments)


def test_evals_on_a_device_this_machine_lacks(
    without_cuda: None, workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    save_sae(workdir / "my_sae")
    expect_mistake("evals", ["my_sae", *TINY_EVALS, "--device", "cuda"], "device 'cuda'")


@pytest.mark.parametrize(
    ("cfg_text", "fragment"),
    [("{", "cfg.json"), (None, "has no cfg.json")],
)
def test_a_corrupt_or_empty_sae_folder(
    cfg_text: str | None, fragment: str, workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    (workdir / "broken").mkdir()
    if cfg_text is not None:
        write(workdir / "broken" / "cfg.json", cfg_text)
    expect_mistake("evals", ["broken", *TINY_EVALS], fragment)


def test_an_sae_whose_hook_the_model_lacks(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    save_sae(workdir / "my_sae", hook_name="blocks.0.hook_resid_pots")
    expect_mistake(
        "evals", ["my_sae", *TINY_EVALS], "'blocks.0.hook_resid_pots'",
        "(did you mean 'blocks.0.hook_resid_post'?)",
    )  # fmt: skip


def test_an_sae_whose_d_in_is_not_the_hook_width(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    save_sae(workdir / "my_sae", d_in=64)
    expect_mistake("evals", ["my_sae", *TINY_EVALS], "d_in=64", "whose width is 128")


@pytest.fixture(scope="module")
def hf_gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 built from a config (random weights), with the embedded tokenizer,
    saved as a Hugging Face model folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from sae_lens.embedded import load_embedded_tokenizer

    folder = tmp_path_factory.mktemp("hf_gpt2")
    tokenizer = load_embedded_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_evals_an_sae_trained_through_the_hugging_face_path(
    hf_gpt2_folder: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sae_lens.evals import main as evals_main
    from sae_lens.load_model import load_model
    from sae_lens.sae import SAE
    from sae_lens.training.activations_store import ActivationsStore

    context, batch = 24, 2
    trained = run_main(
        "train",
        [
            "--model_class_name", "AutoModelForCausalLM", "--model_name", str(hf_gpt2_folder),
            "--hook_name", "transformer.h.1.mlp", "--hook_layer", "1", "--d_in", "32",
            "--d_sae", "64", "--context_size", str(context), "--training_tokens", "480",
            "--train_batch_size_tokens", "48", "--store_batch_size_prompts", "2",
            "--n_batches_in_buffer", "4", "--b_dec_init_method", "mean",
            "--log_to_wandb", "false", "--checkpoint_path", "runs", "--wandb_id", "hf",
        ],
    )  # fmt: skip
    assert trained == 0
    sae_folder = workdir / "runs" / "hf" / "final_480"
    capsys.readouterr()

    files = evals_main(
        [
            str(sae_folder),
            "--output_dir",
            "results",
            "--batch_size_prompts",
            str(batch),
            "--n_eval_reconstruction_batches",
            "1",
            "--n_eval_sparsity_variance_batches",
            "2",
            "--device",
            "cpu",
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    [result] = json.loads(Path(files["combined_json"]).read_text())
    # the SAE's own context length and model class, said on the command line
    assert result["eval_cfg"]["context_size"] == context
    assert result["eval_cfg"]["model_class_name"] == "AutoModelForCausalLM"
    assert (
        f"on pydoc-corpus: context {context} (the SAE’s context_size), model {hf_gpt2_folder} "
        f"as AutoModelForCausalLM; sparsity and feature density over 2 batches x {batch} "
        f"prompts = {2 * batch * context:,} tokens"
    ) in out
    metrics = result["metrics"]
    values = [v for group in metrics.values() for v in group.values()]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    assert len(result["feature_metrics"]["feature_density"]) == 64

    # CE loss without the SAE is the Hugging Face model's own, on the first batch of the
    # evaluation's token stream, BOS/EOS positions left out
    model = load_model("AutoModelForCausalLM", str(hf_gpt2_folder), device="cpu")
    sae = SAE.load_from_pretrained(str(sae_folder))
    store = ActivationsStore.from_sae(
        model, sae, context_size=context, dataset="pydoc-corpus", store_batch_size_prompts=batch
    )
    store.shuffle_input_dataset(seed=42)
    tokens = store.get_batch_tokens(batch)
    special = torch.tensor(sorted({model.tokenizer.bos_token_id, model.tokenizer.eos_token_id}))
    kept = ~torch.isin(tokens, special)[:, :-1]  # positions whose prediction counts
    with torch.no_grad():
        nll = -model(tokens).log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    expected = nll[kept].mean().item()
    ce = metrics["model_performance_preservation"]["ce_loss_without_sae"]
    assert ce == pytest.approx(expected, rel=1e-5)
