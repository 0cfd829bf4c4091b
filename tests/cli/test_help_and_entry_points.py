"""Every command line describes every flag in `--help` and names itself as it is run; the
real entry points (`python -m ...`) print one line and no traceback for a mistake."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sae_lens import cache_activations_runner, evals, sae_training_runner
from sae_lens.cli_support import CommandLineParser
from sae_lens.config import (
    CacheActivationsRunnerConfig,
    LanguageModelSAERunnerConfig,
    PretokenizeRunnerConfig,
)
from sae_lens.pretokenize_runner import build_cli_parser as pretokenize_parser

from .conftest import run_main, write

PARSERS: dict[str, tuple[str, Callable[[], CommandLineParser], type | None]] = {
    "train": ("sae_training_runner", sae_training_runner.build_cli_parser, LanguageModelSAERunnerConfig),
    "cache": ("cache_activations_runner", cache_activations_runner.build_cli_parser, CacheActivationsRunnerConfig),
    "pretokenize": ("pretokenize_runner", pretokenize_parser, PretokenizeRunnerConfig),
    "evals": ("evals", evals.build_arg_parser, None),
}  # fmt: skip


def _description(action: argparse.Action) -> str:
    """The help text of a flag without its "(default: ...)"."""
    return re.sub(r"\(default: .*\)\.?$", "", action.help or "").strip()


@pytest.mark.parametrize("cli", PARSERS)
def test_every_flag_is_described(cli: str) -> None:
    _, build, config_cls = PARSERS[cli]
    parser = build()
    blank = [
        "/".join(action.option_strings) or action.dest
        for action in parser.recorded
        if not _description(action)
    ]
    assert not blank, f"flags of {cli} without a description: {blank}"
    if config_cls is not None:  # one flag per config field, and --config
        from dataclasses import fields

        flags = set(parser.flag_names)
        assert {f"--{f.name}" for f in fields(config_cls)} | {"--config"} <= flags


@pytest.mark.parametrize("cli", PARSERS)
def test_help_names_the_module_and_shows_every_description(
    cli: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module, build, _ = PARSERS[cli]
    assert run_main(cli, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m sae_lens.{module} ")
    for action in build().recorded:
        first_words = " ".join(_description(action).split()[:3])
        assert first_words in " ".join(out.split()), f"{cli}: {action.dest} not described"


def _start_module(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"sae_lens.{module}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def test_the_real_entry_points_print_one_line_and_no_traceback(tmp_path: Path) -> None:
    write(tmp_path / "run.yaml", "lr: 0.001\nhook_name: [blocks.0\n")
    # both at once: most of their time is importing torch and transformers
    train = _start_module("sae_training_runner", "--config", "run.yaml", cwd=tmp_path)
    evaluate = _start_module("evals", "./missing_sae", "--output_dir", "out", cwd=tmp_path)
    _, train_err = train.communicate(timeout=180)
    _, evals_err = evaluate.communicate(timeout=180)
    assert train.returncode == 2
    assert train_err == (
        "error: --config file 'run.yaml' is not valid YAML: line 3, column 1: expected ',' "
        "or ']', but got '<stream end>'\n"
    )
    assert evaluate.returncode == 2
    assert evals_err == "error: SAE folder './missing_sae' does not exist\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]
