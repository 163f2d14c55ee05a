"""The demo agents: their public configuration and the deterministic script each one plays."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bridge.simulator.demo_files import chart_png, csv_snippet, report_csv


@dataclass(frozen=True)
class Tool:
    """An MCP tool as Dust's tool configuration describes it (LightMCPToolConfigurationType).

    `name` is the tool's `originalName`, `server_name` its `mcpServerName` (the internal server's
    name), `server_display` the display name of the server's view, `server_sid` its `toolServerId`
    (an internal server's sId, `ims_...`), `config_sid` the tool configuration's own sId. The
    action's `functionCallName` is `<function_prefix>__<name>`, as the model called it.
    """

    name: str
    server_name: str
    server_display: str
    server_sid: str | None
    config_sid: str
    function_prefix: str
    icon: str | None = None
    labels: tuple[str, str] | None = None  # displayLabels: (running, done)

    @property
    def function_call_name(self) -> str:
        return f"{self.function_prefix}__{self.name}"


# The web search the existing demo agents call (an internal server without a view of its own here).
WEB_SEARCH = Tool(
    "web_search",
    "web_search_&_browse",
    "Web Search & Browse",
    None,
    "mcp_websearch01",
    "web_search_browse",
    labels=("Searching the web", "Searched the web"),
)
# The internal servers the pausing agents use; icons are from the SDK's MCPInternalActionIconSchema.
GMAIL_SEND = Tool("send_email", "gmail", "Gmail", "ims_gmail00001", "mcp_gmailsend1", "gmail", "GmailLogo")
DRIVE_SEARCH = Tool(
    "search_drive",
    "google_drive",
    "Google Drive",
    "ims_gdrive0001",
    "mcp_drivesrch1",
    "google_drive",
    "DriveLogo",
)
ASK_USER = Tool(
    "ask_user_question",
    "ask_user_question",
    "Ask User Question",
    "ims_askuser001",
    "mcp_askuser001",
    "ask_user_question",
)
RUN_AGENT = Tool("run_agent", "run_agent", "Run Agent", "ims_runagent01", "mcp_runagent01", "run_agent")
# Dust's web search as its own tests name it (functionCallName "web_search_browse__websearch",
# internalMCPServerName "web_search_&_browse", toolName "websearch"), and its data-source search
# (the `search` server's `semantic_search`).
WEBSEARCH = Tool(
    "websearch",
    "web_search_&_browse",
    "Web Search & Browse",
    "ims_websearch1",
    "mcp_websearch02",
    "web_search_browse",
    labels=("Searching the web", "Searched the web"),
)
DATA_SEARCH = Tool("semantic_search", "search", "Search", "ims_search0001", "mcp_dssearch01", "search")
# The file-maker's tool: a demo internal server (not one of Dust's) whose one call leaves both kinds of
# generated file a Dust tool can leave (see ToolFile).
MAKE_REPORT = Tool("make_report", "reports", "Reports", "ims_reports001", "mcp_mkreport01", "reports")


@dataclass(frozen=True)
class Say:
    """Stream `text` as `generation_tokens` events of the given classification; with `seconds`, the
    chunks are spread over that many seconds instead of the token delay."""

    text: str
    classification: str = "tokens"
    seconds: float = 0.0


@dataclass(frozen=True)
class UseTool:
    """A tool call: started, params, optional progress notification, `wait_seconds` of silence, success.

    The action's output is `output` as one text block, or, when `blocks` are given, those content
    blocks as they are (e.g. the resource blocks of search results).
    """

    tool: Tool
    params: dict[str, Any]
    output: str
    wait_seconds: float = 0.0
    label: str | None = None
    blocks: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ToolFile:
    """A file a tool generates, in one of the two ways Dust stores such files.

    `use_case="tool_output"`: the tool made the file itself, as Dust's own tools do through
    front/lib/actions/action_file_helpers.ts (generateCSVFileAndSnippet: a `tool_output` file whose
    DB snippet stays unset) and returned it as a `tool-output.file` resource block carrying `text`
    and `snippet` (the tables_query tool's shape). `use_case="conversation"`: the tool returned an
    MCP image block and Dust stored it (front/lib/actions/mcp_utils.ts handleBase64Upload:
    use case `conversation`, the block rewritten to a `tool-output.file` resource whose text is
    `Generated image: <name>`).
    """

    name: str
    content_type: str
    data: bytes
    use_case: str
    text: str
    snippet: str | None = None


@dataclass(frozen=True)
class MakeFiles:
    """A tool call whose output is the generated `files` (the action's `generatedFiles`)."""

    tool: Tool
    params: dict[str, Any]
    files: tuple[ToolFile, ...]


@dataclass(frozen=True)
class Fail:
    """End the message with `agent_error`."""

    code: str
    message: str


@dataclass(frozen=True)
class AskApproval:
    """A tool call that waits for `validate-action` (`tool_approve_execution`); `then(approved)` is
    what the agent does once the tool ran (True) or was rejected (False)."""

    tool: Tool
    inputs: dict[str, Any]
    output: str
    stake: str
    then: Callable[[bool], list[Step]]


@dataclass(frozen=True)
class AskQuestion:
    """The ask_user_question tool: waits for `answer-question` (`tool_ask_user_question`);
    `then(labels, custom_response)` gets the labels of the chosen options and the free text."""

    question: dict[str, Any]  # UserQuestionItemSchema: question, options[{label, description}], multiSelect
    then: Callable[[list[str], str | None], list[Step]]


@dataclass(frozen=True)
class NeedPersonalAuth:
    """A tool whose server needs the user's own account (`tool_personal_auth_required`); it waits
    until the user connects it (`POST /_sim/connect`), then runs and the agent goes on with `then`."""

    tool: Tool
    inputs: dict[str, Any]
    provider: str
    output: str
    then: list[Step]


@dataclass(frozen=True)
class RunAgent:
    """The run_agent tool: the agent `agent_sid` answers `query` in a child conversation;
    `then(answer)` gets the sub-agent's answer."""

    agent_sid: str
    query: str
    then: Callable[[str], list[Step]]


Step = Say | UseTool | MakeFiles | Fail | AskApproval | AskQuestion | NeedPersonalAuth | RunAgent


@dataclass(frozen=True)
class ScriptInput:
    """What a script may depend on; nothing else, so answers are reproducible."""

    message: str
    turn: int
    fragments: list[tuple[str, str]] = field(default_factory=list)  # (title, contentType)
    slow_seconds: float = 0.0
    long_seconds: float = 0.0


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
        no skills, and their tools are not described there (an empty `actions`).
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


EMAIL_TO = "team@example.com"
REJECTED_EMAIL = "The email was not sent: the action was rejected."

# What the question agent asks (SDK output_schemas.ts UserQuestionItemSchema).
FORMAT_QUESTION: dict[str, Any] = {
    "question": "Which format do you want?",
    "options": [
        {"label": "Summary", "description": "A short summary"},
        {"label": "Full report", "description": None},
        {"label": "Table", "description": None},
    ],
    "multiSelect": False,
}
NO_CHOICE = "You did not choose any option."

LONG_STEPS = 12


def _approval_script(inp: ScriptInput) -> list[Step]:
    def then(approved: bool) -> list[Step]:
        return [Say(f"Email sent to {EMAIL_TO}: {inp.message}" if approved else REJECTED_EMAIL)]

    return [
        Say("This needs your approval before I send the email. ", "chain_of_thought"),
        AskApproval(
            GMAIL_SEND,
            {"to": EMAIL_TO, "subject": inp.message},
            f"Email sent to {EMAIL_TO}.",
            "high",
            then,
        ),
    ]


def choice_answer(labels: list[str], custom: str | None) -> str:
    """The question agent's answer: the chosen labels, then the free text as a note."""
    if labels and custom:
        return f"You chose: {', '.join(labels)} (note: {custom})"
    if labels:
        return f"You chose: {', '.join(labels)}"
    if custom:
        return f"You chose: {custom}"
    return NO_CHOICE


def _question_script(inp: ScriptInput) -> list[Step]:
    return [AskQuestion(FORMAT_QUESTION, lambda labels, custom: [Say(choice_answer(labels, custom))])]


def _auth_script(inp: ScriptInput) -> list[Step]:
    return [
        NeedPersonalAuth(
            DRIVE_SEARCH,
            {"query": inp.message},
            "google_drive",
            "2 documents found.",
            [Say(f"Found 2 documents in Google Drive for: {inp.message}")],
        )
    ]


def _delegator_script(inp: ScriptInput) -> list[Step]:
    return [
        Say("A sub-agent will take care of this. ", "chain_of_thought"),
        RunAgent("approve001", inp.message, lambda answer: [Say(f"The sub-agent finished: {answer}")]),
    ]


def long_answer(message: str) -> str:
    """The long runner's whole answer: an opening, twelve steps, a closing."""
    steps = "".join(f" Step {i} of {LONG_STEPS} done." for i in range(1, LONG_STEPS + 1))
    return f"Starting the analysis of: {message}.{steps} Analysis complete."


def _long_script(inp: ScriptInput) -> list[Step]:
    """`long_seconds` of work: odd steps are quiet tool calls, even steps slow tokens."""
    interval = max(1.0, inp.long_seconds / LONG_STEPS)
    steps: list[Step] = [Say(f"Starting the analysis of: {inp.message}.")]
    for i in range(1, LONG_STEPS + 1):
        sentence = f" Step {i} of {LONG_STEPS} done."
        if i % 2:
            query = {"query": f"{inp.message} (part {i})"}
            steps += [UseTool(WEB_SEARCH, query, f"Part {i} analysed.", wait_seconds=interval), Say(sentence)]
        else:
            steps.append(Say(sentence, seconds=interval))
    steps.append(Say(" Analysis complete."))
    return steps


def filemaker_answer(message: str) -> str:
    """The file-maker's answer."""
    return f"I made a CSV and a chart for: {message}"


def report_files(message: str) -> tuple[ToolFile, ToolFile]:
    """What the file-maker's tool generates: `data.csv`, a file the tool made (`tool_output`), and
    `chart.png`, an image block Dust stored (`conversation`)."""
    data = report_csv(message)
    return (
        ToolFile(
            "data.csv",
            "text/csv",
            data,
            "tool_output",
            "Your query results were generated successfully. They are available as a structured CSV file.",
            csv_snippet(data),
        ),
        ToolFile("chart.png", "image/png", chart_png(message), "conversation", "Generated image: chart.png"),
    )


def _filemaker_script(inp: ScriptInput) -> list[Step]:
    return [
        Say("I will build the table, then chart it. ", "chain_of_thought"),
        MakeFiles(MAKE_REPORT, {"topic": inp.message}, report_files(inp.message)),
        Say(filemaker_answer(inp.message)),
    ]


# Dust draws citation refs from one seeded shuffle of every 3-character string of [a-z0-9]
# (front/lib/api/assistant/citations.ts getRefs), each action taking the next `citationsAllocated`
# of them. That order is V8's sort with a random comparator, which cannot be reproduced here: the
# simulator draws its refs, of the same form, from a hash of the message.
_REF_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
WEB_RESULTS, DOCUMENT_RESULTS = 2, 2


def citation_refs(message: str, count: int) -> list[str]:
    """`count` distinct refs `[a-z0-9]{3}` for `message`, always the same ones."""
    refs: list[str] = []
    salt = 0
    while len(refs) < count:
        digest = hashlib.sha256(f"{salt}:{message}".encode()).digest()
        ref = "".join(_REF_ALPHABET[byte % len(_REF_ALPHABET)] for byte in digest[:3])
        if ref not in refs:
            refs.append(ref)
        salt += 1
    return refs


def _slug(message: str) -> str:
    return hashlib.sha256(message.encode("utf-8")).hexdigest()[:12]


def citations_sources(message: str) -> list[tuple[str, str, str]]:
    """The cite-sources agent's sources as (ref, title, url): its web results, then its documents."""
    web_1, web_2, doc_1, doc_2, _ = citation_refs(message, WEB_RESULTS + DOCUMENT_RESULTS + 1)
    query = quote(message)
    return [
        (web_1, f"{message}: an overview", f"https://en.example.org/wiki/overview?q={query}"),
        (web_2, f"A practical guide to {message}", f"https://guides.example.com/{_slug(message)}"),
        (doc_1, f"Team notes on {message}", f"https://www.notion.so/acme/notes-{_slug(message)}"),
        (doc_2, f"Planning sheet: {message}", f"https://docs.google.com/document/d/{_slug(message)}"),
    ]


def citations_answer(message: str) -> str:
    """The cite-sources agent's answer: one web result cited alone, a web result and a document
    cited together, and a ref no source has (an agent's slip the reader must drop or flag)."""
    web_1, web_2, doc_1, _, unknown = citation_refs(message, WEB_RESULTS + DOCUMENT_RESULTS + 1)
    return (
        f"Here is what I found about {message}. The overview explains the basics :cite[{web_1}]. "
        f"The guide and the team notes agree on the next steps :cite[{web_2},{doc_1}]. "
        f"One figure comes from a source I did not keep :cite[{unknown}]."
    )


def _websearch_blocks(message: str) -> tuple[dict[str, Any], ...]:
    """The websearch tool's output (front/lib/actions/mcp_internal_actions/servers/webtools.ts):
    one `websearch-result` resource per result (`title`, `text` the snippet, `uri` the link,
    `reference` the ref)."""
    return tuple(
        {
            "type": "resource",
            "resource": {
                "mimeType": "application/vnd.dust.tool-output.websearch-result",
                "title": title,
                "text": f"{title}. What matters about {message}, in a few lines.",
                "uri": url,
                "reference": ref,
            },
        }
        for ref, title, url in citations_sources(message)[:WEB_RESULTS]
    )


def _document_blocks(message: str) -> tuple[dict[str, Any], ...]:
    """The search tool's output (front/lib/actions/mcp_internal_actions/servers/search.ts): one
    `data-source-search-result` resource per document (`uri` its source URL, `text` its title, `id`,
    `tags`, `ref`, `chunks`, `source.provider` the connector)."""
    providers = ("notion", "google_drive")
    return tuple(
        {
            "type": "resource",
            "resource": {
                "mimeType": "application/vnd.dust.tool-output.data-source-search-result",
                "uri": url,
                "text": title,
                "id": f"{provider}-{_slug(title)}",
                "tags": [f"title:{title}"],
                "ref": ref,
                "chunks": [f"{title}: the next steps for {message} are agreed."],
                "source": {"provider": provider},
            },
        }
        for (ref, title, url), provider in zip(
            citations_sources(message)[WEB_RESULTS:], providers, strict=True
        )
    )


def _citations_script(inp: ScriptInput) -> list[Step]:
    query = {"query": inp.message}
    return [
        Say("I will search the web, then the company documents. ", "chain_of_thought"),
        UseTool(WEBSEARCH, query, "", blocks=_websearch_blocks(inp.message)),
        UseTool(DATA_SEARCH, query, "", blocks=_document_blocks(inp.message)),
        Say(citations_answer(inp.message)),
    ]


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
            UseTool(WEB_SEARCH, {"query": inp.message}, "No results.", wait_seconds=inp.slow_seconds),
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
            UseTool(WEB_SEARCH, {"query": inp.message}, "3 results.", label="Searching the web"),
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
    AgentSpec(
        9,
        "approve001",
        "needs-approval",
        "Asks approval to send an email with Gmail (send_email, stake high); approved: 'Email sent to "
        "team@example.com: <message>', rejected: 'The email was not sent: the action was rejected.'.",
        _approval_script,
    ),
    AgentSpec(
        10,
        "question01",
        "asks-question",
        "Asks 'Which format do you want?' (Summary, Full report, Table) and answers "
        "'You chose: <labels>' plus ' (note: <custom response>)', or 'You chose: <custom response>', "
        "or 'You did not choose any option.'.",
        _question_script,
    ),
    AgentSpec(
        11,
        "auth000001",
        "needs-auth",
        "Needs the user's Google Drive account (search_drive); once connected (POST /_sim/connect) "
        "answers 'Found 2 documents in Google Drive for: <message>'.",
        _auth_script,
    ),
    AgentSpec(
        12,
        "delegate01",
        "delegator",
        "Runs the needs-approval agent as a sub-agent (run_agent, in a child conversation whose approval "
        "it relays); answers 'The sub-agent finished: <the sub-agent's answer>'.",
        _delegator_script,
    ),
    AgentSpec(
        13,
        "longrun001",
        "long-runner",
        "Works for long_seconds (default 180) in 12 steps, tool calls and slow text, answering 'Starting "
        "the analysis of: <message>. Step 1 of 12 done. ... Step 12 of 12 done. Analysis complete.'.",
        _long_script,
    ),
    AgentSpec(
        14,
        "filemaker1",
        "file-maker",
        "Runs a tool that generates data.csv and chart.png (the action's generatedFiles), then answers "
        "'I made a CSV and a chart for: <message>'.",
        _filemaker_script,
    ),
    AgentSpec(
        15,
        "citations1",
        "cite-sources",
        "Searches the web and the company documents, then answers with Dust's citation markers "
        "(:cite[ref] and :cite[ref1,ref2]), one of them to a ref no source has.",
        _citations_script,
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
