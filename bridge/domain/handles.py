"""A principal's conversation records in the context store, found by handle.

A handle is the client's proof of a conversation: it maps (in the context store) to the Dust
conversation, the agent and the principal that made it. Handshake-era sessions also remember their
last handle per agent, so a client that never passes the handle still gets continuity. A handle that
is malformed, unknown, expired or someone else's is one and the same error, so a handle reveals
nothing about conversations its holder does not own.
"""

from __future__ import annotations

import logging

from bridge.dust.errors import DustNotFound
from bridge.dust.models import Agent
from bridge.errors import NotFound
from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.records import ConversationRecord, is_valid_handle

logger = logging.getLogger(__name__)


class ConversationNotFound(NotFound):
    """Malformed, unknown, expired or foreign handle (deliberately indistinguishable)."""

    code = "conversation_not_found"


class ConversationRecords:
    """Loads, saves and forgets the conversation records behind handles."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store

    async def load(self, principal: str, handle: str) -> ConversationRecord:
        """The record behind a handle the principal owns.

        Raises:
            ConversationNotFound: malformed, unknown, expired or foreign.
        """
        self._check_handle(handle)
        record = await self._store.load(handle, principal)
        if record is None:
            raise ConversationNotFound(_NOT_FOUND)
        return record

    async def existing(
        self,
        principal: str,
        session_key: str | None,
        agent: Agent,
        conversation: str | None,
        new_conversation: bool,
    ) -> ConversationRecord | None:
        """The conversation a turn continues: the handle passed, else the session's last one with
        the agent, else none (a new conversation)."""
        if conversation is not None:
            return await self.load(principal, conversation)
        if new_conversation or session_key is None:
            return None
        handle = await self._store.recall(session_key, agent.s_id)
        if handle is None:
            return None
        return await self._store.load(handle, principal)

    async def save(self, record: ConversationRecord, session_key: str | None) -> str | None:
        """Store the record, then the session's last conversation; the store's error if the record
        could not be stored (without the session's memory, the handle itself still works)."""
        try:
            await self._store.save(record)
        except StoreUnavailable as exc:
            logger.warning(
                "Dust conversation %s has the question, but the context store failed to record it: %s",
                record.dust_conversation_id,
                exc,
            )
            return str(exc)
        if session_key is not None:
            try:
                await self._store.remember(session_key, record.agent_id, record.handle)
            except StoreUnavailable as exc:
                logger.warning("the session's last conversation with an agent was not recorded: %s", exc)
        return None

    async def forget(self, record: ConversationRecord) -> None:
        """Drop the record of a conversation whose Dust side is gone (best effort)."""
        try:
            await self._store.delete(record.handle, record.owner)
        except StoreUnavailable:
            logger.warning("could not forget a conversation whose Dust side is gone")

    async def end(self, principal: str, handle: str) -> None:
        """Forget the handle (the Dust conversation itself stays in Dust).

        Raises:
            BridgeError: unknown handle or store failure.
        """
        self._check_handle(handle)
        deleted = await self._store.delete(handle, principal)
        if not deleted:
            raise ConversationNotFound(_NOT_FOUND)

    async def list(self, principal: str) -> list[ConversationRecord]:
        """The principal's live conversations, most recently used first."""
        return await self._store.list_for_owner(principal)

    @staticmethod
    def _check_handle(handle: str) -> None:
        if not is_valid_handle(handle):
            raise ConversationNotFound(
                "malformed conversation handle: pass back exactly the `conversation` value an earlier"
                " ask_agent returned"
            )


def conversation_gone(dust: DustNotFound, how: str = "") -> ConversationNotFound:
    """The error for a handle whose Dust conversation Dust no longer has, with Dust's own reason
    (`how`: how to start anew)."""
    return ConversationNotFound(
        f"the Dust conversation behind this handle no longer exists ({dust.reason}); start a new one{how}"
    )


_NOT_FOUND = (
    "unknown or expired conversation handle; start a new conversation by calling ask_agent without"
    " conversation"
)
