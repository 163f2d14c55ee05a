"""Conversation handles <-> Dust conversations, and one agent turn from question to streamed answer.

A handle is the client's proof of a conversation: it maps (in the context store) to the Dust
conversation, the agent and the principal that made it. Continuing with a handle posts into the same
Dust conversation; handshake-era sessions also remember their last handle per agent, so a client
that never passes the handle still gets continuity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio

from bridge.domain.agents import AgentDirectory
from bridge.domain.relay import RelayOutcome, StreamRelay
from bridge.dust.client import DustClient
from bridge.dust.errors import (
    DustError,
    DustNotFound,
    DustStreamError,
)
from bridge.dust.models import Agent, AgentMessage, ContentFragment, MessageContext, UserMessage
from bridge.errors import InvalidInput, NotFound, UpstreamFailure
from bridge.observability.metrics import Metrics
from bridge.store.base import ContextStore, StoreUnavailable
from bridge.store.records import ConversationRecord, UploadRecord, is_valid_handle, new_handle

logger = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]

# How long a cancel POST to Dust may take once the client has gone; it runs shielded.
_CANCEL_TIMEOUT_SECONDS = 5.0
_MAX_FILES = 20
_UPLOAD_URI_PREFIX = "bridge://uploads/"


class TurnSettings(Protocol):
    """What a turn needs from the settings (bridge.config.Settings has all of it)."""

    @property
    def dust_username(self) -> str: ...
    @property
    def dust_timezone(self) -> str: ...
    @property
    def dust_origin(self) -> str: ...
    @property
    def max_message_chars(self) -> int: ...
    @property
    def heartbeat_seconds(self) -> float: ...
    @property
    def coalesce_ms(self) -> int: ...
    @property
    def coalesce_chars(self) -> int: ...
    @property
    def show_chain_of_thought(self) -> bool: ...
    @property
    def answer_timeout_seconds(self) -> float: ...


class InvalidMessage(InvalidInput):
    """The message is empty or too long."""

    code = "invalid_message"


class ConversationNotFound(NotFound):
    """Malformed, unknown, expired or foreign handle (deliberately indistinguishable)."""

    code = "conversation_not_found"


class AgentFailed(UpstreamFailure):
    """Dust reported an error for the agent's answer."""

    code = "agent_error"


@dataclass
class Answer:
    """One finished agent turn."""

    text: str
    handle: str
    agent: Agent
    dust_conversation_id: str
    message_id: str
    url: str | None
    continued: bool
    outcome: RelayOutcome
    # Why the handle of a new conversation could not be stored (the answer came all the same);
    # None when it was, or when the turn continued a conversation the store already holds.
    unremembered: str | None = None

    def structured(self) -> dict[str, Any]:
        """The `structured_content` of the tool result."""
        return {
            "conversation": self.handle,
            "agent": {"sId": self.agent.s_id, "name": self.agent.name},
            "dust_conversation_id": self.dust_conversation_id,
            "message_id": self.message_id,
            "url": self.url,
            "continued": self.continued,
            "remembered": self.unremembered is None,
            "answer": self.text,
        }


@dataclass
class TranscriptEntry:
    """One message of a conversation as a client sees it."""

    role: str  # "user", "agent" or "file"
    content: str
    agent: str | None = None
    status: str | None = None
    message_id: str | None = None


