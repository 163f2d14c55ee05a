"""Request bodies of the public API, validated the way Dust does (bad input → 400 invalid_request_error)."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.requests import Request

from bridge.simulator.errors import ApiError

# Origins an API key may claim for a user message (reference §5.1).
ALLOWED_ORIGINS = frozenset(
    {
        "api",
        "excel",
        "github-copilot-chat",
        "gsheet",
        "make",
        "n8n",
        "powerpoint",
        "zapier",
        "zendesk",
        "slack",
        "web",
    }
)
MAX_INLINE_CONTENT_CHARS = 512 * 1024


class MessageContext(BaseModel):
    """`message.context`: who is speaking and from where."""

    model_config = ConfigDict(extra="allow")

    username: str = Field(min_length=1, max_length=255)
    timezone: str = Field(min_length=1, max_length=255)
    fullName: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    profilePictureUrl: str | None = Field(default=None, max_length=2048)
    origin: str = "api"

    @field_validator("origin", mode="before")
    @classmethod
    def _known_origin(cls, value: object) -> object:
        if value is None:
            return "api"
        if value not in ALLOWED_ORIGINS:
            raise ValueError(f"origin {value!r} is not allowed with an API key")
        return value


class Mention(BaseModel):
    """An agent mention; user mentions are not part of what the simulator supports."""

    configurationId: str


class MessageBody(BaseModel):
    """A user message (`POST .../messages`, or `message` when creating a conversation)."""

    content: str = Field(min_length=1)
    mentions: list[Mention] = Field(default_factory=list)
    context: MessageContext
    blocking: bool = False


class FragmentBody(BaseModel):
    """A content fragment: an uploaded file (`fileId`) or inline text (`content` + `contentType`)."""

    title: str = Field(min_length=1)
    fileId: str | None = None
    content: str | None = Field(default=None, min_length=1, max_length=MAX_INLINE_CONTENT_CHARS)
    contentType: str | None = None
    url: str | None = None
    context: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FragmentBody:
        if (self.fileId is None) == (self.content is None):
            raise ValueError("a content fragment needs exactly one of fileId or content")
        if self.content is not None and not self.contentType:
            raise ValueError("an inline content fragment needs a contentType")
        return self


class ConversationBody(BaseModel):
    """`POST /assistant/conversations`."""

    title: str | None = None
    visibility: Literal["unlisted", "workspace", "deleted", "test"] = "unlisted"
    message: MessageBody | None = None
    contentFragments: list[FragmentBody] = Field(default_factory=list)
    contentFragment: FragmentBody | None = None  # legacy single-fragment form, still accepted
    blocking: bool = False


class CancelBody(BaseModel):
    """`POST .../cancel`."""

    messageIds: list[str]


class FileCreateBody(BaseModel):
    """`POST /files`."""

    contentType: str
    fileName: str = Field(min_length=1, max_length=4096)
    fileSize: int = Field(ge=0)
    useCase: str
    useCaseMetadata: dict[str, Any] | None = None


Body = TypeVar("Body", bound=BaseModel)


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The JSON body as `model`, or an ApiError 400 `invalid_request_error`."""
    try:
        raw = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_request_error", "The request body is not valid JSON.") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ApiError(400, "invalid_request_error", f"Invalid request body: {details}") from exc
