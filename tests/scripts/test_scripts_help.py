"""The user scripts: each documents itself with --help, refuses bad input in one line
before loading anything, and the sweep trains, evaluates and tabulates real SAEs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from sae_lens.sae import SAE

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("train_sae.py", ["config", "--dry_run", "sae_lens.sae_training_runner --help"]),
        ("sweep.py", ["--param", "expansion_factor", "l1_coefficient", "--values", "sweep.csv"]),
        ("cache_activations.py", ["--hook_name", "--buffer_size_gb", "--dry_run", "--config"]),
    ],
)
def test_help_describes_the_options(script: str, expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, f"{script} --help does not mention {text!r}"


def test_train_sae_dry_run_resolves_the_file_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("architecture: topk\nd_sae: 256\nlr: 0.001\ntraining_tokens: 8192\n")
    code = _load_script("train_sae").main([str(config), "--lr", "0.002", "--dry_run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "topk SAE, d_in=128 -> d_sae=256" in out
    assert '"lr": 0.002' in out  # the flag overrides the file
    assert '"training_tokens": 8192' in out


def test_train_sae_rejects_an_unknown_field_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("architecure: topk\n")
    code = _load_script("train_sae").main([str(config)])
    assert code == 2
    assert "unknown key 'architecure' (did you mean 'architecture'?)" in capsys.readouterr().err


def test_train_sae_rejects_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = _load_script("train_sae").main(["no_such_config.yaml"])
    assert code == 2
    assert "config file 'no_such_config.yaml' does not exist" in capsys.readouterr().err


def test_sweep_rejects_a_fractional_expansion_factor(capsys: pytest.CaptureFixture[str]) -> None:
    code = _load_script("sweep").main(["--param", "expansion_factor", "--values", "2", "1.5"])
    assert code == 2
    assert "must be positive integers, got 1.5" in capsys.readouterr().err


def test_cache_activations_dry_run_warns_about_whole_shards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        "--dataset_path", "pydoc-corpus", "--model_name", "tiny-pydoc-gpt2",
        "--model_batch_size", "4", "--hook_name", "blocks.0.hook_resid_post",
        "--hook_layer", "0", "--d_in", "128", "--training_tokens", "1000",
        "--context_size", "32", "--buffer_size_gb", "0.001", "--dry_run",
    ]  # fmt: skip
    code = _load_script("cache_activations").main(args)
    out = capsys.readouterr().out
    assert code == 0
    # 1e6 bytes / (128 * 4 bytes) = 1953 tokens, rounded down to batches of 4 * 32 = 1920.
    assert "1 shard(s) of 1,920 tokens" in out
    assert "more than training_tokens" not in out


@pytest.mark.filterwarnings("ignore:This SAE was trained on a model loaded with")
def test_sweep_trains_evaluates_and_writes_the_table(tmp_path: Path) -> None:
    output_dir = tmp_path / "sweep"
    code = _load_script("sweep").main(
        [
            "--param",
            "expansion_factor",
            "--values",
            "1",
            "2",
            "--output_dir",
            str(output_dir),
            "--eval_batches",
            "1",
            "--eval_batch_size_prompts",
            "4",
            "--hook_name",
            "blocks.1.hook_resid_pre",
            "--hook_layer",
            "1",
            "--architecture",
            "topk",
            "--activation_fn_kwargs",
            '{"k": 8}',
            "--training_tokens",
            "2048",
            "--train_batch_size_tokens",
            "256",
            "--context_size",
            "32",
            "--store_batch_size_prompts",
            "4",
            "--n_batches_in_buffer",
            "4",
            "--b_dec_init_method",
            "zeros",
            "--log_to_wandb",
            "false",
            "--verbose",
            "false",
        ]  # fmt: skip
    )
    assert code == 0
    table = pd.read_csv(output_dir / "sweep.csv")
    assert table["value"].tolist() == [1.0, 2.0]
    assert table["d_sae"].tolist() == [128, 256]  # d_in * expansion_factor
    # TopK keeps exactly k latents per token; no ignored position changes that.
    assert table["l0"].tolist() == pytest.approx([8.0, 8.0])
    assert table["explained_variance"].le(1.0).all()
    assert table["ce_loss_score"].notna().all()
    for folder, d_sae in zip(table["sae_folder"], table["d_sae"], strict=True):
        sae = SAE.load_from_pretrained(folder)
        assert sae.cfg.d_sae == d_sae and sae.cfg.architecture == "topk"
    markdown = (output_dir / "sweep.md").read_text().splitlines()
    assert markdown[0].startswith("| param | value | architecture | d_sae | l0 |")
    assert len(markdown) == 2 + len(table)
