"""Multi-SAE runs under torchrun (2 CPU processes): data parallel, and `distribute_saes`
(each SAE trained by one process on the rows gathered from both)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from sae_lens.training import checkpoints
from sae_lens.training.distributed_saes import assign_owners
from tests.distributed.test_torchrun_runs import (
    final_weights,
    kill_tree,
    only_run_folder,
    run,
    torchrun,
)

SAES = {
    "resid0_k8": {
        "hook_name": "blocks.0.hook_resid_post",
        "architecture": "topk",
        "activation_fn_kwargs": {"k": 8},
        "d_sae": 256,
    },
    "mlp1_std": {
        "hook_name": "blocks.1.hook_mlp_out",
        "architecture": "standard",
        "l1_coefficient": 2.0,
        "d_sae": 256,
    },
    "resid1_k8": {
        "hook_name": "blocks.1.hook_resid_post",
        "architecture": "topk",
        "activation_fn_kwargs": {"k": 8},
        "d_sae": 256,
    },
}  # the two TopK SAEs have one shape: with stack_saes they step together


def write_config(
    folder: Path, checkpoint_path: Path, distribute: bool, stack: bool = False
) -> Path:
    config = {
        "context_size": 32,
        "train_batch_size_tokens": 256,
        "training_tokens": 256 * 40,
        "store_batch_size_prompts": 4,
        "n_batches_in_buffer": 4,
        "b_dec_init_method": "zeros",  # (geometric median: from the data of the SAE's rank)
        "n_checkpoints": 3,
        "log_to_wandb": False,
        "seed": 3,
        "checkpoint_path": str(checkpoint_path),
        "distribute_saes": distribute,
        "stack_saes": stack,
        "saes": SAES,
    }
    path = folder / f"multi_{distribute}_{stack}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def multi_command(config: Path, *extra: str) -> list[str]:
    return torchrun("-m", "sae_lens.multi_sae_training_runner", "--config", str(config), *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run folders of a data-parallel run, a spread run, and both with stacked steps,
    of the same config."""
    folder = tmp_path_factory.mktemp("multi")
    found = {}
    modes = (
        ("data_parallel", False, False),
        ("spread", True, False),
        ("stacked", False, True),
        ("spread_stacked", True, True),
    )
    for mode, distribute, stack in modes:
        result = run(multi_command(write_config(folder, folder / mode, distribute, stack)))
        assert result.returncode == 0, result.stderr[-3000:]
        found[mode] = only_run_folder(folder / mode)
    return found


def assert_trains_as_the_data_parallel_run(runs: dict[str, Path], mode: str) -> None:
    """Every SAE of the run `mode` ends within float rounding of the data-parallel run's."""
    for name in SAES:
        parallel = final_weights(runs["data_parallel"] / name)
        for key, tensor in final_weights(runs[mode] / name).items():
            torch.testing.assert_close(tensor, parallel[key], rtol=1e-4, atol=1e-5)


def test_spread_saes_train_as_the_data_parallel_run(runs: dict[str, Path]) -> None:
    # the same rows each step: one gradient of the gathered batch against the mean of two
    # half-batch gradients, equal up to float rounding
    assert_trains_as_the_data_parallel_run(runs, "spread")
    # each SAE written once, by its owner, with both ranks' store positions
    state = checkpoints.load_training_state(
        checkpoints.latest_checkpoint(runs["spread"] / "mlp1_std")
    )
    assert state["world_size"] == 2 and len(state["other_ranks"]) == 1


def test_stacked_steps_train_as_the_data_parallel_run(runs: dict[str, Path]) -> None:
    # each process steps the two TopK SAEs together, then averages each SAE's gradients
    assert_trains_as_the_data_parallel_run(runs, "stacked")
    # spread: rank 0 owns both TopK SAEs (see test_owners_balance_the_sae_sizes) and steps
    # them together on the gathered rows
    assert assign_owners({name: 1 for name in SAES}, 2) == {
        "resid0_k8": 0,
        "mlp1_std": 1,
        "resid1_k8": 0,
    }
    assert_trains_as_the_data_parallel_run(runs, "spread_stacked")
    assert yaml.safe_load((runs["stacked"] / "run_config.json").read_text())["stack_saes"]


@pytest.mark.parametrize("mode", ["spread", "data_parallel"])
def test_multi_run_resumes_exactly_after_a_kill(
    runs: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    root = tmp_path / mode
    config = write_config(tmp_path, root, mode == "spread")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        multi_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        sae_dirs = [d for run_dir in root.glob("*") for d in run_dir.glob("*") if d.is_dir()]
        if len(sae_dirs) == len(SAES) and all(checkpoints.list_checkpoints(d) for d in sae_dirs):
            break
        time.sleep(0.05)
    kill_tree(process.pid)
    process.wait()
    run_dir = only_run_folder(root)
    assert checkpoints.final_sae_folder(run_dir / "mlp1_std") is None, "ended before the kill"
    resumed = run(multi_command(Path(run_dir) / "run_config.json", "--resume", "true"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in SAES:
        expected = final_weights(runs[mode] / name)
        for key, tensor in final_weights(run_dir / name).items():
            assert torch.equal(tensor, expected[key]), (name, key)


def test_owners_balance_the_sae_sizes() -> None:
    owners = assign_owners({"a": 10, "b": 40, "c": 30, "d": 20}, 2)
    assert owners == {"a": 0, "b": 0, "c": 1, "d": 1}  # b, a | c, d: 50 against 50
    assert list(owners) == ["a", "b", "c", "d"]
    assert assign_owners({"a": 5, "b": 5}, 2) == {"a": 0, "b": 1}
    with pytest.raises(ValueError, match="spreads 1 SAE"):
        assign_owners({"a": 1}, 2)
