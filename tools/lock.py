"""Helpers for the lock files (`make lock`, the install targets, `make test-latest`); standard library only.

    python3 tools/lock.py check                      exit 1, naming `make lock`, if a lock file is stale
    python3 tools/lock.py build-constraints UV [--upgrade]
                                                     re-pin the build backend in pyproject.toml ([tool.uv])
    python3 tools/lock.py diff OLD_UV_LOCK NEW_UV_LOCK
                                                     the versions that moved, as a table (old -> new)

The lock files, all written by `make lock` with uv (see the Makefile for why uv):
  uv.lock                  the bridge's runtime and dev dependencies, universal (every Python from 3.11 on,
                           Linux, macOS and Windows in one file), with hashes
  pyproject.toml           [tool.uv] build-constraint-dependencies: hatchling and what it needs to build the
                           bridge itself, pinned with hashes (uv records them in uv.lock too)
  tools/requirements.txt   the deploy validators (.venv-tools), compiled from tools/requirements.in
  tools/audit.txt          pip-audit and bandit (`make audit`, CI's audit job), from tools/audit.in
  tools/uv.txt             uv itself, compiled from tools/uv.in, installed with `pip --require-hashes`
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
UV_LOCK = REPO / "uv.lock"
# (input, compiled lock) pairs written by `uv pip compile --generate-hashes`
COMPILED = [
    (REPO / "tools" / "uv.in", REPO / "tools" / "uv.txt"),
    (REPO / "tools" / "requirements.in", REPO / "tools" / "requirements.txt"),
    (REPO / "tools" / "audit.in", REPO / "tools" / "audit.txt"),
]
# hatchling asks for this when it builds the editable install of `make run` / `make test`.
EDITABLE_BUILD_REQUIRES = ["editables~=0.3"]
# The oldest Python the project supports (requires-python): the compiled locks are universal from here on.
PYTHON_VERSION = "3.11"
STALE = "run `make lock` (it rewrites the lock files from pyproject.toml and tools/*.in) and commit them"

_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;\\]+)\s*(;[^\\]*)?", re.MULTILINE)
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_compiled(text: str) -> list[tuple[str, str, str, list[str]]]:
    """(name, version, marker, hashes) for every requirement of a `uv pip compile --generate-hashes` file."""
    entries = []
    # One requirement = its line and the `\`-continued `--hash` lines after it.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = _REQ.match(block.strip())
        if not match:
            continue
        marker = (match.group(4) or "").lstrip(";").strip()
        entries.append((canonical(match.group(1)), match.group(3), marker, _HASH.findall(block)))
    return entries


def input_pins(path: Path) -> dict[str, str]:
    """The `name==version` lines of a requirements .in file (comments and blank lines skipped)."""
    pins = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQ.match(line)
        if not match:
            raise SystemExit(f"{path.relative_to(REPO)}: `{line}` is not pinned with ==")
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def build_constraints(pyproject: dict) -> list[tuple[str, list[str]]]:
    """[tool.uv] build-constraint-dependencies as (requirement, hashes)."""
    out = []
    for entry in pyproject.get("tool", {}).get("uv", {}).get("build-constraint-dependencies", []):
        if isinstance(entry, str):
            out.append((entry, []))
        else:
            out.append((entry["requirement"], list(entry.get("hashes", []))))
    return out


def check() -> list[str]:
    """Every way the lock files can disagree with what they were made from, without the network."""
    problems = []
    for source, compiled in COMPILED:
        name = compiled.relative_to(REPO)
        if not compiled.exists():
            problems.append(f"{name} is missing")
            continue
        entries = parse_compiled(compiled.read_text(encoding="utf-8"))
        locked = {n: v for n, v, _, _ in entries}
        for pkg, version in input_pins(source).items():
            if locked.get(pkg) != version:
                problems.append(
                    f"{source.relative_to(REPO)} asks for {pkg}=={version}, {name} has {locked.get(pkg, 'none')}"
                )
        problems += [f"{name}: {n}=={v} has no hash" for n, v, _, hashes in entries if not hashes]
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    constraints = build_constraints(pyproject)
    pinned = {canonical(_REQ.match(r).group(1)) for r, _ in constraints if _REQ.match(r)}
    for requirement in pyproject["build-system"]["requires"] + EDITABLE_BUILD_REQUIRES:
        pkg = canonical(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        if pkg not in pinned:
            problems.append(f"pyproject.toml: the build requirement {pkg} has no pinned build constraint")
    problems += [f"pyproject.toml: build constraint {r} has no hash" for r, h in constraints if not h]
    if not pyproject.get("tool", {}).get("uv", {}).get("require-build-hashes"):
        problems.append("pyproject.toml: [tool.uv] require-build-hashes must be true")
    return problems


def write_build_constraints(uv: str, upgrade: bool) -> None:
    """Re-pin [tool.uv] build-constraint-dependencies: build-system.requires, compiled with hashes by uv."""
    text = PYPROJECT.read_text(encoding="utf-8")
    pyproject = tomllib.loads(text)
    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp) / "build.in", Path(tmp) / "build.txt"
        source.write_text("\n".join(pyproject["build-system"]["requires"] + EDITABLE_BUILD_REQUIRES) + "\n")
        # The current pins as the output file: uv keeps them unless the requirements (or --upgrade) say otherwise.
        output.write_text(
            "".join(
                f"{req} " + " ".join(f"--hash={h}" for h in hashes) + "\n"
                for req, hashes in build_constraints(pyproject)
            )
        )
        args = [str(Path(uv).resolve()), "pip", "compile", "--quiet", "--universal", "--generate-hashes", "--no-header"]
        args += ["--no-annotate", "--python-version", PYTHON_VERSION, str(source), "-o", str(output)]
        subprocess.run([*args, "--upgrade"] if upgrade else args, check=True, cwd=tmp)
        entries = parse_compiled(output.read_text(encoding="utf-8"))
    lines = []
    for name, version, marker, hashes in entries:
        requirement = f"{name}=={version}" + (f" ; {marker}" if marker else "")
        lines.append(f'    {{ requirement = "{requirement}", hashes = [\n')
        lines += [f'        "{h}",\n' for h in hashes]
        lines.append("    ] },\n")
    block = "build-constraint-dependencies = [\n" + "".join(lines) + "]\n"
    pattern = re.compile(r"^build-constraint-dependencies = \[\n.*?^\]\n", re.MULTILINE | re.DOTALL)
    if not pattern.search(text):
        raise SystemExit("pyproject.toml: no `build-constraint-dependencies = [` block under [tool.uv]")
    updated = pattern.sub(lambda _: block, text, count=1)
    if updated != text:  # unchanged, the file keeps its date (make's stamps depend on it)
        PYPROJECT.write_text(updated, encoding="utf-8")


def lock_versions(path: Path) -> dict[str, str]:
    """name -> version(s) of the packages in a uv.lock (a package locked at two versions shows both)."""
    found: dict[str, set[str]] = {}
    for package in tomllib.loads(path.read_text(encoding="utf-8")).get("package", []):
        if "registry" in package.get("source", {}):
            found.setdefault(package["name"], set()).add(package["version"])
    return {name: ", ".join(sorted(versions)) for name, versions in found.items()}


def diff(old: Path, new: Path) -> str:
    before, after = lock_versions(old), lock_versions(new)
    rows = [
        (name, before.get(name, "(none)"), after.get(name, "(none)"))
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    if not rows:
        return f"the newest releases the ranges allow are the locked ones ({len(before)} packages)"
    width = max(len(r[0]) for r in rows)
    col = max(len(r[1]) for r in rows)
    lines = [f"{len(rows)} of {len(before | after)} packages moved since the lock (locked -> newest allowed):"]
    lines += [f"  {name:<{width}}  {old_v:>{col}} -> {new_v}" for name, old_v, new_v in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        problems = check()
        for problem in problems:
            print(f"stale lock: {problem}", file=sys.stderr)
        if problems:
            print(f"stale lock: {STALE}", file=sys.stderr)
        return 1 if problems else 0
    if argv[:1] == ["build-constraints"] and len(argv) in (2, 3):
        write_build_constraints(argv[1], upgrade="--upgrade" in argv[2:])
        return 0
    if argv[:1] == ["diff"] and len(argv) == 3:
        print(diff(Path(argv[1]), Path(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
