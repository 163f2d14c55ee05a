"""Regenerate bridge/dust/timezone_names.py from the Dust SDK's `src/timezone_names.ts`.

Dust validates `message.context.timezone` against the `@dust-tt/client` SDK's `TIMEZONE_NAMES` list
(the `Timezone` refinement in the SDK's `src/types.ts`, used by the server through
`PublicPostConversationsRequestBodySchema` / `PublicPostMessagesRequestBodySchema`). The bridge
and the simulator share one copy of that list; this script rewrites it from a given SDK checkout.

Usage:
    python tools/gen_timezone_names.py /path/to/@dust-tt/client/src/timezone_names.ts [--version 1.2.8]

The SDK version is read from the `package.json` next to `src/` when `--version` is not given.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_OUTPUT = Path(__file__).resolve().parent.parent / "bridge" / "dust" / "timezone_names.py"
_ARRAY = re.compile(r"export\s+const\s+TIMEZONE_NAMES\s*=\s*\[(?P<body>.*?)\]", re.DOTALL)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_names(source: str) -> list[str]:
    """The string literals of the `TIMEZONE_NAMES` array, in file order."""
    match = _ARRAY.search(source)
    if match is None:
        raise ValueError("no `export const TIMEZONE_NAMES = [...]` array found")
    names = [json.loads(f'"{literal}"') for literal in _STRING.findall(match.group("body"))]
    if not names:
        raise ValueError("TIMEZONE_NAMES is empty")
    return names


def sdk_version(ts_path: Path) -> str | None:
    """The `version` of the package.json of the SDK that holds `ts_path`, if there is one."""
    package = ts_path.resolve().parent.parent / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def render(names: list[str], version: str) -> str:
    """The Python module text."""
    lines = [
        '"""Timezone names Dust accepts in `message.context.timezone` (the SDK\'s `TIMEZONE_NAMES`).',
        "",
        f"Generated from @dust-tt/client {version}, `src/timezone_names.ts`: the list Dust's request",
        "schemas (`PublicPostConversationsRequestBodySchema`, `PublicPostMessagesRequestBodySchema`)",
        "validate against; any other value is a 400 `invalid_request_error`. Do not edit by hand;",
        "regenerate with",
        "",
        "    python tools/gen_timezone_names.py <sdk>/src/timezone_names.ts",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f'SDK_VERSION = "{version}"',
        "",
        "TIMEZONE_NAMES: frozenset[str] = frozenset(",
        "    {",
    ]
    lines += [f"        {json.dumps(name)}," for name in names]
    lines += ["    }", ")", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timezone_names_ts", type=Path, help="path to the SDK's src/timezone_names.ts")
    parser.add_argument("--version", help="SDK version to record (default: from the SDK's package.json)")
    parser.add_argument("--output", type=Path, default=_OUTPUT, help=f"default: {_OUTPUT}")
    args = parser.parse_args(argv)
    names = parse_names(args.timezone_names_ts.read_text(encoding="utf-8"))
    version = args.version or sdk_version(args.timezone_names_ts)
    if version is None:
        parser.error("the SDK version could not be read from package.json; pass --version")
    args.output.write_text(render(names, version), encoding="utf-8")
    print(f"wrote {len(names)} timezone names (SDK {version}) to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
