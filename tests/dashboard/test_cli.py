"""`python -m sae_lens.dashboard` on a local SAE folder with the embedded model and corpus:
what it writes, `--config` and flag overrides, and mistakes as one `error:` line with exit
code 2 and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sae_lens.dashboard import DashboardData
from sae_lens.dashboard.cli import main, parse_features
from tests.dashboard.conftest import random_sae

SMALL = ["--n_tokens", "400", "--batch_size_prompts", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saes") / "my_sae"
    random_sae(128, 64, seed=4).save_model(str(folder))
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAE_LENS_TRACEBACK", raising=False)
    return tmp_path


def test_writes_the_page_the_data_and_the_neuronpedia_batches(sae_folder, workdir, capsys):
    out = workdir / "dash"
    code = main(
        ["--sae_path", str(sae_folder), "--features", "0:4,9", "--output_dir", str(out), *SMALL]
    )
    assert code == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "dashboard.json",
        "index.html",
        "neuronpedia/batch-0.json",
    ]
    data = DashboardData.load_json(out / "dashboard.json")
    assert data.indices == [0, 1, 2, 3, 9]
    assert (data.model_name, data.hook_name, data.dataset) == (
        "tiny-pydoc-gpt2",
        "blocks.0.hook_resid_post",
        "pydoc-corpus",
    )
    # 25 sequences of 16 tokens, each starting with BOS (left out, as EOS separators are)
    assert data.sae_name == "my_sae" and 300 < data.n_tokens <= 400 - 25
    assert "dashboards of 5 latents" in capsys.readouterr().out
    assert "Latent 9 \u00b7 top activations" in (out / "index.html").read_text().replace(
        "&middot;", "\u00b7"
    )


def test_config_file_and_flags_override_it(sae_folder, workdir):
    config = workdir / "dash.yaml"
    config.write_text(
        f"sae_path: {sae_folder}\nfeatures: '2,5'\nn_tokens: 2e2\nn_top_examples: 3\n"
        "context_size: 8\nneuronpedia: false\n"
    )
    code = main(
        ["--config", str(config), "--n_top_examples", "2", "--output_dir", "out", "--device", "cpu"]
    )
    assert code == 0
    data = DashboardData.load_json(workdir / "out" / "dashboard.json")
    assert data.indices == [2, 5] and data.context_size == 8
    assert data.settings["n_top_examples"] == 2 and data.settings["n_tokens"] == 200
    assert all(len(latent.top_examples) <= 2 for latent in data.latents)
    assert not (workdir / "out" / "neuronpedia").exists()


def test_an_sae_from_a_release_and_an_id(sae_folder, workdir):
    release = str(sae_folder.parent)  # a local release: the SAE id is the folder under it
    argv = ["--release", release, "--sae_id", "my_sae", "--features", "1", "--output_dir", "out"]
    assert main([*argv, *SMALL, "--no-neuronpedia"]) == 0
    data = DashboardData.load_json(workdir / "out" / "dashboard.json")
    assert data.sae_name == f"{release}/my_sae" and data.indices == [1]


def test_all_latents_split_over_pages(sae_folder, workdir):
    argv = ["--sae_path", str(sae_folder), "--features", "all", "--latents_per_page", "30"]
    assert main([*argv, "--output_dir", "out", "--n_tokens", "64", "--device", "cpu"]) == 0
    data = DashboardData.load_json(workdir / "out" / "dashboard.json")
    assert data.indices == list(range(64))
    pages = sorted(p.name for p in (workdir / "out").glob("*.html"))
    assert pages == ["index.html", "page-2.html", "page-3.html"]
    assert 'href="page-3.html#latent-63"' in (workdir / "out" / "index.html").read_text()


def test_feature_specs():
    assert parse_features("0:4") == [0, 1, 2, 3]
    assert parse_features("0:8:3, 10,12:14") == [0, 3, 6, 10, 12, 13]
    assert parse_features("all") is None  # every latent of the SAE


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--sae_path", "no_such_sae"], "--sae_path 'no_such_sae' does not exist"),
        (["--sae_path", "{sae}", "--features", "0:65"], "feature index 64 is out of range: this SAE has d_sae=64"),
        (["--sae_path", "{sae}", "--features", "0-16"], "--features '0-16' is not understood at '0-16'"),
        (["--sae_path", "{sae}", "--features", "5:2"], "--features range '5:2' is empty"),
        ([], "give --sae_path FOLDER, or --release and --sae_id"),
        (["--release", "gpt2-small-res-jb"], "give --sae_path FOLDER, or --release and --sae_id"),
        (["--release", "gpt2-small-res-jbb", "--sae_id", "x"], "gpt2-small-res-jb"),
        (["--sae_path", "{sae}", "--release", "gpt2-small-res-jb"], "not both"),
        (["--sae_path", "{sae}", "--n_token", "5"], "did you mean --n_tokens"),
        (["--sae_path", "{sae}", "--n_histogram_bins", "7"], "n_histogram_bins must be even, got 7"),
        (["--sae_path", "{sae}", "--n_tokens", "lots"], "expected an integer, got 'lots'"),
        (["--sae_path", "{sae}", "--hook_name", "blocks.0.hook_resid_pots"], "blocks.0.hook_resid_post"),
        (["--sae_path", "{sae}", "--device", "cuda:7"], "cuda:7"),
        (["--sae_path", "{sae}", "--model_name", "tiny-pydoc-gtp2"], "did you mean 'tiny-pydoc-gpt2'?"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_with_exit_code_2_and_nothing_written(
    sae_folder, workdir, capsys, argv, fragment
):
    argv = [a.replace("{sae}", str(sae_folder)) for a in argv]
    code = main([*argv, "--output_dir", "out", "--n_tokens", "64", *argv[len(argv) :]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert fragment in err
    assert not (workdir / "out").exists()


def test_a_folder_without_an_sae_is_named(workdir, capsys):
    (workdir / "empty").mkdir()
    assert main(["--sae_path", "empty", "--output_dir", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "empty" in err and "\n" not in err


def test_the_module_runs_as_a_command(workdir):
    done = subprocess.run(
        [sys.executable, "-m", "sae_lens.dashboard", "--sae_path", "missing_folder"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --sae_path 'missing_folder' does not exist"
    assert json.dumps(done.stdout) == '""'


def test_the_python_api_names_a_missing_folder(workdir):
    from sae_lens.dashboard import load_sae

    with pytest.raises(FileNotFoundError, match="SAE folder 'nowhere' does not exist"):
        load_sae("nowhere")
    with pytest.raises(ValueError, match="give an SAE folder"):
        load_sae(release="gpt2-small-res-jb")
