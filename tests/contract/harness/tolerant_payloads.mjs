// Builds the payloads the bridge's tolerant reader is tested with (tests/dust/test_models.py), from
// the zod schemas of Dust's official SDK (@dust-tt/client): for each response shape the bridge
// reads, a realistic base payload and the variants the SDK's schema allows, found by walking the
// schema objects (zod 3): every nullable field set to null, every optional field removed, an unknown
// field added to every object, every FlexibleEnumSchema value (z.custom, any string) set to a value
// from the future, every integer sent as a float, all of each kind at once, and a few hand-made
// variants (unknown conversation content kinds, unknown event types). Every variant is parsed with
// the SDK's schema and kept only if it parses; the dropped ones are listed with the SDK's reason.
//
//   node tolerant_payloads.mjs --out FILE     generate and write the fixture (and print counts)
//   node tolerant_payloads.mjs --check FILE   parse every payload of FILE again with the SDK
//
// Regenerate the committed fixture after an SDK bump with
//   tools/node/node_modules/node24/bin/node tests/contract/harness/tolerant_payloads.mjs \
//       --out tests/dust/fixtures/sdk_payloads.json
// (tests/contract/test_tolerant_payloads.py fails while the committed file differs.)
//
// Agent-message events: the SDK's stream reader (DustAPI.streamAgentMessageEvents) applies no
// schema, it yields the `data` object of every frame whose JSON is a record. Its schema for those
// data, AgentMessageEventDataSchema, is a closed union of `type` literals. So an event of a known
// type is kept only if the schema parses it AND the SDK's reader yields it; an event of a type that
// no branch of the union names is kept if the SDK's reader yields it unchanged (proof
// "sdk_stream_reader"), which is what happens when Dust adds an event type.
//
// Exit status: 0 on success, 1 when a base payload does not parse or --check finds a payload the SDK
// refuses, 2 on bad usage.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";

import { NODE_TOOLS, SDK_VERSION, parseArgs, sdk, zodIssues } from "./lib.mjs";

const sdkEntry = createRequire(path.join(NODE_TOOLS, "package.json")).resolve("@dust-tt/client");
// The zod the SDK's schemas are built with (its own nested copy, zod 3).
const { z } = createRequire(sdkEntry)("zod");

// --- the SDK's schemas ------------------------------------------------------------------------

// The SDK does not export its agent-message schema on its own; this response schema is exactly it.
const AgentMessageSchema = sdk.RetryMessageResponseSchema.shape.message;
// Nor its event envelope ({eventId, data}); this is AgentMessageEventTypeSchema of src/types.ts.
const AgentMessageEventSchema = z.object({ eventId: z.string(), data: sdk.AgentMessageEventDataSchema });

// The event types after which the SDK's stream reader stops, read from the SDK's build itself.
function sdkTerminalEventTypes() {
  const build = readFileSync(path.join(path.dirname(sdkEntry), "client.cjs.development.js"), "utf8");
  const found = build.match(/const terminalEventTypes = \[([^\]]*)\]/);
  if (!found) throw new Error("terminalEventTypes not found in the SDK's build");
  return [...found[1].matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort();
}

// --- realistic base payloads ------------------------------------------------------------------

