"""Dust's request schemas, transcribed from @dust-tt/client 1.2.8 `src/types.ts` (and the routes' own
query schemas); bridge/simulator/bodies.py applies them.

Dust's routes validate with the SDK's own schemas (`validate("json", PublicPost...Schema)` imported
from `@dust-tt/client` in `front-api/routes/v1/w/[wId]/...`), so a body the SDK schema refuses is a
400 before any route logic runs, and the parsed value (unknown keys stripped, defaults applied,
`origin` coerced) is what the route sees.
"""

from __future__ import annotations

from bridge.dust.timezone_names import TIMEZONE_NAMES
from bridge.simulator.zod import (
    Array,
    Boolean,
    Custom,
    Enum,
    Intersection,
    Literal,
    Null,
    Number,
    Object,
    String,
    Undefined,
    Union,
)


def _is_string(value: object) -> bool:
    return isinstance(value, str)


# The SDK's `FlexibleEnumSchema<...>()`: `z.custom(v => typeof v === "string")`.
FlexibleEnum = Custom(_is_string)

# SDK `USER_MESSAGE_ORIGINS`; `UserMessageOriginSchema = z.enum(...).catch("api").or(z.null()).or(
# z.undefined())`: an unknown (or absent, or null) origin becomes "api", it is never refused here.
USER_MESSAGE_ORIGINS = (
    "api",
    "cli",
    "cli_programmatic",
    "email",
    "excel",
    "extension",
    "gsheet",
    "make",
    "n8n",
    "powerpoint",
    "raycast",
    "slack",
    "slack_workflow",
    "teams",
    "transcript",
    "triggered_programmatic",
    "triggered",
    "wakeup",
    "web",
    "zapier",
    "zendesk",
    "onboarding_conversation",
    "agent_sidekick",
    "project_kickoff",
    "reinforced_skill_notification",
    "reinforcement",
    "branch_anchor",
)
UserMessageOrigin = Enum(USER_MESSAGE_ORIGINS).catch("api").or_(Null()).or_(Undefined())

# SDK `Timezone = z.string().refine((s) => TIMEZONE_NAMES.includes(s), {message: "Invalid timezone"})`.
Timezone = String().refine(lambda name: name in TIMEZONE_NAMES, "Invalid timezone")

UserMessageContext = Object(
    {
        "username": String(),
        "timezone": Timezone,
        "fullName": String().optional().nullable(),
        "email": String().optional().nullable(),
        "profilePictureUrl": String().optional().nullable(),
        "origin": UserMessageOrigin,
        "clientSideMCPServerIds": Array(String()).optional().nullable(),
        "selectedMCPServerViewIds": Array(String()).optional().nullable(),
        "lastTriggerRunAt": Number().optional().nullable(),
    }
)

Mention = Union(
    [
        Object({"configurationId": String()}),
        Object({"type": Literal("user"), "userId": String()}),
    ]
)

AgenticMessageData = Object(
    {
        "type": Union([Literal("run_agent"), Literal("agent_handover")]),
        "originMessageId": String(),
    }
)

PublicModelSelection = Object(
    {"providerId": FlexibleEnum, "modelId": FlexibleEnum, "reasoningEffort": FlexibleEnum.optional()}
)

ContentFragmentContext = Object(
    {
        "username": String().optional().nullable(),
        "fullName": String().optional().nullable(),
        "email": String().optional().nullable(),
        "profilePictureUrl": String().optional().nullable(),
    }
)

_UNSET = Undefined().nullable()  # `z.undefined().nullable()`: absent or null

ContentFragmentWithContent = Object(
    {
        "title": String(),
        "url": String().optional().nullable(),
        "content": String(),
        "contentType": String(),
        "fileId": _UNSET,
        "nodeId": _UNSET,
        "nodeDataSourceViewId": _UNSET,
        "context": ContentFragmentContext.optional().nullable(),
        "supersededContentFragmentId": String().optional().nullable(),
    }
)
ContentFragmentWithFileId = Object(
    {
        "title": String(),
        "fileId": String(),
        "url": String().optional().nullable(),
        "content": _UNSET,
        "contentType": _UNSET,
        "nodeId": _UNSET,
        "nodeDataSourceViewId": _UNSET,
        "context": ContentFragmentContext.optional().nullable(),
        "supersededContentFragmentId": String().optional().nullable(),
    }
)
ContentFragmentWithContentNode = Object(
    {
        "title": String(),
        "nodeId": String(),
        "nodeDataSourceViewId": String(),
        "url": _UNSET,
        "content": _UNSET,
        "contentType": _UNSET,
        "fileId": _UNSET,
        "context": ContentFragmentContext.optional().nullable(),
        "supersededContentFragmentId": String().optional().nullable(),
    }
)
_FRAGMENT_OPTIONS = [ContentFragmentWithContent, ContentFragmentWithFileId, ContentFragmentWithContentNode]

