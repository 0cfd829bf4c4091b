"""Data-parallel runs started with torchrun (2 CPU processes, gloo) on the embedded model:
one run folder written by rank 0 only, exact resume after a kill, a resume with another
number of processes refused, and a dead rank stopping the run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sae_lens.training import checkpoints
from sae_lens.training.metrics_log import read_metrics

TRAIN = [
    "--hook_name", "blocks.0.hook_resid_post", "--context_size", "32",
    "--train_batch_size_tokens", "256", "--training_tokens", str(256 * 60),
    "--store_batch_size_prompts", "4", "--n_batches_in_buffer", "4", "--d_sae", "256",
    "--n_checkpoints", "5", "--log_to_wandb", "false", "--seed", "7",
]  # fmt: skip


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc_per_node", str(nproc), *args]


def train_command(checkpoint_path: Path, *extra: str, nproc: int = 2) -> list[str]:
    args = ["-m", "sae_lens.sae_training_runner", *TRAIN, "--checkpoint_path", str(checkpoint_path)]
    return torchrun(*args, *extra, nproc=nproc)


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and all its descendants (torchrun starts its workers in
    sessions of their own, so killing its process group leaves them running)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree}
        grew = not children <= tree
        tree |= children
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def only_run_folder(root: Path) -> Path:
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 1, f"the ranks wrote more than one run folder: {folders}"
    return folders[0]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    final = checkpoints.final_sae_folder(run_dir)
    assert final is not None, f"no final SAE in {run_dir}"
    return load_file(final / "sae_weights.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dp") / "runs"
    result = run(train_command(root))
    assert result.returncode == 0, result.stderr[-3000:]
    # only rank 0 reports
    assert result.stdout.count("trained SAE (standard, d_sae=256)") == 1, result.stdout
    return only_run_folder(root)


def test_rank_zero_alone_writes_one_run(uninterrupted: Path) -> None:
    steps = [row["step"] for row in read_metrics(uninterrupted / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 59  # each step logged once
    trained = checkpoints.list_checkpoints(uninterrupted)
    assert [c.n_training_steps for c in trained][-1] == 60
    state = checkpoints.load_training_state(trained[0].path)
    assert state["world_size"] == 2 and len(state["other_ranks"]) == 1
    own, other = state["activations_store"], state["other_ranks"][0]["activations_store"]
    # each rank read half of every global batch from its own part of the dataset
    assert own["compat"]["train_batch_size_tokens"] == 128
    assert not torch.equal(own["buffer_stored"], other["buffer_stored"])
    saved = json.loads((uninterrupted / "run_config.json").read_text())
    assert saved["train_batch_size_tokens"] == 256


def test_resume_after_a_kill_ends_with_the_same_weights(
    uninterrupted: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        train_command(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if root.is_dir() and any(checkpoints.list_checkpoints(p) for p in root.iterdir()):
            break
        time.sleep(0.05)
    kill_tree(process.pid)  # every rank and torchrun, at once
    process.wait()
    run_dir = only_run_folder(root)
    assert checkpoints.final_sae_folder(run_dir) is None, "the run ended before the kill"

    one_process = run(train_command(run_dir, "--resume", "true", nproc=1))
    assert one_process.returncode != 0
    assert "written by a run of 2 process(es) and this run has 1" in one_process.stderr

    resumed = run(train_command(run_dir, "--resume", "true"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = final_weights(uninterrupted)
    for name, tensor in final_weights(run_dir).items():
        assert torch.equal(tensor, expected[name]), name


DYING_RANK = """
import os, sys
from sae_lens.training.sae_trainer import SAETrainer
from sae_lens import sae_training_runner

original = SAETrainer.train_on_batch

def train_on_batch(self, sae_in):
    if os.environ["RANK"] == "1" and self.n_training_steps == 25:
        os._exit(3)  # dies without a word, as a killed process
    return original(self, sae_in)

SAETrainer.train_on_batch = train_on_batch
sys.exit(sae_training_runner.main(sys.argv[1:]))
"""


def test_a_dead_rank_stops_the_run(tmp_path: Path) -> None:
    script = tmp_path / "dying_rank.py"
    script.write_text(DYING_RANK)
    root = tmp_path / "runs"
    started = time.monotonic()
    result = run(torchrun(str(script), *TRAIN, "--checkpoint_path", str(root)))
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # start-up included; the stop itself is quick
    assert "rank: 1" in result.stderr  # torchrun names the rank that failed
    run_dir = only_run_folder(root)
    assert checkpoints.final_sae_folder(run_dir) is None
    for folder in run_dir.iterdir():  # what is there is either complete or marked partial
        if folder.is_dir() and checkpoints.read_checkpoint_info(folder) is None:
            assert ".tmp-" in folder.name, folder