const T0 = 1767261600000; // 2026-01-01T10:00:00Z, epoch milliseconds
const WORKSPACE = {
  id: 1,
  sId: "w0rkspace1",
  name: "Acme",
  role: "user",
  segmentation: "interesting",
  whiteListedProviders: ["anthropic", "openai"],
  defaultEmbeddingProvider: "openai",
  regionalModelsOnly: false,
  ssoEnforced: false,
};
const GLOBAL_AGENT = {
  id: -1,
  sId: "dust",
  version: 0,
  versionCreatedAt: null,
  versionAuthorId: null,
  name: "dust",
  description: "An assistant with context on your company data.",
  instructions: null,
  pictureUrl: "https://dust.tt/static/systemavatar/dust_avatar_full.png",
  status: "active",
  scope: "global",
  userFavorite: false,
  model: { providerId: "openai", modelId: "gpt-5", temperature: 0.7 },
  maxStepsPerRun: 8,
  templateId: null,
};
const AGENT = {
  id: 42,
  sId: "analyst001",
  version: 3,
  versionCreatedAt: "2026-01-12T09:30:00.000Z",
  versionAuthorId: 7,
  name: "analyst",
  description: "Reads spreadsheets and answers questions",
  instructions: "Answer with a table when there are numbers.",
  pictureUrl: "https://dust.tt/static/emojis/bg-sky-200/bar_chart/1f4ca",
  status: "active",
  scope: "visible",
  userFavorite: true,
  model: { providerId: "anthropic", modelId: "claude-sonnet-4-5-20250929", temperature: 0.2 },
  maxStepsPerRun: 8,
  visualizationEnabled: false,
  templateId: "tmpl000001",
  lastAuthors: ["Ada Lovelace"],
  usage: { messageCount: 120, conversationCount: 30, userCount: 9, timePeriodSec: 2592000 },
  groupIds: ["grp0000001"],
  requestedGroupIds: [["grp0000001"]],
  requestedSpaceIds: ["spc0000001"],
};
const USER = {
  sId: "usr0000001",
  id: 7,
  createdAt: T0 - 86400000,
  provider: "google",
  username: "ada",
  email: "ada@acme.test",
  firstName: "Ada",
  lastName: "Lovelace",
  fullName: "Ada Lovelace",
  image: "https://lh3.googleusercontent.com/a/ada",
};
const userMessage = (sId, created, changes = {}) => ({
  id: 101,
  created,
  type: "user_message",
  sId,
  visibility: "visible",
  version: 0,
  user: USER,
  mentions: [{ configurationId: AGENT.sId }],
  content: ":mention[analyst]{sId=analyst001} what were the Q3 sales?",
  context: {
    username: "ada",
    timezone: "Europe/Paris",
    fullName: "Ada Lovelace",
    email: "ada@acme.test",
    profilePictureUrl: "https://lh3.googleusercontent.com/a/ada",
    origin: "api",
    clientSideMCPServerIds: ["csm0000001"],
    selectedMCPServerViewIds: ["msv0000001"],
    lastTriggerRunAt: T0 - 3600000,
  },
  agenticMessageData: { type: "run_agent", originMessageId: "amsg000000" },
  ...changes,
});
const ACTION = {
  id: 900,
  sId: "act0000001",
  createdAt: T0 + 500,
  updatedAt: T0 + 900,
  mcpServerId: "msv0000001",
  internalMCPServerName: "query_tables",
  toolName: "execute_query",
  agentMessageId: 55,
  functionCallName: "query_tables__execute_query",
  functionCallId: "call_0001",
  status: "succeeded",
  params: { query: "SELECT region, sum(sales) FROM q3 GROUP BY region" },
  step: 0,
  executionDurationMs: 420,
  citationsAllocated: 0,
  output: [{ type: "text", text: "EMEA 700k, AMER 500k" }],
  generatedFiles: [
    {
      title: "q3.csv",
      snippet: "region,sales",
      hidden: false,
      isInProjectContext: false,
      contentType: "text/csv",
      fileId: "fil0000002",
    },
  ],
  displayLabels: { running: "Querying tables", done: "Queried tables" },
};
const agentMessage = (sId, parentMessageId, changes = {}) => ({
  id: 102,
  agentMessageId: 55,
  created: T0 + 1000,
  type: "agent_message",
  sId,
  visibility: "visible",
  version: 0,
  parentMessageId,
  parentAgentMessageId: null,
  configuration: AGENT,
  status: "succeeded",
  actions: [ACTION],
  content: "Q3 sales were 1.2M EUR: EMEA 700k, AMER 500k.",
  chainOfThought: "The sheet has one row per region.",
  rawContents: [{ step: 0, content: "Q3 sales were 1.2M EUR: EMEA 700k, AMER 500k." }],
  error: null,
  ...changes,
});
const NEW_AGENT_MESSAGE = (sId, parentMessageId) =>
  agentMessage(sId, parentMessageId, {
    status: "created",
    actions: [],
    content: null,
    chainOfThought: null,
    rawContents: [],
  });
const FRAGMENT_BASE = {
  type: "content_fragment",
  id: 100,
  created: T0 - 1000,
  visibility: "visible",
  version: 0,
  context: {
    username: "ada",
    fullName: "Ada Lovelace",
    email: "ada@acme.test",
    profilePictureUrl: "https://lh3.googleusercontent.com/a/ada",
  },
  contentFragmentVersion: "latest",
};
const FILE_FRAGMENT = {
  ...FRAGMENT_BASE,
  sId: "cfrag00001",
  sourceUrl: "https://dust.tt/api/v1/w/w0rkspace1/files/fil0000001",
  title: "q3.csv",
  contentType: "text/csv",
  contentFragmentId: "cfid000001",
  contentFragmentType: "file",
  expiredReason: null,
  fileId: "fil0000001",
  snippet: "region,sales\nEMEA,700000",
  generatedTables: ["tbl0000001"],
  textUrl: "https://dust.tt/api/v1/w/w0rkspace1/files/fil0000001?action=view",
  textBytes: 2048,
  sourceProvider: "google_drive",
  sourceIcon: "https://dust.tt/static/gdrive.svg",
};
const NODE_FRAGMENT = {
  ...FRAGMENT_BASE,
  id: 103,
  sId: "cfrag00002",
  created: T0 + 2000,
  sourceUrl: "https://docs.google.com/document/d/abc",
  title: "Sales playbook",
  contentType: "application/vnd.google-apps.document",
  contentFragmentId: "cfid000002",
  contentFragmentType: "content_node",
  expiredReason: null,
  nodeId: "gdrive-abc",
  nodeDataSourceViewId: "dsv0000001",
  nodeType: "document",
  contentNodeData: {
    nodeId: "gdrive-abc",
    nodeDataSourceViewId: "dsv0000001",
    nodeType: "document",
    provider: "google_drive",
    spaceName: "Company Data",
  },
};
const conversation = (content) => ({
  id: 12,
  created: T0 - 2000,
  updated: T0 + 5000,
  unread: false,
  actionRequired: false,
  owner: WORKSPACE,
  sId: "conv000001",
  title: "Q3 sales",
  visibility: "unlisted",
  groupIds: ["grp0000001"],
  requestedGroupIds: [["grp0000001"]],
  content,
  url: "https://dust.tt/w/w0rkspace1/conversation/conv000001",
});
const FILE = {
  id: "fil0000001",
  sId: "fil0000001",
  contentType: "text/csv",
  fileName: "q3.csv",
  fileSize: 2048,
  useCase: "conversation",
};
const FILE_URLS = {
  downloadUrl: "https://dust.tt/api/v1/w/w0rkspace1/files/fil0000001?action=download",
  uploadUrl: "https://dust.tt/api/v1/w/w0rkspace1/files/fil0000001",
  publicUrl: "https://dust.tt/share/file/fil0000001",
};

