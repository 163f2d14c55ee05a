"""Posting one user turn to Dust, and the conversation record it leaves.

A new conversation is created with the message and its content fragments in one call; an existing one
gets its fragments first and then the message, and the agent message answering it is picked out of
what Dust returns. A Dust conversation that has vanished behind a handle is forgotten here, so the
handle stops pointing at nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bridge.domain.handles import ConversationRecords, conversation_gone
from bridge.dust.client import DustClient
from bridge.dust.errors import DustNotFound
from bridge.dust.models import Agent, AgentMessage, MessageContext
from bridge.errors import UpstreamFailure
from bridge.store.records import ConversationRecord, UploadRecord, new_handle


@dataclass
class PostedTurn:
    """What Dust made of a posted turn: the agent message answering it, and where it lives."""

    message: AgentMessage
    conversation_id: str
    url: str | None


class TurnPoster:
    """Puts the user's side of a turn into Dust, sent as `context` (who the messages come from)."""

    def __init__(
        self,
        dust: DustClient,
        records: ConversationRecords,
        context: MessageContext,
        clock: Callable[[], float],
    ) -> None:
        self._dust = dust
        self._records = records
        self._context = context
        self._clock = clock

    async def post(
        self, record: ConversationRecord | None, agent: Agent, text: str, attachments: list[UploadRecord]
    ) -> PostedTurn:
        """Post `text` to `agent` in the record's conversation (a new one without a record).

        Raises:
            ConversationNotFound: Dust no longer has the record's conversation (the record is forgotten).
            UpstreamFailure: Dust did not start the agent.
        """
        fragments = [{"title": upload.filename, "fileId": upload.dust_file_id} for upload in attachments]
        try:
            if record is None:
                created = await self._dust.create_conversation(
                    content=text, mentions=[agent.s_id], context=self._context, content_fragments=fragments
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
                    record.dust_conversation_id, content=text, mentions=[agent.s_id], context=self._context
                )
                agent_message = next(
                    (m for m in posted.agent_messages if m.parent_message_id == posted.user_message.s_id),
                    posted.agent_messages[0] if posted.agent_messages else None,
                )
                conversation_id = record.dust_conversation_id
                url = record.url
        except DustNotFound as exc:
            if record is not None and exc.type == "conversation_not_found":
                await self._records.forget(record)
                raise conversation_gone(exc, " (omit conversation)") from None
            raise
        if agent_message is None:
            # Dust accepted the message but created no agent message: it dropped the mention.
            raise UpstreamFailure(
                f"Dust did not start agent {agent.name} ({agent.s_id}); it may have been disabled."
            )
        return PostedTurn(message=agent_message, conversation_id=conversation_id, url=url)

    def record_turn(
        self, record: ConversationRecord | None, principal: str, agent: Agent, posted: PostedTurn
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
