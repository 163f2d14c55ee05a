"""The offline validators live in .venv-tools (`make test` builds it from tools/requirements.txt), and
what a deploy test reports for the record (the bundle's size) is printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.procs import REPO, tool_path

_REPORTED = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """`tool("checkov")` is the path of a validator; a missing one fails the test with how to fix it."""

    def find(name: str) -> str:
        try:
            return tool_path(name)
        except RuntimeError as exc:
            pytest.fail(str(exc))

    return find


@pytest.fixture(scope="session")
def uv() -> str:
    """The pinned uv (tools/uv.txt) that `make` bootstraps into .venv-uv and installs everything with."""
    path = REPO / ".venv-uv" / "bin" / "uv"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test` (it installs tools/uv.txt into .venv-uv)")
    return str(path)


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """`report(line)` prints `line` in the run's summary: pytest hides what a passing test prints, and
    CI's log should show it all the same."""
    return request.config.stash.setdefault(_REPORTED, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORTED, [])
    if lines:
        terminalreporter.write_sep("-", "deploy")
        for line in lines:
            terminalreporter.write_line(line)