// Agent-message events, one base per event type the SDK knows (the user question one aside).
const event = (n, data) => ({
  eventId: `${T0 + 1000 + n}-0`,
  data: { created: T0 + 1000 + n, configurationId: AGENT.sId, messageId: "amsg000001", ...data },
});
const VALIDATION_METADATA = {
  agentName: "analyst",
  icon: "ActionTableIcon",
  mcpServerName: "query_tables",
  pubsubMessageId: "psm0000001",
  toolName: "execute_query",
  mcpServerDisplayName: "Query tables",
  mcpServerId: "msv0000001",
};
const BLOCKED = {
  actionId: "act0000001",
  inputs: { query: "DELETE FROM q3" },
  stake: "high",
  metadata: VALIDATION_METADATA,
  argumentsRequiringApproval: ["query"],
  approvalArgsLabel: "query",
  conversationId: "conv000001",
  isLastBlockingEventForStep: true,
};
const RUNNING_ACTION = {
  ...ACTION,
  status: "running",
  executionDurationMs: null,
  output: null,
  generatedFiles: [],
};
const EVENTS = {
  generation_tokens: event(1, {
    type: "generation_tokens",
    text: "Q3 sales ",
    classification: "tokens",
  }),
  generation_tokens_chain_of_thought: event(2, {
    type: "generation_tokens",
    text: "The sheet has one row per region.",
    classification: "chain_of_thought",
  }),
  generation_tokens_closing_delimiter: event(3, {
    type: "generation_tokens",
    text: "</thinking>",
    classification: "closing_delimiter",
    delimiterClassification: "chain_of_thought",
  }),
  tool_call_started: event(4, {
    type: "tool_call_started",
    toolCallId: "call_0001",
    toolCallIndex: 0,
    toolName: "execute_query",
  }),
  tool_params: event(5, { type: "tool_params", action: RUNNING_ACTION }),
  tool_notification: event(6, {
    type: "tool_notification",
    action: RUNNING_ACTION,
    notification: {
      progress: 1,
      total: 3,
      data: { label: "Reading q3.csv", output: { type: "text", text: "3 rows" } },
      _meta: { data: { label: "Reading q3.csv", output: { type: "text", text: "3 rows" } } },
    },
  }),
  tool_approve_execution: event(7, {
    type: "tool_approve_execution",
    ...BLOCKED,
    userId: "usr0000001",
  }),
  tool_personal_auth_required: event(8, {
    type: "tool_personal_auth_required",
    ...BLOCKED,
    authError: {
      mcpServerId: "msv0000002",
      message: "Connect your Google Drive",
      provider: "google_drive",
      scope: "drive.readonly",
      toolName: "read_file",
    },
  }),
  tool_file_auth_required: event(9, {
    type: "tool_file_auth_required",
    ...BLOCKED,
    fileAuthError: {
      fileId: "gdrive-abc",
      fileName: "Sales playbook",
      connectionId: "con0000001",
      mimeType: "application/vnd.google-apps.document",
      toolName: "read_file",
      message: "Allow access to this file",
    },
  }),
  tool_error: event(10, {
    type: "tool_error",
    isLastBlockingEventForStep: false,
    error: { code: "tool_error", message: "The query timed out", metadata: { timeoutMs: 30000 } },
  }),
  agent_action_success: event(11, { type: "agent_action_success", action: ACTION }),
  agent_context_pruned: event(12, { type: "agent_context_pruned" }),
  agent_message_done: event(13, { type: "agent_message_done", conversationId: "conv000001" }),
  agent_message_success: event(14, {
    type: "agent_message_success",
    message: agentMessage("amsg000001", "umsg000001"),
    runIds: ["run0000001"],
  }),
  agent_message_gracefully_stopped: event(15, {
    type: "agent_message_gracefully_stopped",
    message: agentMessage("amsg000001", "umsg000001", { status: "succeeded", actions: [] }),
    runIds: ["run0000001"],
  }),
  agent_error: event(16, {
    type: "agent_error",
    error: { code: "multi_actions_error", message: "The model failed", metadata: { category: "retryable" } },
    runIds: ["run0000001"],
  }),
  agent_generation_cancelled: event(17, { type: "agent_generation_cancelled" }),
  user_message_error: {
    eventId: `${T0 + 1018}-0`,
    data: {
      type: "user_message_error",
      created: T0 + 1018,
      error: { code: "plan_message_limit_exceeded", message: "The message limit was reached" },
    },
  },
};