@dataclass
class Transcript:
    """A conversation's messages so far."""

    handle: str
    dust_conversation_id: str
    title: str | None
    url: str | None
    entries: list[TranscriptEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (structured content and the conversation resource)."""
        return {
            "conversation": self.handle,
            "dust_conversation_id": self.dust_conversation_id,
            "title": self.title,
            "url": self.url,
            "messages": [{k: v for k, v in vars(entry).items() if v is not None} for entry in self.entries],
        }

    def as_text(self) -> str:
        """A readable transcript for the model."""
        lines = [f"Conversation {self.handle}" + (f" — {self.title}" if self.title else "")]
        for entry in self.entries:
            if entry.role == "user":
                lines.append(f"User: {entry.content}")
            elif entry.role == "file":
                lines.append(f"[file] {entry.content}")
            else:
                suffix = f" [{entry.status}]" if entry.status and entry.status != "succeeded" else ""
                lines.append(f"{entry.agent or 'Agent'}{suffix}: {entry.content}")
        return "\n\n".join(lines)


class ConversationService:
    """Runs agent turns and keeps their context in the store."""

    def __init__(
        self,
        dust: DustClient,
        store: ContextStore,
        agents: AgentDirectory,
        settings: TurnSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dust = dust
        self._store = store
        self._agents = agents
        self._settings = settings
        # Who the messages come from, as Dust records it: the same for every turn.
        self._context = MessageContext(
            username=settings.dust_username, timezone=settings.dust_timezone, origin=settings.dust_origin
        )
        self._metrics = metrics
        self._clock = clock
        self.active_streams = 0

    async def ask(
        self,
        *,
        principal: str,
        session_key: str | None,
        agent_ref: str,
        message: str,
        conversation: str | None = None,
        new_conversation: bool = False,
        files: list[str] | None = None,
        progress: Progress | None = None,
    ) -> Answer:
        """Ask `agent_ref` `message` in a new or continued conversation and stream the answer.

        Raises:
            BridgeError: any failure, with a message that names the cause.
        """
        text = self._check_message(message)
        if conversation is not None and new_conversation:
            raise InvalidMessage("pass either conversation (to continue) or new_conversation=true, not both")
        agent = await self._agents.resolve(agent_ref)
        attachments = await self._attachments(principal, files or [])
        record = await self._existing(principal, session_key, agent, conversation, new_conversation)
        if record is None:
            # Nothing goes to Dust that the bridge could not remember: with the store down, a new
            # conversation fails here, before Dust does any work (a continued one already failed
            # loading its record).
            await self._store.ping()
        posted = await self._post(record, agent, text, self._context, attachments)
        continued = record is not None
        record = self._record_turn(record, principal, agent, posted)
        # Saved before streaming: if the stream fails, the handle still reaches the conversation.
        # If the store failed since the check above, Dust has the question all the same: its
        # answer is streamed and returned rather than lost, and the save tried once more after it.
        unsaved = await self._save(record, session_key)
        outcome = await self._stream(record, posted.message.s_id, progress)
        _raise_for_failed_answer(outcome, agent, record.handle)
        if unsaved is not None:
            unsaved = await self._save(record, session_key)
        return Answer(
            text=outcome.text,
            handle=record.handle,
            agent=agent,
            dust_conversation_id=record.dust_conversation_id,
            message_id=posted.message.s_id,
            url=record.url,
            continued=continued,
            outcome=outcome,
            # A continued conversation's record is in the store already: its handle keeps working.
            unremembered=None if continued else unsaved,
        )

    def _record_turn(
        self, record: ConversationRecord | None, principal: str, agent: Agent, posted: _PostedTurn
    ) -> ConversationRecord:
        """The record after this turn: a new one for a new conversation, else the old one moved on."""
        now = self._clock()
        if record is None:
            return ConversationRecord(
                handle=new_handle(),
                owner=principal,
                dust_conversation_id=posted.conversation_id,
                agent_id=agent.s_id,
                agent_name=agent.name,
                last_agent_message_id=posted.message.s_id,
                url=posted.url,
                created_at=now,
                last_used_at=now,
                turns=1,
            )
        return replace(
            record,
            agent_id=agent.s_id,
            agent_name=agent.name,
            last_agent_message_id=posted.message.s_id,
            last_used_at=now,
            turns=record.turns + 1,
        )

    async def transcript(self, principal: str, handle: str) -> Transcript:
        """The conversation behind `handle` as Dust has it now.

        Raises:
            BridgeError: unknown handle or Dust failure.
        """
        record = await self._load(principal, handle)
        try:
            conversation = await self._dust.get_conversation(record.dust_conversation_id)
        except DustNotFound:
            raise ConversationNotFound(
                "the Dust conversation behind this handle no longer exists; start a new one"
            ) from None
        try:
            names = {agent.s_id: agent.name for agent in await self._agents.list()}
        except DustError:
            names = {}
        entries: list[TranscriptEntry] = []
        for item in conversation.current_messages():
            if isinstance(item, UserMessage):
                entries.append(TranscriptEntry(role="user", content=item.content, message_id=item.s_id))
            elif isinstance(item, AgentMessage):
                content = item.content or ""
                if item.status == "failed" and item.error:
                    content = content or f"(failed: {item.error.get('message', 'error')})"
                entries.append(
                    TranscriptEntry(
                        role="agent",
                        content=content,
                        agent=names.get(item.configuration_id or "", item.configuration_id),
                        status=item.status,
                        message_id=item.s_id,
                    )
                )
            elif isinstance(item, ContentFragment):
                entries.append(TranscriptEntry(role="file", content=f"{item.title} ({item.content_type})"))
        return Transcript(
            handle=record.handle,
            dust_conversation_id=record.dust_conversation_id,
            title=conversation.title,
            url=conversation.url or record.url,
            entries=entries,
        )

    async def end(self, principal: str, handle: str) -> None:
        """Forget the handle (the Dust conversation itself stays in Dust).

        Raises:
            BridgeError: unknown handle or store failure.
        """
        self._check_handle(handle)
        deleted = await self._store.delete(handle, principal)
        if not deleted:
            raise ConversationNotFound(_NOT_FOUND)

    async def list_conversations(self, principal: str) -> list[ConversationRecord]:
        """The principal's live conversations, most recently used first."""
        return await self._store.list_for_owner(principal)

    async def load(self, principal: str, handle: str) -> ConversationRecord:
        """The record behind a handle the principal owns.

        Raises:
            ConversationNotFound: malformed, unknown, expired or foreign.
        """
        return await self._load(principal, handle)

    # -- internals -------------------------------------------------------------------------

    def _check_message(self, message: str) -> str:
        text = message.strip()
        if not text:
            raise InvalidMessage("message must not be empty")
        if len(text) > self._settings.max_message_chars:
            raise InvalidMessage(
                f"message is {len(text)} characters; the limit is {self._settings.max_message_chars}"
                " (BRIDGE_MAX_MESSAGE_CHARS). Shorten it or upload the text as a file."
            )
        return text

    @staticmethod
    def _check_handle(handle: str) -> None:
        if not is_valid_handle(handle):
            raise ConversationNotFound(
                "malformed conversation handle: pass back exactly the `conversation` value an earlier"
                " ask_agent returned"
            )

    async def _load(self, principal: str, handle: str) -> ConversationRecord:
        self._check_handle(handle)
        record = await self._store.load(handle, principal)
        if record is None:
            raise ConversationNotFound(_NOT_FOUND)
        return record

    async def _existing(
        self,
        principal: str,
        session_key: str | None,
        agent: Agent,
        conversation: str | None,
        new_conversation: bool,
    ) -> ConversationRecord | None:
        if conversation is not None:
            return await self._load(principal, conversation)
        if new_conversation or session_key is None:
            return None
        handle = await self._store.recall(session_key, agent.s_id)
        if handle is None:
            return None
        return await self._store.load(handle, principal)

    async def _attachments(self, principal: str, references: list[str]) -> list[UploadRecord]:
        """The principal's uploads named by id or `bridge://uploads/<id>`, checked before posting."""
        if len(references) > _MAX_FILES:
            raise InvalidMessage(f"at most {_MAX_FILES} files can be attached to one message")
        found: list[UploadRecord] = []
        for reference in dict.fromkeys(ref.strip() for ref in references):
            upload_id = reference.removeprefix(_UPLOAD_URI_PREFIX)
            upload = await self._store.get_upload(upload_id, principal)
            if upload is None:
                raise InvalidMessage(
                    f"unknown or expired upload {reference!r}: pass an upload id or bridge://uploads/ URI"
                    " returned by upload_file or POST /v1/uploads"
                )
            found.append(upload)
        return found

    async def _post(
        self,
        record: ConversationRecord | None,
        agent: Agent,
        text: str,
        context: MessageContext,
        attachments: list[UploadRecord],
    ) -> _PostedTurn:
        fragments = [{"title": upload.filename, "fileId": upload.dust_file_id} for upload in attachments]
        try:
            if record is None:
                created = await self._dust.create_conversation(
                    content=text, mentions=[agent.s_id], context=context, content_fragments=fragments
                )
                agent_message = created.agent_message
                conversation_id = created.conversation.s_id
                url = created.conversation.url
            else:
                # Fragments attach to the next user message, so they go in first.
                for upload in attachments:
                    await self._dust.create_content_fragment(
                        record.dust_conversation_id, title=upload.filename, file_id=upload.dust_file_id
                    )
                posted = await self._dust.post_message(
                    record.dust_conversation_id, content=text, mentions=[agent.s_id], context=context
                )
                agent_message = next(
                    (m for m in posted.agent_messages if m.parent_message_id == posted.user_message.s_id),
                    posted.agent_messages[0] if posted.agent_messages else None,
                )
                conversation_id = record.dust_conversation_id
                url = record.url
        except DustNotFound as exc:
            if record is not None and exc.type == "conversation_not_found":
                await self._forget(record)
                raise ConversationNotFound(
                    "the Dust conversation behind this handle no longer exists; start a new one"
                    " (omit conversation)"
                ) from None
            raise
        if agent_message is None:
            # Dust accepted the message but created no agent message: it dropped the mention.
            raise UpstreamFailure(
                f"Dust did not start agent {agent.name} ({agent.s_id}); it may have been disabled."
            )
        return _PostedTurn(message=agent_message, conversation_id=conversation_id, url=url)

    async def _save(self, record: ConversationRecord, session_key: str | None) -> str | None:
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

    async def _forget(self, record: ConversationRecord) -> None:
        try:
            await self._store.delete(record.handle, record.owner)
        except StoreUnavailable:
            logger.warning("could not forget a conversation whose Dust side is gone")

    async def _stream(
        self, record: ConversationRecord, message_id: str, progress: Progress | None
    ) -> RelayOutcome:
        async def emit(message: str) -> None:
            if progress is not None:
                await progress(message)

        relay = StreamRelay(
            emit,
            heartbeat_seconds=self._settings.heartbeat_seconds,
            coalesce_seconds=self._settings.coalesce_ms / 1000,
            coalesce_chars=self._settings.coalesce_chars,
            show_chain_of_thought=self._settings.show_chain_of_thought,
        )
        finished = False
        self.active_streams += 1
        self._metrics.active_streams.inc()
        started = time.monotonic()
        try:
            with anyio.fail_after(self._settings.answer_timeout_seconds):
                outcome = await relay.run(
                    self._dust.stream_agent_events(record.dust_conversation_id, message_id)
                )
            finished = True
            self._metrics.heartbeats.inc(outcome.heartbeats)
            self._metrics.answer_seconds.observe(time.monotonic() - started)
            if outcome.first_chunk_at is not None:
                self._metrics.first_chunk_seconds.observe(outcome.first_chunk_at - started)
            return outcome
        except TimeoutError:
            raise UpstreamFailure(
                f"Dust did not finish within {self._settings.answer_timeout_seconds:g}s"
                " (BRIDGE_ANSWER_TIMEOUT_SECONDS); the generation was cancelled."
                f" Conversation handle: {record.handle}"
            ) from None
        except DustStreamError as exc:
            # The generation may still finish in Dust: keep it running and say how to read it.
            finished = True
            raise UpstreamFailure(
                f"the answer stream from Dust was lost ({exc.message}); the answer may still complete:"
                f" read it with get_conversation(conversation={record.handle!r})"
            ) from None
        finally:
            self.active_streams -= 1
            self._metrics.active_streams.dec()
            if not finished:
                self._metrics.cancellations.inc()
                # Client cancelled or went away, or we timed out: stop the generation at Dust.
                await self._cancel_at_dust(record.dust_conversation_id, message_id)

    async def _cancel_at_dust(self, conversation_id: str, message_id: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_TIMEOUT_SECONDS):
            try:
                await self._dust.cancel(conversation_id, [message_id])
            except DustError as exc:
                logger.warning("could not cancel the generation at Dust: %s", exc)


@dataclass
class _PostedTurn:
    message: AgentMessage
    conversation_id: str
    url: str | None


_NOT_FOUND = (
    "unknown or expired conversation handle; start a new conversation by calling ask_agent without"
    " conversation"
)


def _raise_for_failed_answer(outcome: RelayOutcome, agent: Agent, handle: str) -> None:
    """Raise AgentFailed when the answer ended in an error or a cancellation rather than an answer."""
    terminal = outcome.terminal
    if terminal is None:
        return
    error = terminal.data.get("error") or {}
    reason = (
        str(error.get("message") or "unknown error")[:300] if isinstance(error, dict) else "unknown error"
    )
    if terminal.type == "agent_error":
        code = (error.get("code") if isinstance(error, dict) else None) or "agent_error"
        raise AgentFailed(f"agent {agent.name} failed: {reason} ({code}). Conversation handle: {handle}")
    if terminal.type == "user_message_error":
        raise AgentFailed(f"Dust rejected the message: {reason}")
    if terminal.type == "agent_generation_cancelled":
        raise AgentFailed(f"the answer was cancelled in Dust. Conversation handle: {handle}")
