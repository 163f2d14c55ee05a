"""Async client for the Dust (dust.tt) public API and its agent event stream."""

from bridge.dust.breaker import CircuitBreaker
from bridge.dust.client import CreatedConversation, DustClient, PostedMessage
from bridge.dust.errors import (
    DustAuthError,
    DustBadRequest,
    DustError,
    DustForbidden,
    DustNotFound,
    DustRateLimited,
    DustServerError,
    DustStreamError,
    DustUnavailable,
)
from bridge.dust.events import TERMINAL_TYPES, AgentEvent
from bridge.dust.models import (
    Agent,
    AgentMessage,
    ContentFragment,
    Conversation,
    DustFile,
    MessageContext,
    UserMessage,
)

__all__ = [
    "TERMINAL_TYPES",
    "Agent",
    "AgentEvent",
    "AgentMessage",
    "CircuitBreaker",
    "ContentFragment",
    "Conversation",
    "CreatedConversation",
    "DustAuthError",
    "DustBadRequest",
    "DustClient",
    "DustError",
    "DustFile",
    "DustForbidden",
    "DustNotFound",
    "DustRateLimited",
    "DustServerError",
    "DustStreamError",
    "DustUnavailable",
    "MessageContext",
    "PostedMessage",
    "UserMessage",
]