// Kinds of things a newer Dust may send that the SDK's schemas do not name.
const UNKNOWN_CONTENT_KIND = [
  {
    type: "agent_handover_notice",
    id: 104,
    sId: "hnd0000001",
    created: T0 + 3000,
    visibility: "visible",
    version: 0,
  },
];
const UNKNOWN_FRAGMENT_TYPE = {
  ...NODE_FRAGMENT,
  sId: "cfrag00003",
  contentFragmentType: "web_page",
  url: "https://acme.test/q3",
};
const UNKNOWN_EVENTS = {
  "an event type from the future, minimal": event(20, { type: "agent_reasoning_summary" }),
  "an event type from the future, with an action and nested data": event(21, {
    type: "tool_output_chunk",
    action: ACTION,
    chunk: { index: 0, text: "EMEA", more: [1, 2.5, null] },
  }),
};

// --- the shapes -------------------------------------------------------------------------------

const SHAPES = [
  {
    name: "agent_listing",
    reads: "GET assistant/agent_configurations: `agentConfigurations` (Agent each)",
    schemaName: "GetAgentConfigurationsResponseSchema",
    schema: sdk.GetAgentConfigurationsResponseSchema,
    bases: { listing: { agentConfigurations: [GLOBAL_AGENT, AGENT] } },
    extra: () => ({ "no agents at all": { agentConfigurations: [] } }),
  },
  {
    name: "agent",
    reads: "GET assistant/agent_configurations/{sId}: `agentConfiguration` (Agent)",
    schemaName: "GetOrPatchAgentConfigurationResponseSchema",
    schema: sdk.GetOrPatchAgentConfigurationResponseSchema,
    bases: {
      agent: { agentConfiguration: AGENT, skippedActions: [{ name: "gmail", reason: "not allowed" }] },
    },
  },
  {
    name: "create_conversation",
    reads: "POST assistant/conversations: `conversation` (Conversation) and `message` (UserMessage)",
    schemaName: "CreateConversationResponseSchema",
    schema: sdk.CreateConversationResponseSchema,
    bases: {
      created: {
        conversation: conversation([
          [userMessage("umsg000001", T0)],
          [NEW_AGENT_MESSAGE("amsg000001", "umsg000001")],
        ]),
        message: userMessage("umsg000001", T0),
      },
    },
    extra: (bases) => ({
      "unknown content kind in conversation.content": withContent(bases.created, UNKNOWN_CONTENT_KIND),
    }),
  },
  {
    name: "post_message",
    reads:
      "POST assistant/conversations/{cId}/messages: `message` (UserMessage), " +
      "`agentMessages` (AgentMessage each)",
    // Dust sends `agentMessages`; the SDK's schema does not name it (and strips it), so its items
    // are held to the SDK's agent-message schema, and its absence is allowed.
    schemaName: "PostUserMessageResponseSchema + agentMessages: AgentMessage[] (optional)",
    schema: sdk.PostUserMessageResponseSchema.extend({
      agentMessages: AgentMessageSchema.array().optional(),
    }),
    bases: {
      posted: {
        message: userMessage("umsg000002", T0 + 4000, {
          mentions: [{ configurationId: AGENT.sId }, { type: "user", userId: "usr0000002" }],
          content: "and Q4?",
        }),
        agentMessages: [NEW_AGENT_MESSAGE("amsg000002", "umsg000002")],
      },
    },
  },
  {
    name: "get_conversation",
    reads:
      "GET assistant/conversations/{cId}: `conversation` (Conversation, current_messages, agent_message_for)",
    schemaName: "GetConversationResponseSchema",
    schema: sdk.GetConversationResponseSchema,
    bases: {
      conversation: {
        conversation: conversation([
          [FILE_FRAGMENT],
          [
            userMessage("umsg000001", T0, {
              mentions: [{ configurationId: AGENT.sId }, { type: "user", userId: "usr0000002" }],
            }),
          ],
          [
            agentMessage("amsg000001", "umsg000001", {
              status: "failed",
              content: null,
              chainOfThought: null,
              actions: [],
              rawContents: [],
              error: { code: "model_error", message: "Overloaded", metadata: { retryable: true } },
            }),
            agentMessage("amsg000001", "umsg000001", { version: 1 }),
          ],
          [NODE_FRAGMENT],
        ]),
        hasMore: false,
        lastValue: "umsg000001",
      },
    },
    extra: (bases) => ({
      "an empty rank in conversation.content": withContent(bases.conversation, []),
      "no content at all": {
        ...bases.conversation,
        conversation: { ...bases.conversation.conversation, content: [] },
      },
      "unknown content kind in conversation.content": withContent(bases.conversation, UNKNOWN_CONTENT_KIND),
      "unknown contentFragmentType in conversation.content": withContent(bases.conversation, [
        UNKNOWN_FRAGMENT_TYPE,
      ]),
    }),
  },
  {
    name: "file_create",
    reads: "POST files: `file` (DustFile, with its uploadUrl)",
    schemaName: "FileUploadRequestResponseSchema",
    schema: sdk.FileUploadRequestResponseSchema,
    bases: { created: { file: { ...FILE, status: "created", ...FILE_URLS } } },
  },
  {
    name: "file_upload",
    reads: "POST files/{fId} (multipart upload): `file` (DustFile)",
    schemaName: "FileUploadedRequestResponseSchema",
    schema: sdk.FileUploadedRequestResponseSchema,
    bases: { uploaded: { file: { ...FILE, status: "ready", ...FILE_URLS } } },
  },
  {
    name: "agent_message_event",
    reads:
      "GET .../messages/{mId}/events: SSE `data:` frames {eventId, data} (bridge.dust.events.parse_frame)",
    schemaName: "{eventId: string, data: AgentMessageEventDataSchema}",
    schema: AgentMessageEventSchema,
    events: true,
    bases: EVENTS,
    extra: () => UNKNOWN_EVENTS,
  },
];

