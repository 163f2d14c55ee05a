"""Logging (bridge/observability/logging.py): one stderr handler, text or JSON lines stamped with the
request id and principal, and every line masked before it is formatted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bridge.observability.context import PRINCIPAL, REQUEST_ID
from bridge.observability.logging import RedactingFilter, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the adopted loggers back as they were."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    adopted = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mcp")
    }
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in adopted.items():
        logging.getLogger(name).handlers = handlers
        logging.getLogger(name).propagate = propagate


def _log_one_request(capsys: pytest.CaptureFixture[str]) -> list[str]:
    request, principal = REQUEST_ID.set("req-1"), PRINCIPAL.set("carol")
    try:
        logging.getLogger("bridge.x").warning("calling with %s", "sk-0123456789abcdef and topsecretvalue")
        logging.getLogger("bridge.audit").info(json.dumps({"event": "auth_success", "principal": "carol"}))
        logging.getLogger("uvicorn.error").info("from uvicorn")
        logging.getLogger("bridge.x").debug("below the level")
    finally:
        REQUEST_ID.reset(request)
        PRINCIPAL.reset(principal)
    logging.getLogger("bridge.x").info("outside any request")
    return capsys.readouterr().err.splitlines()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_carry_the_request_and_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text", ["topsecretvalue"])
    lines = _log_one_request(capsys)
    assert len(lines) == 4
    assert lines[0].endswith(" WARNING bridge.x [request=req-1 principal=carol]: calling with sk-*** and ***")
    assert lines[1].endswith(
        ' INFO bridge.audit [request=req-1 principal=carol]: {"event": "auth_success", "principal": "carol"}'
    )
    assert lines[2].endswith(" INFO uvicorn.error [request=req-1 principal=carol]: from uvicorn")
    assert lines[3].endswith(" INFO bridge.x: outside any request")
    assert logging.getLogger("uvicorn").handlers == [] and logging.getLogger("mcp").propagate


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_merge_audit_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", ["topsecretvalue"])
    entries = [json.loads(line) for line in _log_one_request(capsys)]
    assert [{k: v for k, v in e.items() if k != "ts"} for e in entries] == [
        {
            "level": "WARNING",
            "logger": "bridge.x",
            "message": "calling with sk-*** and ***",
            "request_id": "req-1",
            "principal": "carol",
        },
        {
            "level": "INFO",
            "logger": "bridge.audit",
            "event": "auth_success",
            "principal": "carol",
            "request_id": "req-1",
        },
        {
            "level": "INFO",
            "logger": "uvicorn.error",
            "message": "from uvicorn",
            "request_id": "req-1",
            "principal": "carol",
        },
        {"level": "INFO", "logger": "bridge.x", "message": "outside any request"},
    ]
    assert all(isinstance(e["ts"], float) for e in entries)


def test_the_filter_masks_arguments_exception_text_and_reprs() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "failed with %r", (("sk-inrepr12345678",),), None
    )
    try:
        raise RuntimeError("boom: Bearer sk-inexception999999")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter(["sk-inrepr12345678"]).filter(record)
    rendered = logging.Formatter().format(record)
    assert "sk-inrepr12345678" not in rendered and "sk-inexception999999" not in rendered
    assert "RuntimeError" in rendered  # the traceback itself is kept