# SDK `PublicPostContentFragmentRequestBodySchema`.
PostContentFragmentBody = Union(_FRAGMENT_OPTIONS)

_BLOCKING_AND_SKIP = Object(
    {"blocking": Boolean().optional(), "skipToolsValidation": Boolean().optional()}
).partial()

# SDK `PublicPostMessagesRequestBodySchema`.
PostMessagesBody = Intersection(
    Object(
        {
            "content": String(min_length=1),
            "mentions": Array(Mention),
            "context": UserMessageContext.extend(
                {"clientSideMCPServerIds": Array(String()).optional().nullable()}
            ),
            "agenticMessageData": AgenticMessageData.optional(),
            "modelSelection": PublicModelSelection.optional(),
        }
    ),
    _BLOCKING_AND_SKIP,
)

# SDK `PublicPostConversationsRequestBodySchema`.
PostConversationsBody = Intersection(
    Object(
        {
            "title": String().nullable().optional(),
            "visibility": Enum(["workspace", "unlisted", "deleted", "test"]).optional().default("unlisted"),
            "depth": Number().optional(),
            "spaceId": String().optional(),
            "message": Union(
                [
                    Intersection(
                        Object(
                            {
                                "content": String(min_length=1),
                                "mentions": Array(Mention),
                                "context": UserMessageContext,
                                "agenticMessageData": AgenticMessageData.optional(),
                                "modelSelection": PublicModelSelection.optional(),
                            }
                        ),
                        Object({"blocking": Boolean().optional()}).partial(),
                    ),
                    Undefined(),
                ]
            ),
            "contentFragment": Union([*_FRAGMENT_OPTIONS, Undefined()]),
            "contentFragments": Union([Array(Union(_FRAGMENT_OPTIONS)), Undefined()]),
        }
    ),
    _BLOCKING_AND_SKIP,
)

# SDK `CancelMessageGenerationRequestSchema`.
CancelBody = Object({"messageIds": Array(String())})

# SDK `FileUploadUrlRequestSchema`.
FileUploadUrlBody = Object(
    {
        "contentType": FlexibleEnum,
        "fileName": String(max_length=4096, max_message="File name must be less than 4096 characters"),
        "fileSize": Number(),
        "useCase": Union([Literal("conversation"), Literal("upsert_table")]),
        "useCaseMetadata": Object(
            {
                "conversationId": String(),
                "sourceProvider": String().optional(),
                "sourceIcon": String().optional(),
            }
        ).optional(),
    }
)

# front-api/routes/v1/w/[wId]/assistant/agent_configurations.ts `GetAgentConfigurationsQuerySchema`.
AGENT_VIEWS = ("all", "all_unrestricted", "list", "workspace", "published", "global", "favorites")
GetAgentConfigurationsQuery = Object(
    {"view": Enum(AGENT_VIEWS).optional(), "withAuthors": Enum(["true", "false"]).optional()}
)

# front-api/routes/v1/w/[wId]/assistant/agent_configurations/[sId]/index.ts `VariantQuerySchema`.
VariantQuery = Object({"variant": Enum(["light", "full"]).optional()})

# SDK `ValidateActionRequestBodySchema` (validate-action.ts validates with it).
ValidateActionBody = Object(
    {"actionId": String(), "approved": Enum(["approved", "rejected", "always_approved"])}
)

# answer-question.ts `AnswerQuestionRequestSchema`: `actionId` and front/lib/actions/types.ts
# `UserQuestionAnswerSchema` (the SDK's AnswerUserQuestionRequestBodySchema is the same).
AnswerQuestionBody = Object(
    {
        "actionId": String(),
        "answer": Object({"selectedOptions": Array(Number()), "customResponse": String().optional()}),
    }
)