function withContent(base, messages) {
  const copy = structuredClone(base);
  copy.conversation.content.push(structuredClone(messages));
  return copy;
}

// --- walking a zod 3 schema alongside a payload -----------------------------------------------

const kindOf = (schema) => schema._def.typeName;

/** z.custom((v) => typeof v === "string"): the SDK's FlexibleEnumSchema (any string). */
function isFlexibleEnum(schema) {
  return (
    kindOf(schema) === "ZodEffects" &&
    schema._def.effect.type === "refinement" &&
    kindOf(schema._def.schema) === "ZodAny"
  );
}

/** Does the schema, by its structure, let the value be null ("null") or absent ("undefined")? */
function admits(schema, what) {
  switch (kindOf(schema)) {
    case "ZodNull":
      return what === "null";
    case "ZodUndefined":
    case "ZodVoid":
      return what === "undefined";
    case "ZodNullable":
      return what === "null" || admits(schema._def.innerType, what);
    case "ZodOptional":
    case "ZodDefault":
      return what === "undefined" || admits(schema._def.innerType, what);
    case "ZodUnion":
    case "ZodDiscriminatedUnion":
      return schema._def.options.some((option) => admits(option, what));
    case "ZodReadonly":
    case "ZodCatch": // a .catch() replaces what it refuses: not counted as admitting it
      return admits(schema._def.innerType, what);
    case "ZodBranded":
      return admits(schema._def.type, what);
    case "ZodLazy":
      return admits(schema._def.getter(), what);
    case "ZodPipeline":
      return admits(schema._def.in, what);
    case "ZodEffects":
      return !isFlexibleEnum(schema) && admits(schema._def.schema, what);
    default:
      return false;
  }
}

/** The schema under its wrappers (nullable, optional, default, readonly, catch, refinements...). */
function core(schema) {
  for (;;) {
    switch (kindOf(schema)) {
      case "ZodNullable":
      case "ZodOptional":
      case "ZodDefault":
      case "ZodReadonly":
      case "ZodCatch":
        schema = schema._def.innerType;
        continue;
      case "ZodBranded":
        schema = schema._def.type;
        continue;
      case "ZodLazy":
        schema = schema._def.getter();
        continue;
      case "ZodPipeline":
        schema = schema._def.in;
        continue;
      case "ZodEffects":
        if (isFlexibleEnum(schema)) return schema;
        schema = schema._def.schema;
        continue;
      default:
        return schema;
    }
  }
}

const schemaIds = new Map();
const idOf = (schema) => {
  if (!schemaIds.has(schema)) schemaIds.set(schema, schemaIds.size + 1);
  return schemaIds.get(schema);
};

/**
 * The places of `value` where the schema allows a variant: each site is {kind, path, owner} with
 * kind "null", "removed", "extra" (an object), "flexible" (a FlexibleEnumSchema string) or "float"
 * (an integer `z.number()`). `owner` is the zod object the site belongs to. Optional keys the
 * value lacks are collected in `absent` (they cannot be removed, so say what was not varied).
 */
function walk(schema, value, at, owner, sites, absent) {
  schema = core(schema);
  if (value === null || value === undefined) return;
  if (isFlexibleEnum(schema)) {
    if (typeof value === "string") sites.push({ kind: "flexible", path: at, owner });
    return;
  }
  switch (kindOf(schema)) {
    case "ZodUnion":
    case "ZodDiscriminatedUnion": {
      // Follow the branch the SDK's parse would take: the first one that accepts the value.
      const branch = schema._def.options.find((option) => option.safeParse(value).success);
      if (branch) walk(branch, value, at, owner, sites, absent);
      return;
    }
    case "ZodIntersection":
      walk(schema._def.left, value, at, owner, sites, absent);
      walk(schema._def.right, value, at, owner, sites, absent);
      return;
    case "ZodObject": {
      if (typeof value !== "object" || Array.isArray(value)) return;
      sites.push({ kind: "extra", path: at, owner: schema });
      for (const [key, field] of Object.entries(schema.shape)) {
        const here = [...at, key];
        if (!(key in value)) {
          if (admits(field, "undefined")) absent.push(here);
          continue;
        }
        if (value[key] !== null && admits(field, "null")) {
          sites.push({ kind: "null", path: here, owner: schema });
        }
        if (admits(field, "undefined")) sites.push({ kind: "removed", path: here, owner: schema });
        walk(field, value[key], here, schema, sites, absent);
      }
      return;
    }
    case "ZodArray":
      if (Array.isArray(value)) {
        value.forEach((item, i) => walk(schema._def.type, item, [...at, i], owner, sites, absent));
      }
      return;
    case "ZodTuple":
      if (Array.isArray(value)) {
        schema._def.items.forEach((item, i) => walk(item, value[i], [...at, i], owner, sites, absent));
      }
      return;
    case "ZodRecord":
      if (typeof value === "object" && !Array.isArray(value)) {
        for (const [key, item] of Object.entries(value)) {
          walk(schema._def.valueType, item, [...at, key], owner, sites, absent);
        }
      }
      return;
    case "ZodNumber":
      if (Number.isInteger(value)) sites.push({ kind: "float", path: at, owner });
      return;
    default:
      return;
  }
}

