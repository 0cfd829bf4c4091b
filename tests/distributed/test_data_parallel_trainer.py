"""Data parallel at the trainer: two processes, each stepping on half of every global
batch, end with the weights of one process stepping on the whole batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset

from sae_lens.training.distributed import DistributedContext, split_evenly, take_data_shard
from sae_lens.training.sae_trainer import SAETrainer
from sae_lens.training.training_sae import TrainingSAE
from tests.distributed.ranks import run_ranks
from tests.training.trainer_fakes import FakeActivationStore, RecordingSave, make_cfg

GLOBAL_BATCH = 16


class RankShareStore(FakeActivationStore):
    """Serves rank `rank`'s rows of each global batch of the fake store."""

    def __init__(self, d_in: int, rank: int, world_size: int):
        super().__init__(d_in, GLOBAL_BATCH)
        self.rank, self.share = rank, GLOBAL_BATCH // world_size

    def next_batch(self) -> torch.Tensor:
        rows = super().next_batch()
        return rows[self.rank * self.share : (self.rank + 1) * self.share]


def _train(rank: int, world_size: int, out: Path, overrides: dict[str, Any]) -> None:
    cfg = make_cfg(out, train_batch_size_tokens=GLOBAL_BATCH, **overrides)
    context = DistributedContext.from_environment("cpu") if world_size > 1 else None
    torch.manual_seed(0)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    trainer = SAETrainer(
        model=None,  # type: ignore[arg-type]
        sae=sae,
        activation_store=RankShareStore(cfg.d_in, rank, world_size),  # type: ignore[arg-type]
        save_checkpoint_fn=RecordingSave(),
        cfg=cfg,
        distributed=context,
    )
    trainer.fit()
    torch.save(
        {
            "weights": sae.state_dict(),
            "act_freq_scores": trainer.act_freq_scores,
            "n_frac_active_tokens": trainer.n_frac_active_tokens,
            "steps": trainer.n_training_steps,
        },
        out / f"rank{rank}.pt",
    )
    if context is not None:
        context.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # standard, L1
        {"architecture": "topk", "activation_fn_kwargs": {"k": 4}, "dead_feature_window": 5},
    ],
    ids=["standard", "topk_with_dead_latents"],
)
def test_two_processes_on_halves_match_one_process_on_the_whole_batch(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _train(0, 1, one, overrides)
    run_ranks(_train, 2, 2, two, overrides)
    single = torch.load(one / "rank0.pt", weights_only=True)
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, tensor in ranks[0]["weights"].items():
        # every rank holds the same weights, bit for bit (they apply the same averaged step)
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
        # the averaged gradient is the whole batch's up to float rounding (a mean of two
        # half-batch means instead of one mean), which Adam carries over 40 steps
        torch.testing.assert_close(tensor, single["weights"][name], rtol=1e-4, atol=1e-5)
    assert ranks[0]["steps"] == single["steps"] == 40
    # firing statistics are the global batch's on every rank
    assert ranks[0]["n_frac_active_tokens"] == single["n_frac_active_tokens"]
    assert torch.equal(ranks[0]["act_freq_scores"], single["act_freq_scores"])


def _collectives(rank: int, out: Path) -> None:
    context = DistributedContext.from_environment("cpu")
    results: dict[str, Any] = {
        "sum": context.sum_(torch.tensor([1.0, 2.0]) * (rank + 1)).tolist(),
        "sum_number": context.sum_number(rank + 3),
        "mean": context.mean(float(rank)),
        "any_true": context.any(rank == 1),
        "any_false": context.any(False),
        "metrics": context.mean_metrics({"loss": float(rank), "steps": 4, "name": f"r{rank}"}),
        "gather": context.gather(rank * 10),
        "broadcast": context.broadcast(f"from {rank}"),
    }
    module = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(module.weight, float(rank))
    context.broadcast_module(module)
    results["module"] = module.weight.detach().clone()
    gradients = torch.nn.Linear(2, 1)
    gradients.weight.grad = torch.full((1, 2), float(rank))
    gradients.bias.grad = torch.full((1,), 2.0 * rank)
    context.average_gradients(gradients.parameters())
    results["grads"] = (gradients.weight.grad.clone(), gradients.bias.grad.clone())
    torch.save(results, out / f"rank{rank}.pt")
    context.close()


def test_collectives_on_two_processes(tmp_path: Path) -> None:
    run_ranks(_collectives, 2, tmp_path)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert r["sum"] == [3.0, 6.0]
        assert r["sum_number"] == 7
        assert r["mean"] == 0.5
        assert r["any_true"] is True and r["any_false"] is False
        assert r["metrics"] == {"loss": 0.5, "steps": 4.0, "name": "r0"}
        assert r["gather"] == [0, 10]
        assert r["broadcast"] == "from 0"
        assert torch.equal(r["module"], torch.zeros(2, 2))
        assert torch.equal(r["grads"][0], torch.full((1, 2), 0.5))
        assert torch.equal(r["grads"][1], torch.full((1,), 1.0))


def test_one_process_context_is_a_no_op() -> None:
    context = DistributedContext()
    tensor = torch.tensor([1.0, 2.0])
    assert context.sum_(tensor) is tensor and tensor.tolist() == [1.0, 2.0]
    assert context.mean(3.0) == 3.0 and context.any(True) and not context.any(False)
    assert context.gather("x") == ["x"] and context.broadcast(5) == 5
    assert context.is_main and not context.enabled


def test_batch_must_divide_over_the_processes() -> None:
    assert split_evenly(4096, 2, "train_batch_size_tokens") == 2048
    with pytest.raises(
        ValueError,
        match=r"train_batch_size_tokens \(4,097\) must divide evenly over the 2 processes",
    ):
        split_evenly(4097, 2, "train_batch_size_tokens")


class _ShardableStore:
    """What `take_data_shard` asks of a store."""

    def __init__(self) -> None:
        self.train_batch_size_tokens = 64
        self.shard: tuple[int, int] | None = None

    def take_shard(self, index: int, n_shards: int) -> None:
        self.shard = (index, n_shards)


def test_take_data_shard_sets_the_rank_share() -> None:
    store = _ShardableStore()
    take_data_shard(store, DistributedContext(rank=1, world_size=4), 64)
    assert store.shard == (1, 4) and store.train_batch_size_tokens == 16
    alone = _ShardableStore()
    take_data_shard(alone, DistributedContext(), 64)
    assert alone.shard is None and alone.train_batch_size_tokens == 64


def test_dataset_shards_are_disjoint_and_cover_the_dataset() -> None:
    from sae_lens.training.token_stream import dataset_shard

    dataset = Dataset.from_dict({"tokens": [[i, i + 1] for i in range(11)]})
    parts = [[row["tokens"][0] for row in dataset_shard(dataset, r, 3)] for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    streamed = dataset.to_iterable_dataset(num_shards=2)
    parts = [[row["tokens"][0] for row in dataset_shard(streamed, r, 2)] for r in range(2)]
    assert sorted(sum(parts, [])) == list(range(11)) and set(parts[0]).isdisjoint(parts[1])


def test_a_streamed_shard_resumes_at_its_own_rows() -> None:
    """A resumed token stream skips the rows its shard already read (datasets' `skip` on a
    stream split by node would skip rows of the whole stream)."""
    from sae_lens.training.token_stream import _iter_row_batches, dataset_shard

    rows = Dataset.from_dict({"tokens": [[i, i] for i in range(23)]})
    for n_files in (1, 4):
        streamed = rows.to_iterable_dataset(num_shards=n_files)
        for rank in range(2):
            shard = dataset_shard(streamed, rank, 2)
            whole = [int(r[0]) for b in _iter_row_batches(shard, "tokens", 0, 4) for r in b]
            for start in (0, 3, 4, 5, len(whole)):
                resumed = _iter_row_batches(shard, "tokens", start, 4)
                assert [int(r[0]) for b in resumed for r in b] == whole[start:]


def test_resume_hint_names_the_torchrun_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from sae_lens.training.distributed import launch_command

    prog = "python -m sae_lens.sae_training_runner"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch_command(prog) == prog
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch_command(prog) == "torchrun --nproc_per_node 2 -m sae_lens.sae_training_runner"
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    expected = (
        "torchrun --nnodes 2 (and rendezvous) --nproc_per_node 8 -m sae_lens.sae_training_runner"
    )
    assert launch_command(prog) == expected
