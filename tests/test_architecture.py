"""The house rules, checked on the code itself: layers only import downwards, functions stay short.

The layers, top to bottom (docs/architecture.md draws them). A module may import its own layer and
the layers below it, never one above: the root wires everything together, and nothing else does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bridge"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Entry points, settings and the wiring of every part.
    (
        "root",
        (
            "bridge.__main__",
            "bridge.cli",
            "bridge.check",
            "bridge.client_configs",
            "bridge.runtime",
            "bridge.app",
            "bridge.config",
            "bridge.desktop",
            "bridge.workers",
        ),
    ),
    ("http", ("bridge.http",)),  # the Starlette face: routes, problem+json, middleware
    ("mcp", ("bridge.mcp",)),  # the MCP face: server, tools, resources, prompts, /mcp
    ("domain", ("bridge.domain",)),  # agent turns, the relay, the agent directory
    ("uploads", ("bridge.uploads",)),  # the upload pipeline, MIME, clamd
    ("security", ("bridge.security",)),  # client keys, OAuth, limits, audit
    ("store", ("bridge.store",)),  # records, back ends, the Redis connection, sealing
    ("simulator", ("bridge.simulator",)),  # the Dust stand-in (used by the root for the demo)
    ("dust", ("bridge.dust",)),  # the Dust client
    ("observability", ("bridge.observability",)),  # request context, logging, metrics
    ("base", ("bridge.errors", "bridge")),  # the error tree and the version
]
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the layer `module` belongs to (the longest matching prefix wins)."""
    best, depth = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every `bridge` import, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "bridge" else [f"bridge.{a.name}" for a in node.names]
            found += [(node.lineno, name) for name in names if name.startswith("bridge")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("bridge")]
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def upward_imports() -> list[str]:
    found = []
    for path in sources():
        here = module_name(path)
        for line, target in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if layer_of(target) < layer_of(here):
                found.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {here} ({LAYERS[layer_of(here)][0]})"
                    f" imports {target} ({LAYERS[layer_of(target)][0]}), a layer above it"
                )
    return found


def long_functions() -> list[str]:
    found = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            has_docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            first = body[1] if has_docstring and len(body) > 1 else body[0]
            lines = (node.end_lineno or node.lineno) - first.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.name} has {lines} lines"
                )
    return found


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    violations = upward_imports()
    assert not violations, "imports that run upwards:\n" + "\n".join(violations)


def test_no_function_is_longer_than_a_screen() -> None:
    violations = long_functions()
    assert not violations, f"functions over {MAX_FUNCTION_LINES} lines (docstring aside):\n" + "\n".join(
        violations
    )


@pytest.mark.parametrize(
    ("module", "layer"),
    [("bridge.cli", "root"), ("bridge.dust.client", "dust"), ("bridge.errors", "base"), ("bridge", "base")],
)
def test_layers_are_found_by_the_longest_prefix(module: str, layer: str) -> None:
    assert LAYERS[layer_of(module)][0] == layer


def test_an_upward_import_is_caught() -> None:
    tree = ast.parse("def f():\n    from bridge.cli import main\n")
    ((line, target),) = imported_modules(tree)
    assert (line, target) == (2, "bridge.cli")
    assert layer_of(target) < layer_of("bridge.dust.client")
