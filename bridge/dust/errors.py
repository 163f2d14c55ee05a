"""Errors raised by the Dust client, and the mapping from Dust's HTTP error responses to them.

Every message is sanitised when the error is built (secrets masked by the bridge's one masker,
`bridge.observability.redact`; whitespace collapsed, length capped), so `str()`/`repr()` of any
`DustError` is safe to log or show to an MCP client.
"""

from __future__ import annotations

import email.utils
import http
import json
import re
import time
from collections.abc import Iterable

from bridge.errors import LimitExceeded, Unavailable, UpstreamFailure
from bridge.observability.redact import redact

MAX_MESSAGE_CHARS = 300

_WHITESPACE = re.compile(r"\s+")

# 401s are always authentication failures; these are the 403 types that mean the key or the
# workspace's plan cannot use the API (dust-api.md section 1), as opposed to per-resource 403s.
AUTH_ERROR_TYPES = frozenset(
    {
        "not_authenticated",
        "missing_authorization_header_error",
        "malformed_authorization_header_error",
        "invalid_api_key_error",
        "workspace_auth_error",
        "workspace_can_use_product_required_error",
    }
)
# Dust answers a per-workspace message burst with a 403 of this type, not a 429 (dust-api.md section 2).
PLAN_LIMIT_TYPE = "plan_message_limit_exceeded"


def sanitize(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the given secrets and every secret shape (`redact`); collapse whitespace; cap the length."""
    text = _WHITESPACE.sub(" ", redact(text, secrets)).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


class DustError(UpstreamFailure):
    """A Dust API call failed. `type` is Dust's `error.type` or one of ours; `message` is sanitised."""

    def __init__(self, message: str, *, status: int | None = None, type: str = "dust_error") -> None:
        self.message = sanitize(message)
        self.status = status
        self.type = sanitize(type)
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f"HTTP {self.status}, {self.type}" if self.status is not None else self.type
        return f"{self.message} ({where})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, type={self.type!r}, message={self.message!r})"

    @property
    def reason(self) -> str:
        """Dust's own reason as the user sees it: `HTTP 401 invalid_api_key_error: <message>`."""
        status = f"HTTP {self.status} " if self.status else ""
        return f"{status}{self.type}: {self.message}" if self.message else f"{status}{self.type}"

    def for_user(self) -> str:
        """Dust's own reason, then what it means and what to do (the message is already sanitised)."""
        explained = meaning(self)
        suffix = f": {explained}" if explained else ""
        return f"Dust returned an error ({self.reason}){suffix}."


class DustAuthError(DustError):
    """The API key is missing, invalid, for another workspace, or the plan forbids API use."""

    def for_user(self) -> str:
        return (
            f"Dust refused the bridge's credentials ({self.reason}): {meaning(self) or 'check DUST_API_KEY'}."
        )


class DustNotFound(DustError):
    """The workspace, agent, conversation, message or file does not exist (404)."""


class DustBadRequest(DustError):
    """Dust rejected the request itself (400, 413 and other 4xx); retrying will not help."""


class DustForbidden(DustBadRequest):
    """The key is valid but may not do this: a view that needs a signed-in Dust user, an admin-only
    listing, a conversation or space it has no access to (a 401/403 that is not about the key)."""

    def for_user(self) -> str:
        return f"Dust refused this request ({self.reason}): {meaning(self)}."


class DustRateLimited(DustError, LimitExceeded):
    """Dust is throttling this workspace (429, or 403 `plan_message_limit_exceeded`)."""

    # Its category's code, not DustError's (which the method order would pick): the metric outcome
    # and the problem type of a refusal over budget are `rate_limited` whoever set the budget.
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str = "rate_limit_error",
        retry_after: float | None = None,
    ) -> None:
        DustError.__init__(self, message, status=status, type=type)
        self.retry_after = retry_after

    def for_user(self) -> str:
        return f"Dust is rate-limiting this workspace ({self.reason}); try again in a minute."


class DustFileNotDownloadable(DustBadRequest):
    """Dust refuses a file to an API key: `GET files/{fileId}` answers 400 `invalid_request_error`
    for every use case but `conversation` (front-api/routes/v1/w/[wId]/files/[fileId].ts), so a
    file a tool made itself (`tool_output`) cannot be fetched by its sId."""

    code = "file_not_downloadable"

    def for_user(self) -> str:
        return (
            f"Dust does not let an API key download this file ({self.reason}): "
            "it is a file an agent's tool made, readable in Dust itself."
        )


