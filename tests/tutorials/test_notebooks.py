"""The tutorial notebooks match their builder and run top to bottom without an error,
offline, in a fresh folder, on the kernel of the interpreter running the tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = [
    "training_an_sae.ipynb",
    "loading_and_splicing.ipynb",
    "evaluating_saes.ipynb",
    "transcoders.ipynb",
]


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", TUTORIALS / "build_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_match_their_builder_and_have_no_outputs() -> None:
    builder = _load_builder()
    assert sorted(builder.NOTEBOOKS) == sorted(NOTEBOOKS)
    for name, cells in builder.NOTEBOOKS.items():
        committed = (TUTORIALS / name).read_text()
        assert committed == builder.render(cells), (
            f"tutorials/{name} is out of date: run python tutorials/build_notebooks.py"
        )
        notebook = nbformat.reads(committed, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"tutorials/{name} was committed with outputs"
                )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline(name: str, tmp_path: Path) -> None:
    notebook = nbformat.read(TUTORIALS / name, as_version=4)
    env = {
        **os.environ,
        # The kernel is this interpreter (jupyter_client maps "python" to sys.executable);
        # the package is importable from the checkout even without an install.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MPLBACKEND": "Agg",
        # The notebooks' matrices are small: one thread is as fast, and far faster when the
        # cores are shared with other jobs.
        "OMP_NUM_THREADS": "1",
    }
    client = NotebookClient(notebook, kernel_name="python3", timeout=300)
    # Raises CellExecutionError, with the cell and its traceback, if any cell fails.
    client.execute(env=env, cwd=str(tmp_path))
