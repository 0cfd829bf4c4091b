"""Helpers of the command-line tests: run a CLI's `main` in-process and check that a mistake
ends as the issue asks: exit code 2, stderr exactly one `error: ...` line naming the culprit
(and the closest valid name), no traceback, and nothing written."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sae_lens import cache_activations_runner, evals, sae_training_runner
from sae_lens.pretokenize_runner import main as pretokenize_main

MAINS: dict[str, Callable[[Sequence[str]], Any]] = {
    "train": sae_training_runner.main,
    "cache": cache_activations_runner.main,
    "pretokenize": pretokenize_main,
    "evals": evals.main,
}

# Small runs on the embedded model and corpus (each CLI's own flags).
TINY_TRAIN = [
    "--hook_name", "blocks.0.hook_resid_post", "--context_size", "16",
    "--train_batch_size_tokens", "32", "--training_tokens", "320",
    "--store_batch_size_prompts", "2", "--n_batches_in_buffer", "4",
    "--b_dec_init_method", "zeros", "--log_to_wandb", "false", "--verbose", "false",
]  # fmt: skip
TINY_CACHE = [
    "--hook_name", "blocks.0.hook_resid_post", "--context_size", "16",
    "--model_batch_size", "2", "--training_tokens", "256", "--buffer_size_gb", "0.0001",
    "--device", "cpu", "--reuse_freed_memory", "false",
]  # fmt: skip
TINY_PRETOKENIZE = [
    "--dataset_path", "texts.jsonl", "--tokenizer_name", "tiny-pydoc-gpt2",
    "--context_size", "16", "--num_proc", "1",
]  # fmt: skip  # texts.jsonl: see the `workdir` fixture
TINY_EVALS = [
    "--batch_size_prompts", "2", "--n_eval_reconstruction_batches", "1",
    "--n_eval_sparsity_variance_batches", "1", "--device", "cpu",
]  # fmt: skip


def run_main(cli: str, argv: Sequence[str]) -> int:
    """The exit code of `cli`'s main on `argv` (evals' main exits on a mistake)."""
    try:
        result = MAINS[cli](list(argv))
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return result if isinstance(result, int) else 0


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory (default output folders land here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAE_LENS_TRACEBACK", raising=False)
    lines = [
        f'{{"text": "def function_{i}(x):\\n    return x * {i} + len(str(x))"}}' for i in range(40)
    ]
    write(tmp_path / "texts.jsonl", "\n".join(lines) + "\n")
    yield tmp_path


@pytest.fixture
def expect_mistake(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """`expect_mistake(cli, argv, *fragments)`: runs the CLI and asserts the mistake's
    outcome; returns the error line."""

    def check(cli: str, argv: Sequence[str], *fragments: str) -> str:
        before = files_under(workdir)
        capsys.readouterr()
        code = run_main(cli, argv)
        err = capsys.readouterr().err
        assert code == 2, f"exit code {code}, stderr: {err}"
        assert "Traceback" not in err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        for fragment in fragments:
            assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
        assert files_under(workdir) == before, "a failed command left files behind"
        assert not any(p.name.startswith("final_") for p in workdir.rglob("*"))
        return lines[0]

    return check


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, also where the tests run on one."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