// --- making variants --------------------------------------------------------------------------

const EXTRA_KEY = "fieldFromANewerDust";
const EXTRA_VALUE = { addedIn: "2027", values: [1, 2.5, "three", null] };
const FUTURE_VALUES = {
  status: "paused_for_approval",
  scope: "restricted",
  visibility: "archived",
  providerId: "future_provider",
  modelId: "future-model-2027",
  contentType: "application/vnd.dust.future",
  useCase: "future_use_case",
  classification: "future_classification",
  delimiterClassification: "future_classification",
  provider: "future_provider",
  segmentation: "future_segment",
};
const futureValue = (at) => FUTURE_VALUES[at.at(-1)] ?? "value_from_a_newer_dust";
const floatOf = (n) => n + 0.5;

const ANY = Symbol("any item");
const pathText = (at) =>
  at.length === 0
    ? "(root)"
    : at.map((p, i) => (p === ANY ? "[*]" : typeof p === "number" ? `[${p}]` : i ? `.${p}` : p)).join("");
const general = (at) => at.map((p) => (typeof p === "number" ? ANY : p));

function getAt(value, at) {
  return at.reduce((v, p) => (v === null || v === undefined ? undefined : v[p]), value);
}

/** Apply one site's change to `payload` (in place); false when its path no longer exists. */
function applySite(payload, site) {
  const parent = getAt(payload, site.path.slice(0, -1));
  const key = site.path.at(-1);
  if (site.kind === "extra") {
    const target = getAt(payload, site.path);
    if (target === null || typeof target !== "object") return false;
    target[EXTRA_KEY] = structuredClone(EXTRA_VALUE);
    return true;
  }
  if (parent === null || typeof parent !== "object" || !(key in parent)) return false;
  if (site.kind === "null") parent[key] = null;
  else if (site.kind === "removed") delete parent[key];
  else if (site.kind === "flexible") parent[key] = futureValue(site.path);
  else if (site.kind === "float") parent[key] = floatOf(parent[key]);
  return true;
}

const KIND_TEXT = {
  null: "null",
  removed: "removed",
  extra: "unknown field added to",
  flexible: "value from the future",
  float: "float",
};
const ALL_TEXT = {
  null: "every nullable field null at once",
  removed: "every optional field removed at once",
  extra: "an unknown field in every object at once",
  flexible: "every flexible-enum value from the future at once",
  float: "every integer a float at once",
};

function typedAncestor(value, at) {
  for (let n = at.length; n > 0; n--) {
    const node = getAt(value, at.slice(0, n));
    if (typeof node?.type === "string") return node.type;
  }
  return undefined;
}

// An unknown field and a float are read or ignored alike wherever they are: one variant does them
// everywhere at once, and only if the SDK refuses that one (a strict object, an `.int()`) does each
// place get a variant of its own, so the refusal is pinned down. Nulls, removals and future enum
// values get one variant per place (and one with all of them), since each may take a union branch.
const ALL_AT_ONCE_FIRST = new Set(["extra", "float"]);

/**
 * The variants of one base: one per group of sites (the same change at the same place of each item
 * of an array counts once: `agentConfigurations[*].name`), and all sites of each kind at once.
 * `accepted(payload)` is the SDK's verdict, used to decide whether all-at-once is enough.
 */
