"""The demo agents: their public configuration and the deterministic script each one plays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Say:
    """Stream `text` as `generation_tokens` events of the given classification."""

    text: str
    classification: str = "tokens"


@dataclass(frozen=True)
class UseTool:
    """A tool call: started, params, optional progress notification, `wait_seconds` of silence, success."""

    tool_name: str
    params: dict[str, Any]
    output: str
    wait_seconds: float = 0.0
    label: str | None = None


@dataclass(frozen=True)
class Fail:
    """End the message with `agent_error`."""

    code: str
    message: str


Step = Say | UseTool | Fail


@dataclass(frozen=True)
class ScriptInput:
    """What a script may depend on; nothing else, so answers are reproducible."""

    message: str
    turn: int
    fragments: list[tuple[str, str]] = field(default_factory=list)  # (title, contentType)
    slow_seconds: float = 0.0


@dataclass(frozen=True)
class AgentSpec:
    """A simulated agent: identity, description and script."""

    model_id: int
    sid: str
    name: str
    description: str
    script: Callable[[ScriptInput], list[Step]]
    scope: str = "visible"  # "global", "visible" (published) or "hidden" (unpublished)

    def light_configuration(self, key_role: str) -> dict[str, Any]:
        """The LightAgentConfiguration JSON as Dust renders it for an API key of role `key_role`.

        front/lib/resources/agent_resource_serialization.ts toLightAgentConfigurations: favorites are
        per user, so a key (no user) always gets `userFavorite: false`; `tags` from enrichWithTags.
        `canEdit` follows front-api/.../agent_configurations.test.ts ("reports edit permissions"):
        only an admin key may edit a workspace agent, nobody edits a global one.
        """
        return {
            "id": self.model_id,
            "sId": self.sid,
            "version": 0,
            "versionCreatedAt": None,
            "versionAuthorId": None,
            "name": self.name,
            "description": self.description,
            "instructions": None,
            "pictureUrl": "https://dust.tt/static/systemavatar/dust_avatar_full.png",
            "status": "active",
            "scope": self.scope,
            "userFavorite": False,
            "model": {"providerId": "openai", "modelId": "gpt-4o", "temperature": 0.7},
            "maxStepsPerRun": 8,
            "templateId": None,
            "visualizationEnabled": False,
            "requestedGroupIds": [],
            "requestedSpaceIds": [],
            "tags": [],
            "canRead": True,
            "canEdit": key_role == "admin" and self.scope != "global",
        }

    def public_configuration(self, key_role: str, *, variant: str = "light") -> dict[str, Any]:
        """The public API's agent: the light (or full) configuration plus `skills`.

        front/lib/resources/agent_resource_serialization.ts toAgentConfigurationsWithSkills; the full
        variant adds `instructionsHtml` and `actions` (toAgentConfigurations). The demo agents have
        neither skills nor tools.
        """
        configuration = self.light_configuration(key_role)
        if variant == "full":
            configuration.update(instructionsHtml=None, actions=[])
        return {**configuration, "skills": []}

    def recent_authors(self) -> list[str]:
        """`lastAuthors` (front/lib/api/assistant/recent_authors.ts): global agents get their fixed
        author name, workspace agents the names of their recent editors (none here)."""
        return ["Dust"] if self.scope == "global" else []


def _fragments_answer(inp: ScriptInput) -> str:
    if not inp.fragments:
        return "I can see 0 file(s)."
    listed = ", ".join(f"{title} ({content_type})" for title, content_type in inp.fragments)
    return f"I can see {len(inp.fragments)} file(s): {listed}"


_STORY_LINES = (
    "The lighthouse keeper counted the waves before dawn",
    "A gull argued with the wind about the tide",
    "The harbour bell rang twice for the fishing boats",
    "Fog rolled over the cliffs like a slow grey tide",
    "Somewhere below, the old engine coughed awake",
)


def story_text(message: str) -> str:
    """The storyteller's answer: about 2,000 characters of numbered sentences."""
    sentences = " ".join(f"{i}. {_STORY_LINES[(i - 1) % len(_STORY_LINES)]}." for i in range(1, 41))
    return f"A story about {message}. {sentences}"


AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        1,
        "dust",
        "dust",
        "General assistant. Answers 'Hello from the Dust simulator. You said: <message>'.",
        lambda inp: [Say(f"Hello from the Dust simulator. You said: {inp.message}")],
        scope="global",
    ),
    AgentSpec(
        2,
        "echo000001",
        "echo",
        "Echoes the message with the conversation turn number: 'Echo (turn <n>): <message>'.",
        lambda inp: [Say(f"Echo (turn {inp.turn}): {inp.message}")],
    ),
    AgentSpec(
        3,
        "slow000001",
        "slow",
        "Calls web_search, stays silent for a while, then answers 'Done after waiting: <message>'.",
        lambda inp: [
            UseTool("web_search", {"query": inp.message}, "No results.", wait_seconds=inp.slow_seconds),
            Say(f"Done after waiting: {inp.message}"),
        ],
    ),
    AgentSpec(
        4,
        "research01",
        "researcher",
        "Thinks, runs a web_search tool with a progress notification, then writes a research summary.",
        lambda inp: [
            Say("Let me plan the search. ", "chain_of_thought"),
            UseTool("web_search", {"query": inp.message}, "3 results.", label="Searching the web"),
            Say(f"Research summary for: {inp.message}"),
        ],
    ),
    AgentSpec(
        5,
        "broken0001",
        "broken",
        "Starts answering, then fails with a model_error.",
        lambda inp: [Say("Working on it"), Fail("model_error", "The model provider failed")],
    ),
    AgentSpec(
        6,
        "files00001",
        "file-reader",
        "Lists the files attached to the conversation: 'I can see <k> file(s): <title> (<type>), ...'.",
        lambda inp: [Say(_fragments_answer(inp))],
    ),
    AgentSpec(
        7,
        "story00001",
        "storyteller",
        "Tells a long deterministic story (about 2,000 characters) for benchmarks and reconnect tests.",
        lambda inp: [Say(story_text(inp.message))],
    ),
    AgentSpec(
        8,
        "hidden0001",
        "draft-helper",
        "An unpublished agent: listed only with the admin-only all_unrestricted view.",
        lambda inp: [Say(f"Draft helper: {inp.message}")],
        scope="hidden",
    ),
)

AGENTS_BY_SID: dict[str, AgentSpec] = {agent.sid: agent for agent in AGENTS}

# The agents each view lists for an API key (front-api/routes/v1/w/[wId]/assistant/agent_configurations.ts:
# `list` and `favorites` need a user and are refused before this; `workspace` is normalized to
# `published` by normalizeAgentView; `all_unrestricted` maps to `admin_internal`, unpublished included).
VIEWS: dict[str, Callable[[AgentSpec], bool]] = {
    "all": lambda agent: agent.scope != "hidden",
    "published": lambda agent: agent.scope == "visible",
    "global": lambda agent: agent.scope == "global",
    "all_unrestricted": lambda agent: True,
}
