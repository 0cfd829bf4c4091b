"""The runners' allocator setting: applied once through glibc's mallopt, skippable."""

from __future__ import annotations

import sys

import pytest

from sae_lens import allocator


@pytest.fixture
def fake_mallopt(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: mallopt)
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    return calls


def test_sets_the_mmap_and_trim_thresholds_once(fake_mallopt: list[tuple[int, int]]) -> None:
    assert allocator.reuse_freed_memory()
    assert fake_mallopt == [(-3, 1 << 30), (-1, (1 << 31) - 1)]
    assert allocator.reuse_freed_memory()
    assert len(fake_mallopt) == 2


def test_only_cpu_runs_change_the_allocator(fake_mallopt: list[tuple[int, int]]) -> None:
    assert not allocator.reuse_freed_memory_on_cpu("meta")
    assert fake_mallopt == []
    assert allocator.reuse_freed_memory_on_cpu("cpu")
    assert len(fake_mallopt) == 2


def test_the_environment_variable_keeps_the_defaults(
    fake_mallopt: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(allocator.OPT_OUT_VARIABLE, "1")
    assert not allocator.reuse_freed_memory()
    assert fake_mallopt == []


def test_a_refused_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: lambda param, value: 0)
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    assert not allocator.reuse_freed_memory()


def test_without_glibc_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    assert not allocator.reuse_freed_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc on Linux only")
def test_glibc_accepts_the_settings_on_this_machine() -> None:
    mallopt = allocator._glibc_mallopt()
    if mallopt is None:
        pytest.skip("the C library is not glibc")
    assert mallopt(-3, allocator.MMAP_THRESHOLD_BYTES) == 1
    assert mallopt(-1, allocator.TRIM_THRESHOLD_BYTES) == 1


def test_the_context_applies_announces_and_restores(
    fake_mallopt: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(allocator, "_malloc_trim", lambda: trims.append(0))
    with allocator.freed_memory_reused("cpu", enabled=True) as on:
        assert on and allocator._applied
        assert fake_mallopt == [(-3, 1 << 30), (-1, (1 << 31) - 1)]
    assert capsys.readouterr().out.count("\n") == 1  # announced in one line, on stdout
    assert fake_mallopt[2:] == [(-3, 128 * 1024), (-1, 128 * 1024)]  # glibc's defaults back
    assert trims == [0] and not allocator._applied
    assert not allocator.restore_malloc_defaults()  # nothing left to undo


def test_the_context_does_nothing_when_off_or_not_on_cpu(
    fake_mallopt: list[tuple[int, int]],
) -> None:
    with allocator.freed_memory_reused("cpu", enabled=False) as on:
        assert not on
    with allocator.freed_memory_reused("meta", enabled=True) as on:
        assert not on
    assert fake_mallopt == []


def test_the_python_api_leaves_the_allocator_alone_and_the_clis_opt_in() -> None:
    from sae_lens.config import LanguageModelSAERunnerConfig
    from sae_lens.sae_training_runner import parse_cli_config

    assert LanguageModelSAERunnerConfig(log_to_wandb=False).reuse_freed_memory is False
    assert parse_cli_config([]).reuse_freed_memory is True
    assert parse_cli_config(["--reuse_freed_memory", "false"]).reuse_freed_memory is False


def test_a_cpu_training_run_restores_the_defaults_when_it_ends(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from tests.sae_training_runner.runner_helpers import tiny_cfg, tiny_runner

    seen: list[bool] = []
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: lambda param, value: 1)
    monkeypatch.setattr(allocator, "_malloc_trim", lambda: None)
    monkeypatch.delenv(allocator.OPT_OUT_VARIABLE, raising=False)
    runner = tiny_runner(tiny_cfg(tmp_path, reuse_freed_memory=True))
    fit = runner.run_trainer_with_interruption_handling

    def fit_and_look(trainer):  # noqa: ANN001, ANN202
        seen.append(allocator._applied)
        return fit(trainer)

    monkeypatch.setattr(runner, "run_trainer_with_interruption_handling", fit_and_look)
    runner.run()
    assert seen == [True] and not allocator._applied