async function variantsOf(schema, base, accepted) {
  const sites = [];
  const absent = [];
  walk(schema, base, [], undefined, sites, absent);
  const groups = new Map();
  for (const site of sites) {
    const key = `${site.kind}|${pathText(general(site.path))}|${site.owner ? idOf(site.owner) : 0}`;
    if (!groups.has(key)) groups.set(key, { kind: site.kind, sites: [] });
    groups.get(key).sites.push(site);
  }
  const described = new Map();
  const perSite = (kind, group) => {
    const shown = group.length > 1 ? pathText(general(group[0].path)) : pathText(group[0].path);
    const detail =
      kind === "flexible"
        ? ` = ${JSON.stringify(futureValue(group[0].path))}`
        : kind === "float"
          ? " (+0.5)"
          : "";
    let description = `${KIND_TEXT[kind]}: ${shown}${detail}`;
    // The same path in objects of different schemas (a user and an agent message are both at
    // `content[*][*]`): say which kind of message, from the nearest ancestor with a `type`.
    if (group.length > 1) {
      const typed = typedAncestor(base, kind === "extra" ? group[0].path : group[0].path.slice(0, -1));
      if (typed) description += ` (in ${typed})`;
    }
    const seen = described.get(description) ?? 0;
    described.set(description, seen + 1);
    if (seen) description += ` #${seen + 1}`;
    const payload = structuredClone(base);
    for (const site of group) applySite(payload, site);
    return { variant: description, payload };
  };
  const allAtOnce = (kind) => {
    // Deepest first, so a change inside an object happens before the object itself is changed.
    const ordered = sites.filter((s) => s.kind === kind).sort((a, b) => b.path.length - a.path.length);
    const payload = structuredClone(base);
    for (const site of ordered) applySite(payload, site);
    return { variant: ALL_TEXT[kind], payload };
  };
  const variants = [];
  const groupsOf = (kind) => [...groups.values()].filter((g) => g.kind === kind);
  for (const { kind, sites: group } of groups.values()) {
    if (!ALL_AT_ONCE_FIRST.has(kind) || groupsOf(kind).length === 1) variants.push(perSite(kind, group));
  }
  for (const kind of Object.keys(ALL_TEXT)) {
    if (groupsOf(kind).length < 2) continue;
    const all = allAtOnce(kind);
    variants.push(all);
    if (ALL_AT_ONCE_FIRST.has(kind) && !(await accepted(all.payload))) {
      for (const { sites: group } of groupsOf(kind)) variants.push(perSite(kind, group));
    }
  }
  return { variants, absent: absent.map(pathText) };
}

// --- the SDK's verdicts -----------------------------------------------------------------------

/** The SDK's refusal in a few lines: its first issues, union branches flattened and deduplicated. */
function refusal(error) {
  const lines = zodIssues(error)
    .flatMap((issue) => issue.split("\n"))
    .map((line) => line.trim())
    .filter((line) => line && !/^branch \d+:$/.test(line));
  return [...new Set(lines)].slice(0, 4).join("; ");
}

const quietLogger = { error() {}, warn() {}, info() {}, debug() {} };

/** What the SDK's own stream reader yields for one SSE frame carrying `payload`. */
async function sdkStreamReaderYields(payload) {
  const body = `data: ${JSON.stringify(payload)}\n\ndata: done\n\n`;
  const original = globalThis.fetch;
  globalThis.fetch = async () =>
    new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  try {
    const api = new sdk.DustAPI(
      { url: "http://dust.invalid" },
      { apiKey: "sk-payloads", workspaceId: "w0rkspace1" },
      quietLogger,
    );
    const opened = await api.streamAgentMessageEvents({
      conversationId: "conv000001",
      agentMessageId: "amsg000001",
      options: { maxReconnectAttempts: 1, reconnectDelay: 0, autoReconnect: false },
    });
    if (opened.isErr()) return { error: opened.error.message };
    const yielded = [];
    for await (const item of opened.value.eventStream) yielded.push(item);
    return { yielded };
  } finally {
    globalThis.fetch = original;
  }
}

const EVENT_TYPES = new Set(
  sdk.AgentMessageEventDataSchema._def.options.flatMap(function literals(option) {
    const inner = core(option);
    if (kindOf(inner) === "ZodUnion") return inner._def.options.flatMap(literals);
    return [inner.shape.type._def.value];
  }),
);

/** {ok, proof} or {ok: false, reason}: does the SDK accept `payload` as a `shape` answer? */
async function sdkVerdict(shape, payload) {
  const parsed = shape.schema.safeParse(payload);
  if (!shape.events) {
    return parsed.success
      ? { ok: true, proof: shape.schemaName }
      : { ok: false, reason: refusal(parsed.error) };
  }
  const read = await sdkStreamReaderYields(payload);
  const readerOk = read.yielded?.length === 1 && isDeepStrictEqual(read.yielded[0], payload.data);
  const readerText =
    read.error ?? `the SDK's stream reader yielded ${JSON.stringify(read.yielded).slice(0, 200)}`;
  const known = EVENT_TYPES.has(payload?.data?.type);
  if (known || typeof payload?.data?.type !== "string") {
    if (!parsed.success) return { ok: false, reason: refusal(parsed.error) };
    if (!readerOk) return { ok: false, reason: readerText };
    return { ok: true, proof: `${shape.schemaName} + sdk_stream_reader` };
  }
  if (parsed.success) return { ok: false, reason: "an unknown event type parsed with the closed union?" };
  return readerOk ? { ok: true, proof: "sdk_stream_reader" } : { ok: false, reason: readerText };
}

// --- main -------------------------------------------------------------------------------------

