"""The one error tree of the bridge.

Every failure a caller may be told about is a `BridgeError`. Its category (the first level below)
says what kind of failure it is, and so how each boundary answers it; its `code` names the cause for
machines (a metric label, the problem type of an HTTP answer); its message names the cause for
people and never holds a secret. Each boundary translates once: the MCP face turns any BridgeError
into a tool error, the HTTP face into problem+json with the status of its category.

    BridgeError                                                            HTTP status
    ├── InvalidInput     the request cannot work as sent: fix it, do not retry   400 (413/415/422 by code)
    │     UnknownAgent, InvalidMessage, a refused upload (too_large, type_not_allowed, infected, ...)
    ├── NotFound         an unknown, expired or foreign handle or upload         404
    │     ConversationNotFound
    ├── LimitExceeded    over a budget; `retry_after` says when to try again     429
    │     TooManyAnswers, DustRateLimited
    ├── Unavailable      a dependency cannot serve now; retrying may work        503
    │     StoreUnavailable, ScannerUnavailable, DustUnavailable (unreachable, 503), DustStreamError
    └── UpstreamFailure  Dust refused or failed what was asked of it             502
          DustError and its kinds (dust/errors.py), AgentFailed (domain/answers.py)

Catch `BridgeError` at a boundary; a category where the code can act on it (retry what is
Unavailable); a leaf only where that one cause changes the flow.
"""

from __future__ import annotations


class BridgeError(Exception):
    """A failure worth telling the client about; `str()` is the message it sees (never a secret).

    `code` is a stable snake_case name for the cause: a class sets its default, an instance may be
    given a more precise one.
    """

    code = "bridge_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def for_user(self) -> str:
        """The sentence a boundary shows the caller (a tool error's text, a problem's detail)."""
        return str(self)


class InvalidInput(BridgeError):
    """The request cannot work as sent (bad arguments, a file that is refused): fix it, do not retry."""

    code = "invalid_input"


class NotFound(BridgeError):
    """An unknown, expired or foreign handle or upload."""

    code = "not_found"


class LimitExceeded(BridgeError):
    """Over a rate or concurrency budget; `retry_after` (seconds) says when to try again, if known."""

    code = "rate_limited"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(BridgeError):
    """A dependency (context store, virus scanner, Dust) cannot serve now; retrying later may work."""

    code = "unavailable"


class UpstreamFailure(BridgeError):
    """Dust refused or failed what was asked of it."""

    code = "upstream_error"
