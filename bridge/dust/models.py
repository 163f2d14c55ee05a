"""Pydantic models of the Dust payloads the bridge reads (dust-api.md section 3).

A tolerant reader: everything Dust's SDK schemas allow is accepted. Only the fields the bridge uses
are declared, so new server fields never break parsing; statuses and scopes are plain strings (the
SDK's `FlexibleEnumSchema` admits any string); a null where the bridge has a default means the
default; numbers the SDK types as `number` may be floats. Only what the bridge cannot work without
(an sId, a file's name and type) is required. Field names are snake_case with Dust's camelCase
names as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class _DustModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_defaults(cls, data: Any) -> Any:
        # Dust sends null for many fields the SDK marks nullable; the declared default stands for it.
        if not isinstance(data, dict):
            return data
        defaulted = {
            field.alias or name for name, field in cls.model_fields.items() if not field.is_required()
        }
        return {key: value for key, value in data.items() if value is not None or key not in defaulted}


def _whole(value: Any) -> Any:
    """An epoch-milliseconds or byte count the SDK types as `number`: a float is cut to an int."""
    return int(value) if isinstance(value, float) and value == value and abs(value) != float("inf") else value


Whole = Annotated[int, BeforeValidator(_whole)]


class Agent(_DustModel):
    """An agent configuration (the "light" variant Dust lists)."""

    s_id: str = Field(alias="sId")
    name: str
    description: str = ""
    status: str = "active"
    scope: str = "workspace"
    picture_url: str | None = Field(default=None, alias="pictureUrl")


class UserMessage(_DustModel):
    """A user message as it appears in a conversation or a post-message response."""

    s_id: str = Field(alias="sId")
    content: str = ""
    created: Whole = 0  # epoch milliseconds
    mentions: list[Any] = Field(default_factory=list)


def _objects(value: Any) -> Any:
    """A list of content blocks: the objects in it, anything else dropped."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else value


class GeneratedFile(_DustModel):
    """A file an action generated (an entry of `generatedFiles`): a Dust file (`file_id`), or, on
    servers that also list path-only files, a file of the conversation's file system (`file_id`
    None, `file_path` set). `title` is the file's name; `hidden` files are not meant for the user."""

    file_id: str | None = Field(default=None, alias="fileId")
    file_path: str | None = Field(default=None, alias="filePath")
    title: str = ""
    content_type: str = Field(default="", alias="contentType")
    snippet: str | None = None
    hidden: bool = False


class AgentAction(_DustModel):
    """A tool call of an agent message (an entry of its `actions`); `output` keeps the tool's
    content blocks as Dust sent them (search results carry the citation refs)."""

    s_id: str = Field(default="", alias="sId")
    tool_name: str = Field(default="", alias="toolName")
    function_call_name: str = Field(default="", alias="functionCallName")
    status: str = ""
    output: Annotated[list[dict[str, Any]], BeforeValidator(_objects)] = Field(default_factory=list)
    generated_files: list[GeneratedFile] = Field(default_factory=list, alias="generatedFiles")


class AgentMessage(_DustModel):
    """An agent's answer; `content` is None (or partial) until the generation has finished."""

    s_id: str = Field(alias="sId")
    status: str = "created"
    content: str | None = None
    parent_message_id: str | None = Field(default=None, alias="parentMessageId")
    error: dict[str, Any] | None = None
    configuration_id: str | None = Field(default=None, alias="configurationId")
    created: Whole = 0
    actions: list[AgentAction] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _lift_configuration_id(cls, data: Any) -> Any:
        # Dust nests the agent as a whole `configuration` object; only its sId is of use here.
        if isinstance(data, dict) and "configurationId" not in data:
            configuration = data.get("configuration")
            if isinstance(configuration, dict) and isinstance(configuration.get("sId"), str):
                return {**data, "configurationId": configuration["sId"]}
        return data


class ContentFragment(_DustModel):
    """A file (or inline text) attached to a conversation ahead of a user message."""

    s_id: str = Field(alias="sId")
    title: str = ""
    content_type: str = Field(default="", alias="contentType")
    file_id: str | None = Field(default=None, alias="fileId")


Message = UserMessage | AgentMessage | ContentFragment

_MESSAGE_TYPES: dict[str, type[UserMessage] | type[AgentMessage] | type[ContentFragment]] = {
    "user_message": UserMessage,
    "agent_message": AgentMessage,
    "content_fragment": ContentFragment,
}


class Conversation(_DustModel):
    """A conversation; `content` holds, per rank, every version of the message at that rank."""

    s_id: str = Field(alias="sId")
    title: str | None = None
    url: str | None = None
    created: Whole = 0
    content: list[list[Any]] = Field(default_factory=list)

    def current_messages(self) -> list[Message]:
        """The current (last) version of each rank, typed by its `type`; unknown types are skipped."""
        messages: list[Message] = []
        for versions in self.content:
            if not versions or not isinstance(versions[-1], dict):
                continue
            latest = versions[-1]
            model = _MESSAGE_TYPES.get(str(latest.get("type")))
            if model is not None:
                messages.append(model.model_validate(latest))
        return messages

    def last_user_message(self) -> UserMessage | None:
        """The latest user message, if any."""
        users = [message for message in self.current_messages() if isinstance(message, UserMessage)]
        return users[-1] if users else None

    def agent_message_for(self, user_message_id: str) -> AgentMessage | None:
        """The agent message answering `user_message_id` (first one if several agents answer)."""
        for message in self.current_messages():
            if isinstance(message, AgentMessage) and message.parent_message_id == user_message_id:
                return message
        return None


class DustFile(_DustModel):
    """A Dust file record; `upload_url` is set while the file awaits its single upload."""

    s_id: str = Field(alias="sId")
    content_type: str = Field(alias="contentType")
    file_name: str = Field(alias="fileName")
    file_size: Whole = Field(alias="fileSize")
    status: str = "created"
    upload_url: str | None = Field(default=None, alias="uploadUrl")


@dataclass(frozen=True)
class DownloadedFile:
    """A file's bytes as Dust served them: the media type (without parameters) and, when the answer
    named one (the signed storage URL's Content-Disposition), the file name."""

    content_type: str
    data: bytes
    filename: str | None = None


@dataclass
class MessageContext:
    """Who posts a user message; Dust requires `username` and `timezone`, `origin` must be "api"."""

    username: str
    timezone: str
    origin: str = "api"
    full_name: str | None = None
    email: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The `context` object of a message body (optional fields only when set)."""
        body = {"username": self.username, "timezone": self.timezone, "origin": self.origin}
        if self.full_name is not None:
            body["fullName"] = self.full_name
        if self.email is not None:
            body["email"] = self.email
        return body
