import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sae_lens.sae_training_runner import main, parse_cli_config

TINY_RUN = [
    "--hook_name", "blocks.0.hook_resid_post",
    "--d_sae", "64",
    "--context_size", "32",
    "--train_batch_size_tokens", "64",
    "--training_tokens", str(64 * 12),
    "--store_batch_size_prompts", "4",
    "--n_batches_in_buffer", "4",
    "--b_dec_init_method", "mean",
    "--log_to_wandb", "false",
    "--verbose", "false",
]  # fmt: skip


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import sae_lens.load_model

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(sae_lens.load_model, "load_model", fail)


def test_every_field_is_a_flag() -> None:
    cfg = parse_cli_config(
        [
            "--lr", "0.01",
            "--log_to_wandb", "false",
            "--normalize_sae_decoder", "False",
            "--model_kwargs", '{"prepend_bos": false}',
            "--seqpos_slice", "1", "9",
            "--hook_head_index", "2",
            "--architecture", "topk",
            "--activation_fn_kwargs", '{"k": 8}',
            "--exclude_special_tokens", "[0, 3]",
            "--wandb_id", "myrun",
            "--checkpoint_path", "somewhere",
        ]
    )  # fmt: skip
    assert cfg.lr == 0.01 and cfg.lr_end == pytest.approx(0.001)
    assert cfg.log_to_wandb is False and cfg.normalize_sae_decoder is False
    assert cfg.model_kwargs == {"prepend_bos": False}
    assert cfg.seqpos_slice == (1, 9)
    assert cfg.hook_head_index == 2
    assert (cfg.architecture, cfg.activation_fn, cfg.activation_fn_kwargs) == (
        "topk", "topk", {"k": 8})  # fmt: skip
    assert cfg.exclude_special_tokens == [0, 3]
    assert cfg.checkpoint_path == "somewhere/myrun"
    assert parse_cli_config(["--exclude_special_tokens", "true"]).exclude_special_tokens is True


def test_config_file_values_are_overridden_by_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.05\nd_sae: 256\nl1_coefficient: 2.0\nseqpos_slice: [2, null]\n")
    cfg = parse_cli_config(["--config", str(path), "--lr", "0.001"])
    assert (cfg.lr, cfg.d_sae, cfg.l1_coefficient, cfg.seqpos_slice) == (0.001, 256, 2.0, (2, None))
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"training_tokens": 1000, "tokens_per_buffer": 5}))
    assert parse_cli_config(["--config", str(json_path)]).training_tokens == 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "fast"], "error: argument --lr: expected a number, got 'fast'"),
        (["--architecture", "dense"], "error: argument --architecture: expected one of ['standard', "),
        (["--lr", "-1"], "error: lr must be >= 0, got -1.0"),
        (["--l1_coeficient", "3"], "error: unrecognized arguments: --l1_coeficient 3 (did you mean --l1_coefficient?)"),
        (["--log_to_wandb", "maybe"], "error: argument --log_to_wandb"),
        (["--model_kwargs", "[1]"], "error: argument --model_kwargs: expected a JSON object, got '[1]'"),
        (["--config", "nope.yaml"], "error: --config file 'nope.yaml' does not exist"),
        (["--exclude_special_tokens", '["bos"]'], "error: argument --exclude_special_tokens: expected true or false or a JSON list of integers, got '[\"bos\"]'"),
        (["--exclude_special_tokens", "bos"], "error: argument --exclude_special_tokens: expected true"),
        (["--training_tokens", "4096", "--lr_warm_up_steps", "5"], "error: lr warm-up steps (5) + decay steps (0) exceed the 1 training steps"),
        (["--resume", "true", "--checkpoint_path", "no/such/run"], "error: resume=True but checkpoint_path 'no/such/run' is not a folder"),
    ],
)  # fmt: skip
def test_config_errors_print_one_line_and_exit_non_zero(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], no_model_loading: None
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1


def test_unknown_keys_in_a_config_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_loading: None
) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"lr": 0.1, "learning_rate": 0.1}))
    assert main(["--config", str(path)]) == 2
    assert "has unknown key 'learning_rate'" in capsys.readouterr().err


def test_help_lists_every_field() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sae_lens.sae_training_runner", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for flag in ("--config", "--l1_coefficient", "--resume", "--hook_name", "--model_kwargs",
                 "--exclude_special_tokens", "--checkpoint_path", "--lr_scheduler_name"):  # fmt: skip
        assert flag in result.stdout


def test_cli_trains_on_the_embedded_model_and_resumes_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY_RUN, "--checkpoint_path", str(tmp_path), "--wandb_id", "cli"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "cli"
    assert f"{run_dir / 'final_768'}" in out
    assert f"metrics file:     {run_dir / 'metrics.jsonl'}" in out
    assert f"training curves:  {run_dir / 'training_curves.png'}" in out
    assert (run_dir / "final_768" / "sae_weights.safetensors").is_file()

    assert main(["--config", str(run_dir / "run_config.json"), "--resume", "true"]) == 0
    assert f"{run_dir / 'final_768'}" in capsys.readouterr().out


def test_the_run_config_resumes_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main([*TINY_RUN, "--checkpoint_path", "runs", "--wandb_id", "rel"]) == 0
    run_config = tmp_path / "here" / "runs" / "rel" / "run_config.json"
    assert json.loads(run_config.read_text())["checkpoint_path"] == str(run_config.parent)
    capsys.readouterr()

    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["--config", str(run_config), "--resume", "true"]) == 0
    assert str(run_config.parent / "final_768") in capsys.readouterr().out
    assert list((tmp_path / "elsewhere").iterdir()) == []
