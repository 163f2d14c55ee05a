"""Process liveness for the sweep and reconcile rules, on POSIX and (simulated) Windows."""

from __future__ import annotations

import os
import sys

import pytest

from bridge.uploads import processes


def test_a_live_and_a_dead_process(live_pid: int, dead_pid: int) -> None:
    assert processes.process_alive(live_pid)
    assert processes.process_alive(os.getpid())
    assert not processes.process_alive(dead_pid)


def test_on_windows_liveness_never_signals_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # os.kill(pid, 0) terminates the process on Windows: the check must ask, never signal.
    asked: list[int] = []

    def no_kill(pid: int, sig: int) -> None:
        raise AssertionError("os.kill called on Windows")

    def alive(pid: int) -> bool:
        asked.append(pid)
        return pid == 42

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "kill", no_kill)
    monkeypatch.setattr(processes, "_windows_process_alive", alive)
    assert processes.process_alive(42) and not processes.process_alive(43)
    assert asked == [42, 43]
