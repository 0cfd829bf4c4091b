"""The worked Hugging Face example of docs/training.md runs as written: its Python blocks
execute, and its command line trains and saves an SAE through the CLI's `main`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sae_lens.sae import SAE
from sae_lens.sae_training_runner import main

TRAINING_PAGE = Path(__file__).resolve().parents[2] / "docs" / "training.md"
SECTION = "## Training on a Hugging Face model"


def _section_blocks(language: str) -> list[str]:
    """The fenced code blocks of `language` in the Hugging Face section of the page."""
    page = TRAINING_PAGE.read_text()
    assert SECTION in page, f"{TRAINING_PAGE} has no section {SECTION!r}"
    section = page.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def _final_sae_folder(checkpoint_path: Path) -> Path:
    (folder,) = checkpoint_path.glob("*/final_*")
    return folder


def test_the_python_examples_run_and_train_an_sae_on_the_module_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _section_blocks("python")
    assert len(blocks) == 2
    listing: dict[str, object] = {}
    exec(compile(blocks[0], "training.md: hook listing", "exec"), listing)
    assert listing["model"].blocks_path == "transformer.h"  # type: ignore[attr-defined]
    training: dict[str, object] = {}
    exec(compile(blocks[1], "training.md: training example", "exec"), training)
    sae = SAE.load_from_pretrained(str(_final_sae_folder(tmp_path / "checkpoints" / "hf")))
    assert (sae.cfg.hook_name, sae.cfg.hook_layer, sae.cfg.d_sae) == ("transformer.h.1.mlp", 1, 512)


def test_the_command_line_example_trains_an_sae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (command,) = _section_blocks("bash")
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "sae_lens.sae_training_runner"]
    assert main(argv[3:]) == 0
    sae = SAE.load_from_pretrained(str(_final_sae_folder(tmp_path / "checkpoints" / "hf")))
    assert sae.cfg.hook_name == "transformer.h.1.mlp"
    assert sae.cfg.model_name == "tiny-pydoc-gpt2"
