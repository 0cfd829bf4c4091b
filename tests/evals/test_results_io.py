"""Writing eval results (JSON, CSV, report page), nested-dict helpers, registry matching."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sae_lens.eval_reports import plot_feature_density_histogram, write_eval_report
from sae_lens.evals import (
    dict_to_nested,
    get_git_hash,
    get_library_version,
    get_saes_from_regex,
    nested_dict,
    process_results,
    replace_nans_with_negative_one,
)


def fake_result(unique_id: str, dataset: str, l0: float, density: list[float]) -> dict:
    return {
        "unique_id": unique_id,
        "sae_set": unique_id.split("-")[0],
        "sae_id": unique_id.split("-", 1)[1],
        "eval_cfg": {"context_size": 16, "dataset": dataset, "git_hash": "abc"},
        "metrics": {
            "sparsity": {"l0": l0, "l1": math.nan},
            "model_performance_preservation": {"ce_loss_score": 0.75},
        },
        "feature_metrics": {"feature_density": density},
        "sae_cfg": {"d_sae": len(density), "hook_name": "blocks.0.hook_resid_pre"},
    }


def test_replace_nans_with_negative_one_reaches_into_nesting():
    data = {"a": [1.0, math.nan, {"b": math.nan}], "c": "x", "d": 2}
    assert replace_nans_with_negative_one(data) == {"a": [1.0, -1, {"b": -1}], "c": "x", "d": 2}
    assert math.isnan(data["a"][1])  # the input is left alone


def test_dict_to_nested_splits_on_slashes():
    nested = dict_to_nested({"a/b/c": 1, "a/d": 2, "e": 3})
    assert json.loads(json.dumps(nested)) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}
    auto = nested_dict()
    auto["x"]["y"]["z"] = 1
    assert auto == {"x": {"y": {"z": 1}}}


def test_process_results_writes_json_and_a_flat_csv(tmp_path):
    results = [
        fake_result("local-sae/one", "pydoc-corpus", 3.5, [0.1, 0.0]),
        fake_result("local-sae/two", "org/data", 7.0, [0.2, 0.3]),
    ]
    files = process_results(results, str(tmp_path))

    individual = sorted(p.name for p in files["individual_jsons"])
    assert individual == [
        "local-sae_one_16_pydoc-corpus.json",
        "local-sae_two_16_org_data.json",
    ]
    combined = json.loads(Path(files["combined_json"]).read_text())
    assert combined[0]["metrics"]["sparsity"] == {"l0": 3.5, "l1": -1}
    assert combined[1]["feature_metrics"]["feature_density"] == [0.2, 0.3]
    one = json.loads((tmp_path / "local-sae_one_16_pydoc-corpus.json").read_text())
    assert one == combined[0]

    table = pd.read_csv(files["csv"])
    assert len(table) == 2
    assert list(table["metrics.sparsity.l0"]) == [3.5, 7.0]
    assert list(table["metrics.sparsity.l1"]) == [-1, -1]
    assert list(table["eval_cfg.dataset"]) == ["pydoc-corpus", "org/data"]
    assert "sae_cfg.hook_name" in table.columns
    assert not [c for c in table.columns if c.startswith("feature_metrics")]


def test_report_has_a_table_and_one_histogram_per_result(tmp_path):
    results = [
        fake_result("local-a", "pydoc-corpus", 3.5, [0.1, 0.0, 0.02, -1]),
        fake_result("local-<b>", "pydoc-corpus", 1.0, []),
    ]
    index = write_eval_report(results, tmp_path)
    page = index.read_text()
    images = sorted(tmp_path.glob("*.png"))
    assert len(images) == 1  # the second result has no densities
    assert images[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f'src="{images[0].name}"' in page
    assert "<th>sparsity.l0</th>" in page and "<td>3.5</td>" in page
    assert "local-&lt;b&gt;" in page and "local-<b>" not in page


def test_histogram_counts_dead_latents(tmp_path):
    path = plot_feature_density_histogram([0.5, 0.0, math.nan, 1e-3], tmp_path / "h.png", "t")
    assert path.stat().st_size > 1000


def test_registry_regexes_match_release_and_id_fully():
    matches = get_saes_from_regex("gpt2-small-res-jb", r"blocks\.[78]\.hook_resid_pre")
    assert [(release, sae_id) for release, sae_id, _, _ in matches] == [
        ("gpt2-small-res-jb", "blocks.7.hook_resid_pre"),
        ("gpt2-small-res-jb", "blocks.8.hook_resid_pre"),
    ]
    assert get_saes_from_regex("gpt2-small-res", r"blocks\.8\.hook_resid_pre") == []


def test_versions_are_reported():
    from sae_lens import __version__

    assert get_library_version() == __version__
    checkout = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pytest.skip("git is not installed")
    assert get_git_hash() == (head or "unknown")


def test_importing_the_evals_runs_no_program() -> None:
    script = (
        "import subprocess\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError(f'a program was run: {args}')\n"
        "subprocess.Popen.__init__ = refuse\n"
        "import sae_lens.evals\n"
        "print(sae_lens.evals.EvalConfig().git_hash)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == get_git_hash()


@pytest.mark.parametrize("layout", ["loose", "packed", "detached", "worktree"])
def test_the_commit_is_read_from_the_git_files(tmp_path: Path, layout: str) -> None:
    from sae_lens.eval_metrics import _git_dir, _head_commit

    def git(*args: str, cwd: Path = tmp_path / "repo") -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    (tmp_path / "repo").mkdir()
    try:
        git("init", "-q")
    except OSError:
        pytest.skip("git is not installed")
    (tmp_path / "repo" / "f").write_text("x")
    git("add", "f")
    git("commit", "-q", "-m", "one")
    checkout = tmp_path / "repo"
    if layout == "packed":
        git("pack-refs", "--all")
    elif layout == "detached":
        git("checkout", "-q", "--detach")
    elif layout == "worktree":
        git("worktree", "add", "-q", str(tmp_path / "wt"))
        checkout = tmp_path / "wt"
    git_dir = _git_dir(checkout)
    assert git_dir is not None
    assert _head_commit(git_dir) == git("rev-parse", "HEAD", cwd=checkout)
    assert _git_dir(tmp_path) is None
