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
