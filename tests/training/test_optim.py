import math

import pytest
import torch

from sae_lens.training.optim import L1Scheduler, get_lr_scheduler, make_adam


def _lrs(
    name: str,
    steps: int,
    lr: float,
    warm: int,
    decay: int,
    lr_end: float,
    cycles: int = 1,
    n: int | None = None,
) -> list[float]:
    """The learning rate used by each optimizer step."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    sched = get_lr_scheduler(name, opt, steps, lr, warm, decay, lr_end, cycles)
    values = []
    for _ in range(n or steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_constant_is_flat() -> None:
    assert _lrs("constant", 20, 0.01, 0, 0, 0.001) == pytest.approx([0.01] * 20)


def test_linear_warm_up_reaches_lr_on_its_last_step() -> None:
    lrs = _lrs("constant", 20, 1.0, 5, 0, 0.1)
    # 1/5 at step 0, rising linearly to 1 at step 4 (= warm_up - 1), then flat.
    assert lrs[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert lrs[19] == pytest.approx(1.0)


def test_constant_decay_starts_from_lr_and_ends_at_zero() -> None:
    lrs = _lrs("constant", 20, 1.0, 0, 4, 0.1, n=22)
    # decay from lr (not lr_end) over the last 4 steps: 1, 3/4, 2/4, 1/4, then 0
    assert lrs[15:] == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_cosine_annealing_with_warm_up_and_decay() -> None:
    lr, lr_end = 2.0, 0.2
    lrs = _lrs("cosineannealing", 30, lr, 4, 6, lr_end)
    main = 30 - 4 - 6
    assert lrs[0] == pytest.approx(lr / 4)
    for t in (0, 5, 10, 19):
        expected = lr_end + (lr - lr_end) * (1 + math.cos(math.pi * t / main)) / 2
        assert lrs[4 + t] == pytest.approx(expected)
    # the decay starts at lr_end and falls linearly to 0 at the end of training
    assert lrs[24:] == pytest.approx([lr_end * (1 - i / 6) for i in range(6)])


def test_cosine_annealing_reaches_lr_end_after_the_last_step() -> None:
    lrs = _lrs("CosineAnnealing", 10, 1.0, 0, 0, 0.1, n=11)
    assert lrs[5] == pytest.approx(0.55)  # half way down the cosine
    assert lrs[9] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 9 / 10)) / 2)
    assert lrs[10] == pytest.approx(0.1)


def test_warm_restarts_repeat_each_cycle() -> None:
    lrs = _lrs("cosineannealingwarmrestarts", 30, 1.0, 0, 0, 0.0, cycles=3)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[13] == pytest.approx(lrs[3])
    assert lrs[13] == pytest.approx((1 + math.cos(math.pi * 3 / 10)) / 2)


def test_scheduler_state_round_trip_continues_the_schedule() -> None:
    def build() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
        return opt, get_lr_scheduler("cosineannealing", opt, 40, 1.0, 5, 5, 0.1, 1)

    opt, sched = build()
    for _ in range(17):
        opt.step()
        sched.step()
    opt2, sched2 = build()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(20):
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(scheduler_name="linear"), r"Unsupported scheduler: linear \(expected one of"),
        (
            dict(warm_up_steps=8, decay_steps=5),
            r"warm-up steps \(8\) \+ decay steps \(5\) exceed the 10",
        ),
        (
            dict(scheduler_name="cosineannealing", decay_steps=3, lr_end=0.0),
            r"Cannot have decay_steps with lr_end=0.0, .*set lr_end > 0",
        ),
        (
            dict(scheduler_name="cosineannealingwarmrestarts", num_cycles=20),
            "at least one step per cycle",
        ),
    ],
)
def test_bad_schedules_raise(kwargs: dict, match: str) -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    args = dict(
        scheduler_name="constant",
        optimizer=opt,
        training_steps=10,
        lr=1.0,
        warm_up_steps=0,
        decay_steps=0,
        lr_end=0.1,
        num_cycles=1,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        get_lr_scheduler(**args)


def test_l1_warm_up_is_linear_from_zero() -> None:
    sched = L1Scheduler(l1_warm_up_steps=4, total_steps=10, final_l1_coefficient=2.0)
    values = []
    for _ in range(6):
        values.append(sched.current_l1_coefficient)
        sched.step()
    assert values == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])


def test_l1_without_warm_up_is_constant() -> None:
    sched = L1Scheduler(l1_warm_up_steps=0, total_steps=10, final_l1_coefficient=3)
    assert sched.current_l1_coefficient == 3
    sched.step()
    assert sched.current_l1_coefficient == 3


def test_l1_state_round_trip() -> None:
    sched = L1Scheduler(l1_warm_up_steps=10, total_steps=20, final_l1_coefficient=1.0)
    for _ in range(3):
        sched.step()
    other = L1Scheduler(l1_warm_up_steps=10, total_steps=20, final_l1_coefficient=1.0)
    other.load_state_dict(sched.state_dict())
    sched.step()
    other.step()
    assert other.current_l1_coefficient == sched.current_l1_coefficient == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown L1Scheduler state keys: \\['bogus'\\]"):
        other.load_state_dict({"bogus": 1})


def test_l1_rejects_non_numeric_coefficient() -> None:
    with pytest.raises(TypeError, match="final_l1_coefficient must be a float or int, got str"):
        L1Scheduler(l1_warm_up_steps=0, total_steps=1, final_l1_coefficient="1")  # type: ignore[arg-type]


def test_make_adam_is_fused_on_cpu_and_steps_like_plain_adam() -> None:
    torch.manual_seed(0)
    fused_model, plain_model = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    plain_model.load_state_dict(fused_model.state_dict())
    initial = fused_model.weight.detach().clone()
    fused = make_adam(fused_model, lr=1e-2, betas=(0.9, 0.99))
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    assert fused.defaults["fused"] is True
    for step in range(5):
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step))
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()
    for got, want in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(got, want)
    assert (fused_model.weight - initial).abs().min() > 0  # every weight moved


def test_make_adam_falls_back_to_the_loop_where_torch_has_no_fused_kernel() -> None:
    assert make_adam(torch.nn.Linear(2, 2, device="meta"), 1e-3, (0.9, 0.999)).defaults[
        "fused"
    ] in (None, False)
