import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training import checkpoints
from sae_lens.training.sae_trainer import InterruptedException, SAETrainer
from tests.training.trainer_fakes import FakeActivationStore, make_cfg, make_trainer


def _stop_after(trainer: SAETrainer, n_steps: int) -> None:
    """Make the fake store ask the trainer to stop while fetching batch `n_steps`."""
    store = trainer.activations_store
    next_batch = store.next_batch

    def next_batch_then_stop() -> torch.Tensor:
        batch = next_batch()
        if store.batches_served == n_steps:
            trainer.request_stop("test stop")
        return batch

    store.next_batch = next_batch_then_stop  # type: ignore[method-assign]


def _folder_with_marker(path: Path, steps: int, kind: str = "training") -> Path:
    path.mkdir(parents=True)
    (path / "training_state.pt").write_bytes(b"")
    marker = {
        "kind": kind,
        "n_training_steps": steps,
        "n_training_tokens": steps * 10,
        "created": time.time(),
    }
    (path / "checkpoint.json").write_text(json.dumps(marker))
    return path


def test_atomic_folder_appears_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "run" / "ckpt"
    with checkpoints.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not final.exists()
        assert tmp.parent == final.parent and tmp.name.startswith("ckpt.tmp-")
    assert (final / "a.txt").read_text() == "new"
    assert os.listdir(tmp_path / "run") == ["ckpt"]


