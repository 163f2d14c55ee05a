"""One agent turn from question to streamed answer, and going on with a turn the user left waiting.

A turn is checked whole (message, agent, attachments, the conversation it continues) before anything
reaches Dust, posted (bridge.domain.posting), recorded under its handle (bridge.domain.handles) and
then followed: the answer streams as progress, a pause is put to the user, and where the stream
stopped is kept so that wait_for_answer, approve_action and answer_question go on from there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import anyio

from bridge.domain.agents import AgentDirectory
from bridge.domain.answers import (
    Answer,
    TurnListener,
    actions_of,
    presented,
    raise_for_failed_answer,
    terminal_of,
)
from bridge.domain.generated_files import (
    FileNotFound,
    download_generated,
    generated_files,
)
from bridge.domain.handles import ConversationRecords, conversation_gone
from bridge.domain.posting import TurnPoster
from bridge.domain.relay import RelayOutcome
from bridge.domain.replies import Reply, check_reply, not_pending, send_reply
from bridge.domain.streaming import AnswerStreamer, Listener, StreamSettings, StreamTarget
from bridge.domain.transcripts import Transcript, entries_of
from bridge.dust.client import DustClient
from bridge.dust.errors import DustError, DustNotFound
from bridge.dust.models import (
    Agent,
    AgentMessage,
    Conversation,
    DownloadedFile,
    MessageContext,
)
from bridge.dust.pauses import PendingAction
from bridge.errors import BridgeError, InvalidInput, NotFound
from bridge.observability.metrics import Metrics
from bridge.store.base import ContextStore
from bridge.store.records import ConversationRecord, UploadRecord

_MAX_FILES = 20
# What is left of the deadline for the answer's stream once the user's replies took all of it.
_LAST_LOOK_SECONDS = 0.1
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
        self._records = ConversationRecords(store)
        self._agents = agents
        self._settings = settings
        # Who the messages come from, as Dust records it: the same for every turn.
        context = MessageContext(
            username=settings.dust_username, timezone=settings.dust_timezone, origin=settings.dust_origin
        )
        self._poster = TurnPoster(dust, self._records, context, clock)
        self._streamer = AnswerStreamer(
            dust,
            StreamSettings(
                heartbeat_seconds=settings.heartbeat_seconds,
                coalesce_seconds=settings.coalesce_ms / 1000,
                coalesce_chars=settings.coalesce_chars,
                show_chain_of_thought=settings.show_chain_of_thought,
                answer_timeout_seconds=settings.answer_timeout_seconds,
            ),
            metrics,
        )

    @property
    def active_streams(self) -> int:
        """Answers streaming from Dust right now."""
        return self._streamer.active

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
        listener: TurnListener | None = None,
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
        record = await self._records.existing(principal, session_key, agent, conversation, new_conversation)
        if record is None:
            # Nothing goes to Dust that the bridge could not remember: with the store down, a new
            # conversation fails here, before Dust does any work (a continued one already failed
            # loading its record).
            await self._store.ping()
        posted = await self._poster.post(record, agent, text, attachments)
        continued = record is not None
        record = self._poster.record_turn(record, principal, agent, posted)
        # Saved before streaming: if the stream fails, the handle still reaches the conversation.
        # If the store failed since the check above, Dust has the question all the same: its
        # answer is streamed and returned rather than lost, and the save tried once more after it.
        unsaved = await self._records.save(record, session_key)
        answer = await self._follow(record, agent, continued, listener or TurnListener())
        if unsaved is not None:
            unsaved = await self._records.save(record, session_key)
        # A continued conversation's record is in the store already: its handle keeps working.
        answer.unremembered = None if continued else unsaved
        return answer

    async def resume(self, principal: str, handle: str, listener: TurnListener) -> Answer:
        """Go on with the last answer of a conversation: put what it waits for to the user, or
        stream the rest from where the last call left it (wait_for_answer).

        Raises:
            BridgeError: unknown handle, nothing to wait for, or a Dust failure.
        """
        record = await self._records.load(principal, handle)
        agent, message = await self._last_answer(record)
        if message.status != "created":
            return self._finished(record, agent, message)
        pending = await self._still_pending(record)
        if pending:
            started = anyio.current_time()
            replies, note = await _ask_in_time(listener, pending, record)
            if not replies:
                return await self._paused(record, agent, pending, note)
            pending = await self._send_replies(record, pending, replies)
            if pending:
                return await self._paused(record, agent, pending)
            listener = _spent(listener, anyio.current_time() - started)
        return await self._follow(record, agent, True, listener)

    async def reply(
        self, principal: str, handle: str, replies: list[Reply], listener: TurnListener
    ) -> Answer:
        """Record the user's replies in Dust, then go on as `resume` does.

        Raises:
            ActionNotPending: a reply names an action that is not waiting (any more).
            InvalidReply: a reply that does not fit its action.
            BridgeError: unknown handle or a Dust failure.
        """
        record = await self._records.load(principal, handle)
        agent = _agent_of(record)
        pending = [PendingAction.from_json(item) for item in record.pending]
        if any(reply.action_id not in {action.action_id for action in pending} for reply in replies):
            pending = await self._still_pending(record)
        remaining = await self._send_replies(record, pending, replies)
        if remaining:
            return await self._paused(record, agent, remaining)
        return await self.resume(principal, handle, replace(listener, ask_user=None))

    async def transcript(self, principal: str, handle: str) -> Transcript:
        """The conversation behind `handle` as Dust has it now.

        Raises:
            BridgeError: unknown handle or Dust failure.
        """
        record = await self._records.load(principal, handle)
        conversation = await self._dust_conversation(record)
        try:
            names = {agent.s_id: agent.name for agent in await self._agents.list()}
        except DustError:
            names = {}
        return Transcript(
            handle=record.handle,
            dust_conversation_id=record.dust_conversation_id,
            title=conversation.title,
            url=conversation.url or record.url,
            entries=entries_of(conversation, names),
        )

    async def read_file(self, principal: str, file_id: str, max_bytes: int) -> DownloadedFile:
        """A file an agent made in one of the principal's conversations.

        Raises:
            FileNotFound: no conversation of the principal's made it (or the handle expired).
            FileNotServed: Dust will not serve it to the bridge's key (the message has the link).
            BridgeError: too large, or a Dust failure.
        """
        records = await self._records.list(principal)
        record = next((item for item in records if file_id in item.files), None)
        if record is None:
            raise FileNotFound(
                f"unknown file {file_id!r}: not a file an agent made in one of your conversations"
            )
        return await download_generated(self._dust, record, file_id, max_bytes)

    async def end(self, principal: str, handle: str) -> None:
        """Forget the handle (the Dust conversation itself stays in Dust).

        Raises:
            BridgeError: unknown handle or store failure.
        """
        await self._records.end(principal, handle)

    async def list_conversations(self, principal: str) -> list[ConversationRecord]:
        """The principal's live conversations, most recently used first."""
        return await self._records.list(principal)

    async def load(self, principal: str, handle: str) -> ConversationRecord:
        """The record behind a handle the principal owns.

        Raises:
            ConversationNotFound: malformed, unknown, expired or foreign.
        """
        return await self._records.load(principal, handle)

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

    async def _follow(
        self, record: ConversationRecord, agent: Agent, continued: bool, listener: TurnListener
    ) -> Answer:
        """Stream the record's last answer from its stored position; keep where it stopped."""
        assert record.last_agent_message_id is not None
        current = record
        answered: list[str] = []
        refused: list[str] = []

        async def on_pause(blocked: list[PendingAction], left: float | None) -> bool:
            if listener.ask_user is None:
                return False
            # The user answers within what is left of the call's deadline, so that the call still
            # returns before the client gives up on it; a client that never answers leaves the
            # actions pending (approve_action still works later).
            with anyio.move_on_after(math.inf if left is None else left):
                replies = await listener.ask_user(blocked, current)
                return await send(blocked, replies)
            refused.append(_unanswered(listener))
            return False

        async def send(blocked: list[PendingAction], replies: list[Reply] | None) -> bool:
            with anyio.CancelScope(shield=True):  # an answer half-sent to Dust is not cut off
                try:
                    remaining = await self._send_replies(current, blocked, replies or [], save=False)
                except BridgeError as exc:
                    refused.append(f"the answer did not reach Dust: {exc.for_user()}")
                    return False
            answered.extend(reply.action_id for reply in replies or [])
            return not remaining

        async def keep(partial: RelayOutcome) -> bool:
            if listener.client_timed_out is None or not await listener.client_timed_out():
                return False
            position = partial.last_event_id or current.stream_position
            await self._records.save(replace(current, stream_position=position, pending=()), None)
            return True

        target = StreamTarget(
            record.dust_conversation_id, record.last_agent_message_id, record.handle, record.stream_position
        )
        outcome = await self._streamer.follow(
            target, Listener(listener.progress, on_pause, listener.deadline, keep)
        )
        raise_for_failed_answer(outcome, agent, record.handle)
        pending = [action for action in outcome.pauses if action.action_id not in answered]
        ended = outcome.terminal is not None
        made = [file.file_id for file in generated_files(actions_of(outcome))]
        kept = replace(
            record,
            stream_position=None if ended else outcome.last_event_id or record.stream_position,
            pending=tuple(action.to_json() for action in pending),
            files=tuple(dict.fromkeys([*record.files, *made])),
        )
        if kept != record:
            await self._records.save(kept, None)
        return self._answer(kept, agent, continued, outcome, pending, note=refused[0] if refused else None)

    def _answer(
        self,
        record: ConversationRecord,
        agent: Agent,
        continued: bool,
        outcome: RelayOutcome,
        pending: list[PendingAction],
        note: str | None = None,
    ) -> Answer:
        text, sources = presented(outcome)
        return Answer(
            text=text,
            sources=sources,
            files=generated_files(actions_of(outcome)),
            handle=record.handle,
            agent=agent,
            dust_conversation_id=record.dust_conversation_id,
            message_id=record.last_agent_message_id or "",
            url=record.url,
            continued=continued,
            outcome=outcome,
            pending=pending,
            note=note,
        )

    async def _last_answer(self, record: ConversationRecord) -> tuple[Agent, AgentMessage]:
        """The agent and Dust's current view of the record's last agent message."""
        conversation = await self._dust_conversation(record)
        message = next(
            (
                item
                for item in conversation.current_messages()
                if isinstance(item, AgentMessage) and item.s_id == record.last_agent_message_id
            ),
            None,
        )
        if message is None:
            raise NotFound("this conversation has no answer to wait for: ask the agent something first")
        return _agent_of(record), message

    async def _dust_conversation(self, record: ConversationRecord) -> Conversation:
        try:
            return await self._dust.get_conversation(record.dust_conversation_id)
        except DustNotFound as exc:
            raise conversation_gone(exc) from None

    def _finished(self, record: ConversationRecord, agent: Agent, message: AgentMessage) -> Answer:
        """The answer of a message Dust has finished, read from the conversation."""
        terminal = terminal_of(message)
        outcome = RelayOutcome(text=message.content or "", terminal=terminal)
        raise_for_failed_answer(outcome, agent, record.handle)
        return self._answer(record, agent, True, outcome, [])

    async def _still_pending(self, record: ConversationRecord) -> list[PendingAction]:
        """What the conversation waits for, as Dust says now (a sub-agent's, from the record)."""
        try:
            listed = await self._dust.blocked_actions(record.dust_conversation_id)
        except DustNotFound as exc:
            raise conversation_gone(exc) from None
        known = {action.action_id for action in listed}
        others = [
            action
            for action in map(PendingAction.from_json, record.pending)
            if action.conversation_id != record.dust_conversation_id and action.action_id not in known
        ]
        return [*listed, *others]

    async def _paused(
        self, record: ConversationRecord, agent: Agent, pending: list[PendingAction], note: str | None = None
    ) -> Answer:
        kept = replace(record, pending=tuple(action.to_json() for action in pending))
        if kept != record:
            await self._records.save(kept, None)
        return self._answer(kept, agent, True, RelayOutcome(text="", terminal=None), pending, note)

    async def _send_replies(
        self,
        record: ConversationRecord,
        pending: list[PendingAction],
        replies: list[Reply],
        *,
        save: bool = True,
    ) -> list[PendingAction]:
        """Send each reply to Dust; the actions still pending afterwards (stored when `save`)."""
        by_id = {action.action_id: action for action in pending}
        for reply in replies:
            action = by_id.get(reply.action_id)
            if action is None:
                raise not_pending(reply.action_id)
            check_reply(action, reply)
        for reply in replies:
            await send_reply(self._dust, by_id.pop(reply.action_id), reply)
        remaining = list(by_id.values())
        if save:
            kept = replace(record, pending=tuple(action.to_json() for action in remaining))
            await self._records.save(kept, None)
        return remaining


async def _ask_in_time(
    listener: TurnListener, pending: list[PendingAction], record: ConversationRecord
) -> tuple[list[Reply] | None, str | None]:
    """The user's replies if they come within the call's deadline; else why there are none."""
    if listener.ask_user is None:
        return None, None
    with anyio.move_on_after(listener.deadline or math.inf):
        return await listener.ask_user(pending, record), None
    return None, _unanswered(listener)


def _spent(listener: TurnListener, seconds: float) -> TurnListener:
    """The listener for the rest of a call that spent `seconds` of its deadline."""
    if not listener.deadline:
        return listener
    # Not 0, which means no deadline: a call whose time is up returns once the stream is open.
    return replace(listener, deadline=max(listener.deadline - seconds, _LAST_LOOK_SECONDS))


def _unanswered(listener: TurnListener) -> str:
    return f"nobody answered within {listener.deadline:g} s (BRIDGE_ANSWER_DEADLINE_SECONDS)"


def _agent_of(record: ConversationRecord) -> Agent:
    """The agent the record's last turn asked."""
    return Agent(s_id=record.agent_id, name=record.agent_name)
