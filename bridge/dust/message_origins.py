"""The `context.origin` values Dust knows for a user message.

From `USER_MESSAGE_ORIGINS` in `src/types.ts` of @dust-tt/client 1.2.8. Dust's schema turns any
other value into "api" (`UserMessageOriginEnumSchema.catch("api")`) instead of refusing it.
"""

USER_MESSAGE_ORIGINS: frozenset[str] = frozenset(
    {
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
    }
)
