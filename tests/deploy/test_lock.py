"""The lock files, checked offline: fresh, universal, hashed, and a stale one stops `make` with `make lock`.

uv.lock (the bridge's runtime and dev dependencies), tools/*.txt (compiled from tools/*.in: validators,
auditors, uv itself) and the hatchling build constraints in pyproject.toml are all written by `make lock`;
every install target checks them first (`make lock-check`) and installs nothing else.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.procs import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))


def run(args: list[str], cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "MAKE", "VIRTUAL_ENV"))}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env
    )


def packages(name: str) -> list[dict]:
    found = [p for p in LOCK["package"] if p["name"] == name]
    assert found, f"{name} is not in uv.lock"
    return found


# --- fresh -----------------------------------------------------------------------------------------


def test_uv_lock_matches_pyproject(uv: str) -> None:
    done = run([uv, "lock", "--check", "--offline"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_compiled_locks_match_their_inputs_and_carry_hashes() -> None:
    done = run([sys.executable, "tools/lock.py", "check"])
    assert done.returncode == 0, done.stderr


def test_every_locked_file_has_a_hash() -> None:
    for package in LOCK["package"]:
        if "registry" not in package.get("source", {}):
            continue
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        assert files, package["name"]
        for entry in files:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry.get("hash", "")), (package["name"], entry)


def test_the_build_backend_is_pinned_with_hashes_and_required_to_be() -> None:
    uv = PYPROJECT["tool"]["uv"]
    assert uv["require-build-hashes"] is True
    constraints = {c["requirement"].split("==")[0]: c["hashes"] for c in uv["build-constraint-dependencies"]}
    assert {"hatchling", "editables"} <= constraints.keys()
    assert all(hashes for hashes in constraints.values())
    # uv records them in uv.lock, so changing them without `make lock` makes the lock stale
    recorded = {c["name"] for c in LOCK["manifest"]["build-constraints"]}
    assert recorded == set(constraints)


def test_tools_uv_txt_pins_one_uv_release_with_a_hash_per_file() -> None:
    text = (REPO / "tools" / "uv.txt").read_text(encoding="utf-8")
    pins = re.findall(r"^([a-z0-9-]+)==(\S+)", text, flags=re.MULTILINE)
    assert [name for name, _ in pins] == ["uv"], pins
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 2
    assert f"uv=={pins[0][1]}" in (REPO / "tools" / "uv.in").read_text(encoding="utf-8")


# --- universal -------------------------------------------------------------------------------------


def test_lock_is_universal_from_the_oldest_supported_python() -> None:
    assert LOCK["requires-python"] == PYPROJECT["project"]["requires-python"] == ">=3.11"
    # no [tool.uv] environments: nothing narrows the resolution to some platforms
    assert "environments" not in PYPROJECT["tool"]["uv"]
    assert "supported-markers" not in LOCK
    # Windows-only dependencies are locked too (uv.lock holds every platform's, with markers)
    markers = [d.get("marker", "") for p in LOCK["package"] for d in p.get("dependencies", [])]
    assert any("sys_platform == 'win32'" in m for m in markers)


def test_python_magic_is_locked_for_every_platform() -> None:
    (magic,) = packages("python-magic")
    (wheel,) = magic["wheels"]
    assert wheel["url"].endswith("-py2.py3-none-any.whl"), "pure Python: one wheel for every platform"
    (bridge,) = packages("dust-mcp-bridge")
    (dep,) = [d for d in bridge["dependencies"] if d["name"] == "python-magic"]
    assert "marker" not in dep, "python-magic is needed everywhere, not on some platforms only"


PLATFORMS = {
    "linux x86_64": r"manylinux[\w.]*_x86_64",
    "linux aarch64": r"manylinux[\w.]*_aarch64",
    "macos arm64": r"macosx_\d+_\d+_(arm64|universal2)",
    "macos x86_64": r"macosx_\d+_\d+_(x86_64|universal2)",
    "windows amd64": r"win_amd64",
}
COMPILED = ["pydantic-core", "aiohttp", "cryptography", "httptools", "multidict", "yarl", "frozenlist"]


@pytest.mark.parametrize(
    ("name", "platform", "minor"),
    list(itertools.product(COMPILED, PLATFORMS, (11, 12, 13))),
    ids=lambda v: str(v).replace(" ", "-"),
)
def test_compiled_dependencies_have_a_locked_wheel_for_each_platform_and_python(
    name: str, platform: str, minor: int
) -> None:
    """Linux, macOS (Apple silicon and Intel) and Windows, Python 3.11 to 3.13: a wheel, no compiler
    needed (for Intel Macs the lock holds the last cryptography with such a wheel: pyproject.toml)."""
    wheels = [w["url"].rsplit("/", 1)[1] for p in packages(name) for w in p.get("wheels", [])]
    abi = rf"(cp3{minor}-cp3{minor}|cp3(1[1-{minor - 10}])-abi3)"
    pattern = re.compile(rf"-{abi}-[\w.]*{PLATFORMS[platform]}")
    assert any(pattern.search(w) for w in wheels), f"{name}: no {platform} wheel for Python 3.{minor}"


# --- stale -----------------------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path, uv: str) -> Path:
    """What `make lock-check` reads, in a directory of its own (.venv-uv linked, not rebuilt)."""
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    for rel in ("Makefile", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(REPO / rel, root / rel)
    for path in (REPO / "tools").glob("*.*"):
        if path.suffix in (".in", ".txt", ".py"):
            shutil.copy2(path, root / "tools" / path.name)
    (root / ".venv-uv").symlink_to(Path(uv).parent.parent)
    return root


def lock_check(root: Path) -> subprocess.CompletedProcess[str]:
    # -o: the bootstrap stamp counts as made (the linked .venv-uv is this checkout's)
    return run(["make", "--no-print-directory", "-o", ".venv-uv/.installed", "lock-check"], cwd=root)


def test_lock_check_passes_on_the_committed_locks(checkout: Path) -> None:
    done = lock_check(checkout)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_changed_range_without_make_lock_stops_make_with_make_lock(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    changed = text.replace('"imagesize>=1.4,<3"', '"imagesize>=1.4,<4"')
    assert changed != text
    pyproject.write_text(changed, encoding="utf-8")
    done = lock_check(checkout)
    assert done.returncode != 0
    assert "uv.lock does not match pyproject.toml" in done.stderr, done.stderr
    assert "run `make lock`" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("missing", "target"),
    [
        ("uv.lock", ".venv/.installed"),  # what `make run` and `make test` install first
        ("tools/requirements.txt", ".venv-tools/.installed"),
        ("tools/audit.txt", "audit"),
        ("tools/uv.txt", ".venv-uv/.installed"),
    ],
)
def test_a_missing_lock_file_stops_make_with_make_lock(checkout: Path, missing: str, target: str) -> None:
    (checkout / missing).unlink()
    # -o as in lock_check, but not when uv's own lock is the one missing: its stamp must be made for that
    keep_uv = [] if missing == "tools/uv.txt" else ["-o", ".venv-uv/.installed"]
    done = run(["make", "--no-print-directory", *keep_uv, target], cwd=checkout)
    assert done.returncode != 0
    assert f"{missing} is missing: run `make lock`" in done.stderr, done.stderr
    assert "No rule to make target" not in done.stderr, done.stderr


def test_make_lock_without_tools_uv_txt_bootstraps_uv_from_tools_uv_in(checkout: Path) -> None:
    (checkout / "tools" / "uv.txt").unlink()
    done = run(["make", "--no-print-directory", "--dry-run", "lock"], cwd=checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    install, compile_uv = (
        next(i for i, line in enumerate(done.stdout.splitlines()) if needle in line)
        for needle in ("-r tools/uv.in", "pip compile")
    )
    assert install < compile_uv, done.stdout
    assert "tools/uv.in -o tools/uv.txt" in done.stdout.splitlines()[compile_uv]


def test_a_changed_tool_pin_without_make_lock_stops_make_with_make_lock(checkout: Path) -> None:
    source = checkout / "tools" / "requirements.in"
    text = source.read_text(encoding="utf-8")
    changed = re.sub(r"^yamllint==\S+$", "yamllint==1.0.0", text, flags=re.MULTILINE)
    assert changed != text
    source.write_text(changed, encoding="utf-8")
    done = lock_check(checkout)
    assert done.returncode != 0
    assert "tools/requirements.in asks for yamllint==1.0.0" in done.stderr, done.stderr
    assert "run `make lock`" in done.stderr, done.stderr


# --- test-latest's table -----------------------------------------------------------------------------


def test_lock_diff_prints_the_versions_that_moved(tmp_path: Path) -> None:
    def lock(path: Path, versions: dict[str, str]) -> Path:
        source = 'source = { registry = "https://pypi.org/simple" }'
        body = "".join(
            f'[[package]]\nname = "{n}"\nversion = "{v}"\n{source}\n\n' for n, v in versions.items()
        )
        path.write_text("version = 1\n\n" + body, encoding="utf-8")
        return path

    old = lock(tmp_path / "old.lock", {"redis": "7.4.1", "ruff": "0.13.3", "anyio": "4.16.0"})
    new = lock(tmp_path / "new.lock", {"redis": "8.2.0", "ruff": "0.13.3", "anyio": "4.16.0", "idna": "3.21"})
    done = run([sys.executable, "tools/lock.py", "diff", str(old), str(new)])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "2 of 4 packages moved since the lock (locked -> newest allowed):"
    assert any(re.fullmatch(r"\s+redis\s+7\.4\.1 -> 8\.2\.0", line) for line in lines), lines
    assert any(re.fullmatch(r"\s+idna\s+\(none\) -> 3\.21", line) for line in lines), lines
    same = run([sys.executable, "tools/lock.py", "diff", str(old), str(old)])
    assert same.stdout.startswith("the newest releases the ranges allow are the locked ones"), same.stdout