async function generate(out) {
  const lines = [`Tolerant-reader payloads from @dust-tt/client ${SDK_VERSION} schemas`];
  const kept = [];
  const dropped = [];
  const summary = {};
  const notVaried = {};
  for (const shape of SHAPES) {
    const counts = { generated: 0, kept: 0, dropped: 0 };
    const candidates = [];
    for (const [baseName, base] of Object.entries(shape.bases)) {
      const verdict = await sdkVerdict(shape, base);
      if (!verdict.ok) {
        console.error(
          `base payload ${shape.name}/${baseName} does not parse with ${shape.schemaName}: ${verdict.reason}`,
        );
        process.exit(1);
      }
      candidates.push({ base: baseName, variant: "base payload", payload: base });
      const { variants, absent } = await variantsOf(
        shape.schema,
        base,
        async (payload) => (await sdkVerdict(shape, payload)).ok,
      );
      for (const v of variants) candidates.push({ base: baseName, ...v });
      if (absent.length) notVaried[`${shape.name}/${baseName}`] = absent;
    }
    for (const [description, payload] of Object.entries(shape.extra?.(shape.bases) ?? {})) {
      candidates.push({ base: "(hand-made)", variant: description, payload });
    }
    for (const candidate of candidates) {
      counts.generated++;
      const verdict = await sdkVerdict(shape, candidate.payload);
      if (verdict.ok) {
        counts.kept++;
        kept.push({
          shape: shape.name,
          base: candidate.base,
          variant: candidate.variant,
          proof: verdict.proof,
          payload: candidate.payload,
        });
      } else {
        counts.dropped++;
        dropped.push({
          shape: shape.name,
          base: candidate.base,
          variant: candidate.variant,
          sdk_refusal: verdict.reason,
        });
      }
    }
    summary[shape.name] = counts;
    lines.push(
      `${shape.name.padEnd(20)} generated ${String(counts.generated).padStart(4)}  ` +
        `kept ${String(counts.kept).padStart(4)}  dropped ${String(counts.dropped).padStart(3)}   ` +
        `(${shape.schemaName})`,
    );
  }
  for (const d of dropped) {
    lines.push(`dropped  ${d.shape}/${d.base}: ${d.variant}\n         the SDK: ${d.sdk_refusal}`);
  }
  for (const [where, paths] of Object.entries(notVaried)) {
    lines.push(`optional fields absent from base ${where} (not varied): ${paths.join(", ")}`);
  }
  const total = Object.values(summary).reduce(
    (t, c) => ({
      generated: t.generated + c.generated,
      kept: t.kept + c.kept,
      dropped: t.dropped + c.dropped,
    }),
    { generated: 0, kept: 0, dropped: 0 },
  );
  lines.push(`total: generated ${total.generated}, kept ${total.kept}, dropped ${total.dropped}`);

  const header = {
    generator: "tests/contract/harness/tolerant_payloads.mjs",
    sdk: `@dust-tt/client ${SDK_VERSION}`,
    note:
      "Generated: do not edit. Every payload parses with the SDK schema of its shape (proof); " +
      "agent_message_event payloads of a type the SDK's closed union does not name are proven by " +
      "the SDK's stream reader (DustAPI.streamAgentMessageEvents), which applies no schema.",
    terminal_event_types: sdkTerminalEventTypes(),
    shapes: Object.fromEntries(
      SHAPES.map((s) => [s.name, { reads: s.reads, schema: s.schemaName, ...summary[s.name] }]),
    ),
    not_varied: notVaried,
    dropped,
  };
  // One payload per line, so a schema change shows as a readable diff.
  const body = [
    "{",
    ...Object.entries(header).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)},`),
    '  "payloads": [',
    kept.map((p) => `    ${JSON.stringify(p)}`).join(",\n"),
    "  ]",
    "}",
    "",
  ].join("\n");
  writeFileSync(out, body, "utf8");
  lines.push(`wrote ${kept.length} payloads to ${out}`);
  console.log(lines.join("\n"));
}

async function checkFile(file) {
  const fixture = JSON.parse(readFileSync(file, "utf8"));
  const byName = new Map(SHAPES.map((s) => [s.name, s]));
  const lines = [`Committed payloads checked with @dust-tt/client ${SDK_VERSION}`];
  let failed = 0;
  const perShape = new Map();
  for (const item of fixture.payloads) {
    const shape = byName.get(item.shape);
    const verdict = shape ? await sdkVerdict(shape, item.payload) : { ok: false, reason: "unknown shape" };
    perShape.set(item.shape, (perShape.get(item.shape) ?? 0) + 1);
    if (!verdict.ok || verdict.proof !== item.proof) {
      failed++;
      const why = verdict.reason ?? `proof ${verdict.proof}, the file says ${item.proof}`;
      lines.push(`FAIL  ${item.shape}/${item.base}: ${item.variant}\n      ${why}`);
    }
  }
  lines.push(`checked: ${[...perShape].map(([k, n]) => `${k}×${n}`).join(", ")}`);
  lines.push(`${fixture.payloads.length - failed} passed, ${failed} failed`);
  console.log(lines.join("\n"));
  process.exit(failed ? 1 : 0);
}

const args = parseArgs(process.argv.slice(2));
if (args.out && typeof args.out === "string") {
  await generate(args.out);
} else if (args.check && typeof args.check === "string") {
  await checkFile(args.check);
} else {
  console.error("usage: node tolerant_payloads.mjs --out FILE | --check FILE");
  process.exit(2);
}
