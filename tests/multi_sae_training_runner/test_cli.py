"""`python -m sae_lens.multi_sae_training_runner`: the YAML example of docs/multi_sae.md
trains (with a few thousand tokens), every flag is described, and a mistake is one line."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from sae_lens.multi_sae_training_runner import build_cli_parser, main
from sae_lens.sae import SAE
from tests.sae_training_runner.runner_helpers import signal_at_batch

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--training_tokens", "2048", "--train_batch_size_tokens", "256", "--context_size", "32",
    "--store_batch_size_prompts", "4", "--n_batches_in_buffer", "4", "--n_eval_batches", "2",
    "--log_to_wandb", "false", "--verbose", "false",
]  # fmt: skip


def docs_yaml() -> str:
    page = (ROOT / "docs" / "multi_sae.md").read_text()
    return re.search(r"```yaml\n(.*?)```", page, re.S).group(1)  # type: ignore[union-attr]


def test_the_docs_yaml_example_trains_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "multi.yaml"
    config.write_text(docs_yaml())
    runs = tmp_path / "runs"
    assert main(["--config", str(config), *SMALL, "--checkpoint_path", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    assert (run_dir / "run_config.json").is_file()
    out = capsys.readouterr().out
    for name, hook, k in [
        ("resid0_k16", "blocks.0.hook_resid_post", 16),
        ("resid0_k32", "blocks.0.hook_resid_post", 32),
        ("mlp1_std", "blocks.1.hook_mlp_out", None),
    ]:
        final = run_dir / name / "final_2048"
        assert f"{name}: " in out and str(final) in out
        sae = SAE.load_from_pretrained(str(final))
        assert (sae.cfg.hook_name, sae.cfg.d_sae) == (hook, 512)
        if k is not None:
            assert sae.cfg.activation_fn_kwargs == {"k": k}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: no SAEs: give `saes:` in the --config file"),
        (["--saes", '{"a": {"d_sea": 3}}'], "error: SAE 'a' sets 'd_sea', which is not"),
        (["--saes", '{"a": {"seed": 3}}'], "error: SAE 'a' sets 'seed', which every SAE"),
        (["--saes", "{nope"], "error: argument --saes: not a JSON object"),
        (
            ["--saes", '{"a": {"hook_name": "blocks.*.hook_rsid_post"}}'],
            "error: SAE 'a': no hook point of the model matches",
        ),
    ],
)
def test_mistakes_exit_2_with_one_line_and_leave_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    runs = tmp_path / "runs"
    assert main([*SMALL, "--checkpoint_path", str(runs), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not runs.exists()


def test_every_flag_is_described_and_help_names_the_module(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_cli_parser()
    blank = [a.dest for a in parser.recorded if not (a.help or "").split("(default:")[0].strip()]
    assert not blank
    assert {"--saes", "--config", "--hook_name", "--training_tokens"} <= set(parser.flag_names)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m sae_lens.multi_sae_training_runner ")
    assert "mapping from each SAE's name to the fields it sets" in " ".join(out.split())


def test_an_interrupted_run_says_how_to_resume_and_that_command_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    saes = '{"r": {"hook_name": "blocks.*.hook_resid_post", "d_sae": 32}}'
    args = [*SMALL, "--checkpoint_path", str(tmp_path / "runs"), "--saes", saes]
    with signal_at_batch(monkeypatch, 5, signals=(signal.SIGTERM,)):
        assert main(args) == 130
    err = capsys.readouterr().err
    resume = err.split("resume with: ")[1].split()
    assert resume[:4] == ["python", "-m", "sae_lens.multi_sae_training_runner", "--config"]
    assert main(resume[3:]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    for name in ("r_0", "r_1"):
        assert (run_dir / name / "final_2048" / "sae_weights.safetensors").is_file()
        assert (run_dir / name / "768").is_dir()  # the checkpoint written at the stop


def test_a_missing_cache_or_pretrained_folder_is_named_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cach"
    (tmp_path / "cache").mkdir()
    saes = '{"a": {"hook_name": "blocks.0.hook_resid_post"}}'
    args = [*SMALL, "--saes", saes, "--use_cached_activations", "true"]
    assert main([*args, "--cached_activations_path", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: SAE 'a': cached_activations_path") and "'cache'" in err
    saes = f'{{"a": {{"from_pretrained_path": "{tmp_path / "nope"}"}}}}'
    assert main([*SMALL, "--saes", saes]) == 2
    assert capsys.readouterr().err.startswith("error: SAE 'a': from_pretrained_path")