class DustFileTooLarge(DustError):
    """A download stopped at the caller's byte limit; nothing more was read."""

    code = "file_too_large"

    def __init__(self, message: str, *, status: int | None = None, type: str = "file_too_large") -> None:
        super().__init__(message, status=status, type=type)

    def for_user(self) -> str:
        return f"The file is too large to fetch here ({self.message})."


class DustServerError(DustError):
    """Dust answered 5xx other than 503 (after the retries that were safe), or a response we
    cannot read."""


class DustUnavailable(DustError, Unavailable):
    """Dust could not be reached (connect errors, timeouts), answered 503 Service Unavailable after
    the retries, or the circuit breaker is open: retrying later may work."""

    code = "dust_unavailable"

    def for_user(self) -> str:
        state = "unavailable" if self.status else "unreachable"
        return f"Dust is {state} right now ({self.reason}); try again shortly."


class DustStreamError(DustError, Unavailable):
    """The agent event stream gave up: too many failed reconnects, or the total time ran out."""


# What a refusal means for the person running the bridge, by Dust's `error.type`
# (reference/dust-api.md sections 1 and 4).
_MEANINGS = {
    "not_authenticated": "no API key reached Dust: set DUST_API_KEY",
    "missing_authorization_header_error": "no API key reached Dust: set DUST_API_KEY",
    "malformed_authorization_header_error": "DUST_API_KEY is not a Dust workspace key (sk-...)",
    "invalid_api_key_error": "DUST_API_KEY is unknown to Dust or was disabled: create a new key in Dust",
    "workspace_auth_error": "the key belongs to another workspace than DUST_WORKSPACE_ID",
    "workspace_not_found": "no workspace has the sId in DUST_WORKSPACE_ID (or it is in another region:"
    " check DUST_BASE_URL, https://dust.tt or https://eu.dust.tt)",
    "workspace_can_use_product_required_error": "the workspace's Dust plan does not allow API use",
    "app_auth_error": "this needs a key with more rights (an admin key)",
    "conversation_access_restricted": "the key has no access to this conversation",
    "agent_configuration_not_found": "no such agent, or the key cannot see it",
    "conversation_not_found": "Dust no longer has this conversation",
    "message_not_found": "Dust no longer has this message",
    "file_not_found": "Dust no longer has this file",
}


def meaning(exc: DustError) -> str | None:
    """What a Dust refusal means and what to do about it, in one clause; None when Dust's own
    message says it all."""
    if exc.status == 401 and exc.type == "invalid_request_error" and "oauth" in exc.message.lower():
        return "this needs a signed-in Dust user (OAuth); a workspace API key cannot use it"
    found = _MEANINGS.get(exc.type)
    if found is not None:
        return found
    if isinstance(exc, DustForbidden):
        return "the API key is valid but may not do this"
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """`(error.type, error.message)` from a Dust error body, or Nones if it is not one."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, None
    err_type = error.get("type")
    message = error.get("message")
    return (
        err_type if isinstance(err_type, str) and err_type else None,
        message if isinstance(message, str) and message else None,
    )


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def error_from_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "",
    retry_after: str | None = None,
    secrets: Iterable[str] = (),
) -> DustError:
    """Map an HTTP error response to the matching `DustError` subclass.

    A body that is not Dust's `{"error": {"type", "message"}}` (an HTML error page from a proxy,
    say) never reaches the message: only the status, its reason and the content type do.
    """
    err_type, message = _error_fields(body)
    if message is None:
        media = content_type.partition(";")[0].strip() or "no content type"
        message = f"Dust answered {status} {_reason(status)} ({media})"
    message = sanitize(message, secrets)
    # Dust's SDK calls any bodiless 413 `content_too_large`; keep the same name for callers.
    kind = err_type or ("content_too_large" if status == 413 else f"http_{status}")
    if status == 429 or err_type == PLAN_LIMIT_TYPE:
        return DustRateLimited(message, status=status, type=kind, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        # A 401 is not always about the key: Dust refuses OAuth-only views to every API key with
        # 401 invalid_request_error (agent_configurations route, `viewRequiresUser`).
        if err_type is None or err_type in AUTH_ERROR_TYPES:
            return DustAuthError(message, status=status, type=kind)
        return DustForbidden(message, status=status, type=kind)
    if status == 404:
        return DustNotFound(message, status=status, type=kind)
    if status == http.HTTPStatus.SERVICE_UNAVAILABLE:
        # Dust says it cannot serve now, not that it failed the request: retrying may work.
        return DustUnavailable(message, status=status, type=kind)
    if status >= 500:
        return DustServerError(message, status=status, type=kind)
    return DustBadRequest(message, status=status, type=kind)
