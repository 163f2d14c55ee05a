"""The bridge's timezone list is the pinned SDK's, so an SDK bump that changes it fails `make contract`.

Dust refuses a `context.timezone` outside the SDK's `TIMEZONE_NAMES` (400), and the bridge checks
`BRIDGE_DUST_TIMEZONE` against its generated copy at start-up; a stale copy would pass a value Dust
refuses, or refuse one Dust accepts.
"""

from __future__ import annotations

import json

import pytest

from bridge.dust.timezone_names import SDK_VERSION, TIMEZONE_NAMES
from tests.contract.conftest import NODE_MODULES
from tests.procs import REPO
from tools.gen_timezone_names import parse_names

SDK_ROOT = NODE_MODULES / "@dust-tt" / "client"
REGENERATE = "python tools/gen_timezone_names.py " + str(
    SDK_ROOT.relative_to(REPO) / "src" / "timezone_names.ts"
)


def test_the_timezone_names_are_the_pinned_sdks() -> None:
    source = SDK_ROOT / "src" / "timezone_names.ts"
    if not source.exists():
        pytest.fail(f"{source} missing: run `make node-tools`", pytrace=False)
    pinned = json.loads((SDK_ROOT / "package.json").read_text(encoding="utf-8"))["version"]
    names = set(parse_names(source.read_text(encoding="utf-8")))
    stale = f"bridge/dust/timezone_names.py is not the SDK {pinned}'s list; regenerate with\n  {REGENERATE}"
    assert pinned == SDK_VERSION, stale
    added, dropped = sorted(names - TIMEZONE_NAMES)[:20], sorted(TIMEZONE_NAMES - names)[:20]
    moved = f"only in the SDK: {added}; only here: {dropped}"
    assert names == TIMEZONE_NAMES, f"{stale}\n{moved}"
