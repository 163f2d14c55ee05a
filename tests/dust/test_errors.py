"""Error mapping and sanitising, from a status and a body alone (no server)."""

from __future__ import annotations

import json

import pytest

from bridge.dust.errors import (
    MAX_MESSAGE_CHARS,
    DustAuthError,
    DustBadRequest,
    DustError,
    DustForbidden,
    DustNotFound,
    DustRateLimited,
    DustServerError,
    DustUnavailable,
    error_from_response,
    parse_retry_after,
    sanitize,
)
from bridge.errors import BridgeError, LimitExceeded, Unavailable, UpstreamFailure


def body(err_type: str, message: str) -> bytes:
    return json.dumps({"error": {"type": err_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "err_type", "expected"),
    [
        (401, "invalid_api_key_error", DustAuthError),
        (401, "not_authenticated", DustAuthError),
        (403, "workspace_can_use_product_required_error", DustAuthError),
        (403, "plan_message_limit_exceeded", DustRateLimited),
        (403, "conversation_access_restricted", DustForbidden),
        (401, "invalid_request_error", DustForbidden),
        (404, "conversation_not_found", DustNotFound),
        (404, "agent_configuration_not_found", DustNotFound),
        (404, "workspace_not_found", DustNotFound),
        (400, "invalid_request_error", DustBadRequest),
        (413, "content_too_large", DustBadRequest),
        (429, "rate_limit_error", DustRateLimited),
        (500, "internal_server_error", DustServerError),
        (503, "service_unavailable", DustUnavailable),
    ],
)
def test_status_and_type_map_to_class(status: int, err_type: str, expected: type[DustError]) -> None:
    error = error_from_response(status, body(err_type, "Something."))
    assert type(error) is expected
    assert error.status == status
    assert error.type == err_type
    assert error.message == "Something."


@pytest.mark.parametrize(
    ("status", "err_type", "category", "code"),
    [
        (429, "rate_limit_error", LimitExceeded, "rate_limited"),
        (503, "service_unavailable", Unavailable, "dust_unavailable"),
        (500, "internal_server_error", UpstreamFailure, "upstream_error"),
    ],
)
def test_a_dust_failure_carries_its_categorys_code(
    status: int, err_type: str, category: type[BridgeError], code: str
) -> None:
    error = error_from_response(status, body(err_type, "Something."))
    assert isinstance(error, category) and error.code == code


def test_a_503_says_dust_is_unavailable_and_an_unreachable_dust_says_so() -> None:
    answered = error_from_response(503, body("service_unavailable", "Down for maintenance."))
    assert answered.for_user() == (
        "Dust is unavailable right now (HTTP 503 service_unavailable: Down for maintenance.); "
        "try again shortly."
    )
    unreachable = DustUnavailable("could not reach Dust", type="connection_refused")
    assert unreachable.for_user().startswith("Dust is unreachable right now")


def test_html_body_gives_short_clean_message() -> None:
    page = b"<html><head><title>502</title></head><body>" + b"x" * 5000 + b"</body></html>"
    error = error_from_response(502, page, content_type="text/html; charset=utf-8")
    assert isinstance(error, DustServerError)
    assert error.type == "http_502"
    assert error.message == "Dust answered 502 Bad Gateway (text/html)"
    assert "<html" not in str(error) and "<html" not in repr(error)


def test_bodiless_403_is_auth_and_413_is_content_too_large() -> None:
    assert isinstance(error_from_response(403, b""), DustAuthError)
    error = error_from_response(413, b"")
    assert isinstance(error, DustBadRequest)
    assert error.type == "content_too_large"


def test_retry_after_seconds_and_date() -> None:
    error = error_from_response(429, body("rate_limit_error", "Slow down."), retry_after="7")
    assert isinstance(error, DustRateLimited)
    assert error.retry_after == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_secrets_never_reach_str_or_repr() -> None:
    key = "sk-0123456789abcdefABCDEF"
    message = f"Key {key} with header Authorization: Bearer {key} and token oauth-TOKEN-42 failed"
    error = error_from_response(401, body("invalid_api_key_error", message), secrets=["oauth-TOKEN-42"])
    for text in (str(error), repr(error), error.message, str(error.args)):
        assert key not in text
        assert "0123456789abcdef" not in text
        assert "oauth-TOKEN-42" not in text
    assert "sk-***" in error.message


def test_direct_construction_is_sanitised_too() -> None:
    error = DustError("leaked Bearer abc.def.ghi here", status=500)
    assert "abc.def.ghi" not in str(error)
    assert str(error) == "leaked Bearer *** here (HTTP 500, dust_error)"


def test_message_is_truncated_and_whitespace_collapsed() -> None:
    text = sanitize("a\n\n\tb " + "y" * 1000)
    assert text.startswith("a b y")
    assert len(text) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("status", "err_type", "message", "expected", "means"),
    [
        (
            401,
            "invalid_request_error",
            "The user must be authenticated with oAuth to retrieve list agents.",
            DustForbidden,
            "this needs a signed-in Dust user (OAuth); a workspace API key cannot use it",
        ),
        (403, "app_auth_error", "Only admins may list all_unrestricted.", DustForbidden, "an admin key"),
        (
            403,
            "conversation_access_restricted",
            "No access.",
            DustForbidden,
            "no access to this conversation",
        ),
        (401, "invalid_api_key_error", "The API key provided is invalid.", DustAuthError, "DUST_API_KEY"),
        (401, "workspace_auth_error", "Only users of the workspace.", DustAuthError, "DUST_WORKSPACE_ID"),
        (404, "workspace_not_found", "The workspace was not found.", DustNotFound, "DUST_BASE_URL"),
    ],
)
def test_a_refusal_keeps_dusts_message_and_says_what_it_means(
    status: int, err_type: str, message: str, expected: type[DustError], means: str
) -> None:
    error = error_from_response(status, body(err_type, message))
    assert type(error) is expected
    described = error.for_user()
    assert f"HTTP {status} {err_type}: {message}" in described
    assert means in described
    # A valid key refused one view is not told its key is invalid.
    assert ("credentials (" in described) is (expected is DustAuthError)
