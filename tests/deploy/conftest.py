"""The offline validators live in .venv-tools (`make test` builds it from tools/requirements.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".venv-tools" / "bin"


@pytest.fixture(scope="session")
def tool() -> object:
    """`tool("checkov")` is the path of a validator; a missing one fails the test with how to fix it."""

    def find(name: str) -> str:
        path = TOOLS_BIN / name
        if not path.exists():
            pytest.fail(
                f"{path} is missing: run `make test` (it installs tools/requirements.txt into .venv-tools)"
            )
        return str(path)

    return find
