"""Async client for the Dust (dust.tt) public API and its agent event stream."""

from bridge.dust.breaker import CircuitBreaker
from bridge.dust.client import CreatedConversation, DustClient, PostedMessage
from bridge.dust.errors import (
    DustAuthError,
    DustBadRequest,
    DustError,
    DustFileNotDownloadable,
    DustFileTooLarge,
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
    AgentAction,
    AgentMessage,
    ContentFragment,
    Conversation,
    DownloadedFile,
    DustFile,
    GeneratedFile,
    MessageContext,
    UserMessage,
)

__all__ = [
    "TERMINAL_TYPES",
    "Agent",
    "AgentAction",
    "AgentEvent",
    "AgentMessage",
    "CircuitBreaker",
    "ContentFragment",
    "Conversation",
    "CreatedConversation",
    "DownloadedFile",
    "DustAuthError",
    "DustBadRequest",
    "DustClient",
    "DustError",
    "DustFile",
    "DustFileNotDownloadable",
    "DustFileTooLarge",
    "DustForbidden",
    "DustNotFound",
    "DustRateLimited",
    "DustServerError",
    "DustStreamError",
    "DustUnavailable",
    "GeneratedFile",
    "MessageContext",
    "PostedMessage",
    "UserMessage",
]