def test_atomic_folder_failure_leaves_the_previous_folder(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with checkpoints.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with checkpoints.atomic_folder(final) as tmp:
            (tmp / "a.txt").write_text("half written")
            raise RuntimeError("disk full")
    assert (final / "a.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["ckpt"]
    with checkpoints.atomic_folder(final) as tmp:  # replacing a complete folder works
        (tmp / "b.txt").write_text("newer")
    assert sorted(os.listdir(final)) == ["b.txt"]
    assert os.listdir(tmp_path) == ["ckpt"]


def test_a_write_that_fails_on_a_full_disk_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "ckpt"
    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: full)
    with pytest.raises(
        OSError, match=r"could not write .*ckpt: its disk is full \(1,000 bytes free"
    ):
        with checkpoints.atomic_folder(final) as tmp:
            (tmp / "state.pt").write_bytes(b"x" * 5000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5000")
    assert os.listdir(tmp_path) == []  # nothing left behind
    # with room on the disk the error is passed on as it was
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):
        with checkpoints.atomic_folder(final):
            raise RuntimeError("unexpected pos")


def test_latest_checkpoint_ignores_incomplete_folders(tmp_path: Path) -> None:
    _folder_with_marker(tmp_path / "100", steps=10)
    newest = _folder_with_marker(tmp_path / "200", steps=20)
    _folder_with_marker(tmp_path / "300.tmp-ab12cd34", steps=30)  # never renamed
    (tmp_path / "400").mkdir()  # no marker
    (tmp_path / "400" / "training_state.pt").write_bytes(b"")
    no_state = _folder_with_marker(tmp_path / "500", steps=50)
    (no_state / "training_state.pt").unlink()
    _folder_with_marker(tmp_path / "final_600", steps=60, kind="final")
    (tmp_path / "600").mkdir()
    (tmp_path / "600" / "checkpoint.json").write_text("{not json")
    assert checkpoints.latest_checkpoint(tmp_path) == newest
    assert checkpoints.final_sae_folder(tmp_path) == tmp_path / "final_600"
    assert checkpoints.latest_checkpoint(tmp_path / "missing") is None


def test_find_run_to_resume(tmp_path: Path) -> None:
    run = _folder_with_marker(tmp_path / "runs" / "old" / "100", steps=10).parent
    assert checkpoints.find_run_to_resume(run) == run
    time.sleep(0.01)
    newer = _folder_with_marker(tmp_path / "runs" / "new" / "50", steps=5).parent
    (tmp_path / "runs" / "empty").mkdir()
    assert checkpoints.find_run_to_resume(tmp_path / "runs") == newer
    with pytest.raises(FileNotFoundError, match="no complete checkpoint was found in .*empty"):
        checkpoints.find_run_to_resume(tmp_path / "runs" / "empty")
    with pytest.raises(ValueError, match="is a checkpoint folder: pass its run folder .*old'"):
        checkpoints.find_run_to_resume(run / "100")
    with pytest.raises(FileNotFoundError, match="checkpoint_path .*nowhere' is not a folder"):
        checkpoints.find_run_to_resume(tmp_path / "nowhere")


def test_resume_config_must_match_where_it_changes_the_math(tmp_path: Path) -> None:
    saved = json.loads(json.dumps(make_cfg(tmp_path).to_dict()))
    same_math = make_cfg(
        tmp_path / "elsewhere",
        run_name="renamed",
        device="cpu",
        verbose=True,
        n_checkpoints=7,
        log_to_wandb=True,
    )
    checkpoints.check_resume_config(saved, same_math)
    with pytest.raises(
        ValueError,
        match=r"config differs from the checkpoint's in \['l1_coefficient', 'seed'\] "
        r"\(l1_coefficient: checkpoint 0.1, now 0.2; seed: checkpoint 42, now 7\)",
    ):
        checkpoints.check_resume_config(saved, make_cfg(tmp_path, l1_coefficient=0.2, seed=7))


def test_rng_state_round_trip() -> None:
    state = checkpoints.capture_rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    checkpoints.restore_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(expected[0], again[0])
    assert expected[1] == again[1]
    assert np.array_equal(expected[2], again[2])


def test_checkpoint_folder_contents(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 6)
    trainer = make_trainer(cfg, save=SAETrainingRunner.save_checkpoint)
    _stop_after(trainer, 4)
    with pytest.raises(InterruptedException, match="stopped after step 3") as info:
        trainer.fit()
    folder = Path(info.value.checkpoint)
    assert folder == Path(cfg.checkpoint_path) / "64"
    assert sorted(os.listdir(folder)) == [
        "cfg.json",
        "checkpoint.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "training_state.pt",
    ]
    stored_cfg = json.loads((folder / "cfg.json").read_text())
    assert stored_cfg["lr"] == cfg.lr and stored_cfg["activation_fn_str"] == "relu"
    marker = json.loads((folder / "checkpoint.json").read_text())
    assert (marker["kind"], marker["n_training_steps"], marker["n_training_tokens"]) == (
        "training",
        4,
        64,
    )
    loaded = SAE.load_from_pretrained(str(folder))  # the folder is a usable SAE
    x = torch.randn(5, cfg.d_in)
    assert torch.allclose(loaded(x), trainer.sae.eval()(x), atol=1e-6)
    state = checkpoints.load_training_state(folder)  # weights_only=True
    assert state["trainer"]["n_training_steps"] == 4
    assert state["activations_store"] == {"batches_served": 4}
    # evaluating on the training store: its state is saved once, not twice
    assert trainer.eval_activations_store is trainer.activations_store
    assert "eval_activations_store" not in state


def test_failed_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path, training_tokens=16 * 6, n_checkpoints=3)
    trainer = make_trainer(cfg, save=SAETrainingRunner.save_checkpoint)
    real_save = torch.save
    n_saves = []

    def failing_second_save(obj: object, path: object) -> None:
        n_saves.append(path)
        if len(n_saves) == 2:
            raise OSError("No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(checkpoints.torch, "save", failing_second_save)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    run_dir = Path(cfg.checkpoint_path)
    assert checkpoints.latest_checkpoint(run_dir) == run_dir / "48"
    assert [p.name for p in run_dir.iterdir() if p.is_dir()] == ["48"]


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu", "topk"])
def test_resumed_training_equals_uninterrupted_training(tmp_path: Path, architecture: str) -> None:
    """Stop after 13 steps, restore into a trainer built with another init seed, finish:
    the weights equal an uninterrupted run's bit for bit (noise makes RNG state matter)."""
    extra = {"activation_fn_kwargs": {"k": 4}} if architecture == "topk" else {}
    cfg = make_cfg(
        tmp_path,
        architecture=architecture,
        noise_scale=0.1,
        lr_scheduler_name="cosineannealing",
        l1_warm_up_steps=5,
        n_checkpoints=2,
        feature_sampling_window=6,
        dead_feature_window=3,
        **extra,
    )
    uninterrupted = make_trainer(cfg, seed=1)
    uninterrupted.fit()

    interrupted = make_trainer(cfg, save=SAETrainingRunner.save_checkpoint, seed=1)
    _stop_after(interrupted, 13)
    with pytest.raises(InterruptedException) as info:
        interrupted.fit()
    torch.manual_seed(999)  # the restore must not depend on the RNG state around it
    resumed = make_trainer(
        cfg,
        save=SAETrainingRunner.save_checkpoint,
        seed=2,
        store=FakeActivationStore(cfg.d_in, cfg.train_batch_size_tokens),
    )
    state = checkpoints.load_training_state(info.value.checkpoint)
    checkpoints.restore_training_state(resumed, state)
    assert resumed.n_training_steps == 13
    resumed.fit()

    for name, param in uninterrupted.sae.state_dict().items():
        assert torch.equal(param, resumed.sae.state_dict()[name]), name
    assert torch.equal(uninterrupted.act_freq_scores, resumed.act_freq_scores)
    assert torch.equal(
        uninterrupted.n_forward_passes_since_fired, resumed.n_forward_passes_since_fired
    )
    assert uninterrupted.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
