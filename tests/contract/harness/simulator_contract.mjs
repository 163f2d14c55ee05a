// Drives the Dust simulator with Dust's official JavaScript SDK (@dust-tt/client) and parses every
// answer with the SDK's own zod schemas: each operation the bridge performs against Dust, plus the
// refusals the bridge relies on. Any parse error, unexpected status or missing route is a failure.
//
//   node simulator_contract.mjs --url http://127.0.0.1:PORT [--workspace demo] [--api-key sk-...]
//                               [--groups agents,streaming,...] [--json results.json]
//
// Exit status: 0 when every operation passed, 1 when one failed (the report on stdout says which
// operation, which HTTP exchange and which zod issue), 2 on bad usage.

import { writeFileSync } from "node:fs";

import {
  ContractError,
  FetchLog,
  Report,
  SdkLogger,
  check,
  createParser,
  expectSchema,
  expectStatus,
  is2xx,
  lastFetch,
  parseArgs,
  SDK_VERSION,
  sdk,
  zodIssues,
} from "./lib.mjs";

const {
  DustAPI,
  APIErrorSchema,
  AgentMessageEventDataSchema,
  AnswerUserQuestionResponseSchema,
  BlockedActionsResponseSchema,
  CancelMessageGenerationResponseSchema,
  CreateConversationResponseSchema,
  FileUploadRequestResponseSchema,
  FileUploadedRequestResponseSchema,
  GetAgentConfigurationsResponseSchema,
  GetConversationResponseSchema,
  GetOrPatchAgentConfigurationResponseSchema,
  PostContentFragmentResponseSchema,
  PostConversationsResponseSchema,
  PostUserMessageResponseSchema,
  RetryMessageResponseSchema,
  SearchResultResourceSchema,
  ValidateActionResponseSchema,
  WebsearchResultResourceSchema,
  isSearchResultResourceType,
  isToolGeneratedFile,
  isWebsearchResultResourceType,
} = sdk;

// The SDK does not export its agent-message schema on its own; this response schema is exactly it.
const AgentMessageSchema = RetryMessageResponseSchema.shape.message;

const GROUPS = [
  "agents",
  "user-only-views",
  "conversations",
  "streaming",
  "cancel",
  "files",
  "pauses",
  "generated-files",
  "citations",
];
const ECHO = "echo000001";
const SLOW = "slow000001";
const RESEARCHER = "research01";
const BROKEN = "broken0001";
const FILE_READER = "files00001";
const APPROVER = "approve001";
const ASKER = "question01";
const NEEDS_AUTH = "auth000001";
const DELEGATOR = "delegate01";
const FILE_MAKER = "filemaker1";
const CITER = "citations1";
const TERMINAL = new Set([
  "agent_message_success",
  "agent_message_gracefully_stopped",
  "agent_error",
  "agent_generation_cancelled",
  "user_message_error",
]);

const args = parseArgs(process.argv.slice(2));
if (!args.url) {
  console.error(
    "usage: node simulator_contract.mjs --url BASE_URL [--workspace W] [--api-key K] [--groups a,b]",
  );
  process.exit(2);
}
const baseUrl = String(args.url).replace(/\/+$/, "");
const workspaceId = args.workspace ?? "demo";
const apiKey = args["api-key"] ?? "sk-contract0123456789";
const groups = args.groups ? String(args.groups).split(",") : GROUPS;
const unknown = groups.filter((g) => !GROUPS.includes(g));
if (unknown.length) {
  console.error(`unknown group(s) ${unknown.join(", ")}; known: ${GROUPS.join(", ")}`);
  process.exit(2);
}

const fetchLog = new FetchLog();
const logger = new SdkLogger();
const api = new DustAPI({ url: baseUrl }, { workspaceId, apiKey }, logger);
const report = new Report(`Dust SDK contract against the simulator at ${baseUrl}`);
const CONTEXT = { username: "contract", timezone: "Europe/Paris", origin: "api", fullName: "Contract Test" };

// --- helpers ---------------------------------------------------------------------------------

async function sim(path, body) {
  const res = await fetch(`${baseUrl}/_sim/${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`/_sim/${path} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

/** An SDK Result, unwrapped: the answer must be 2xx and parse (the SDK parsed it already). */
function unwrap(result, fetches, route, schemaName, schema, what) {
  const record = lastFetch(fetches, route);
  expectStatus(record, is2xx, what);
  if (result.isErr()) {
    // The SDK's message embeds the zod error as JSON; parse the body again for readable issues.
    let issues = [];
    try {
      const parsed = schema.safeParse(JSON.parse(record.text));
      if (!parsed.success) issues = zodIssues(parsed.error);
    } catch (err) {
      issues = [`body is not JSON: ${err}`];
    }
    const sdkSaid = `the SDK answered Err(${result.error.type})`;
    throw new ContractError(
      `${what}: the answer does not match ${schemaName}`,
      issues.length ? [sdkSaid, ...issues] : [`${sdkSaid}: ${String(result.error.message).slice(0, 500)}`],
    );
  }
  return result.value;
}

/** The Dust error body `{error: {type, message}}`, parsed with the SDK's APIErrorSchema. */
function expectApiError(record, status, what) {
  expectStatus(record, (s) => s === status, `${what} (expected ${status})`);
  let body;
  try {
    body = JSON.parse(record.text);
  } catch (err) {
    throw new ContractError(`${what}: error body is not JSON`, [String(err)]);
  }
  return expectSchema("APIErrorSchema", APIErrorSchema, body?.error, `${what}: the error body's \`error\``);
}

function meta(group, sdkName, schema, { expectsApiError = false } = {}) {
  return { group, sdk: sdkName, schema, expectsApiError, fetchLog, logger };
}

function agentMessageFor(conversation, userMessageId) {
  for (const versions of conversation.content) {
    const m = versions.at(-1);
    if (m?.type === "agent_message" && m.parentMessageId === userMessageId) return m;
  }
  return undefined;
}

function newMessage(content, agent) {
  return { content, mentions: [{ configurationId: agent }], context: CONTEXT };
}

async function createConversation(fetches, what, body) {
  const result = await api.createConversation({ title: null, visibility: "unlisted", ...body });
  const created = unwrap(
    result,
    fetches,
    /\/assistant\/conversations$/,
    "CreateConversationResponseSchema",
    CreateConversationResponseSchema,
    what,
  );
  check(created.message, `${what}: no \`message\` in the answer`);
  const agentMessage = agentMessageFor(created.conversation, created.message.sId);
  check(agentMessage, `${what}: the conversation has no agent message answering the user message`);
  return { ...created, agentMessage };
}

/** Read one SSE connection of an agent message's events through the SDK's request(); raw frames. */
async function readEventConnection(conversationId, messageId, lastEventId, signal) {
  let path = `assistant/conversations/${conversationId}/messages/${messageId}/events`;
  if (lastEventId) path += `?lastEventId=${encodeURIComponent(lastEventId)}`;
  const res = await api.request({ method: "GET", path, stream: true, signal });
  check(res.isOk(), `events request failed: ${res.isErr() ? res.error.message : ""}`);
  const { response } = res.value;
  check(response.status === 200, `events: unexpected HTTP status ${response.status}`);
  const frames = [];
  const parser = createParser((e) => {
    if (e.type === "event") frames.push({ event: e.event, data: e.data });
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (value) parser.feed(decoder.decode(value, { stream: true }));
    if (done) break;
  }
  return frames;
}

/** Frames → validated `{eventId, data}` envelopes; `done` marks a properly ended connection. */
function envelopes(frames, what) {
  const events = [];
  let done = false;
  const problems = [];
  for (const frame of frames) {
    if (frame.event && frame.event !== "message") continue; // e.g. dust-handshake
    if (frame.data === "done") {
      done = true;
      continue;
    }
    let json;
    try {
      json = JSON.parse(frame.data);
    } catch {
      problems.push(`frame is not JSON: ${frame.data.slice(0, 200)}`);
      continue;
    }
    if (typeof json?.eventId !== "string") {
      problems.push(`frame without a string eventId: ${frame.data.slice(0, 200)}`);
      continue;
    }
    const parsed = AgentMessageEventDataSchema.safeParse(json.data);
    if (!parsed.success) {
      problems.push(
        `event ${json.eventId} (${json.data?.type}) does not match AgentMessageEventDataSchema:`,
        ...zodIssues(parsed.error).map((l) => `  ${l}`),
      );
      continue;
    }
    events.push(json);
  }
  if (problems.length) throw new ContractError(`${what}: malformed events`, problems);
  return { events, done };
}

/** Stream with the SDK (auto-reconnecting with lastEventId) to the terminal event; validated events. */
async function sdkStream(conversation, userMessageId, what, { abortAfterTerminal = false } = {}) {
  const controller = new AbortController();
  const res = await api.streamAgentAnswerEvents({
    conversation,
    userMessageId,
    signal: controller.signal,
    options: { maxReconnectAttempts: 10, reconnectDelay: 20, autoReconnect: true },
  });
  check(res.isOk(), `${what}: streamAgentAnswerEvents failed: ${res.isErr() ? res.error.message : ""}`);
  const events = [];
  const problems = [];
  for await (const event of res.value.eventStream) {
    const parsed = AgentMessageEventDataSchema.safeParse(event);
    if (!parsed.success) {
      problems.push(
        `event #${events.length + 1} (${event?.type}) does not match AgentMessageEventDataSchema:`,
        ...zodIssues(parsed.error).map((l) => `  ${l}`),
      );
    }
    events.push(event);
    if (abortAfterTerminal && TERMINAL.has(event.type)) break;
  }
  controller.abort();
  if (problems.length) throw new ContractError(`${what}: malformed events`, problems);
  check(events.length > 0, `${what}: no events`);
  check(TERMINAL.has(events.at(-1).type), `${what}: the stream ended without a terminal event`, [
    `last event: ${events.at(-1).type}`,
  ]);
  return events;
}

/**
 * Stream an agent message with the SDK (streamAgentMessageEvents, reconnecting with lastEventId)
 * until an event of `stopTypes` or a terminal one; every event is parsed with
 * AgentMessageEventDataSchema.
 */
async function sdkStreamUntil(conversationId, agentMessageId, stopTypes, what) {
  const controller = new AbortController();
  const res = await api.streamAgentMessageEvents({
    conversationId,
    agentMessageId,
    signal: controller.signal,
    options: { maxReconnectAttempts: 10, reconnectDelay: 20, autoReconnect: true },
  });
  check(res.isOk(), `${what}: streamAgentMessageEvents failed: ${res.isErr() ? res.error.message : ""}`);
  const events = [];
  const problems = [];
  try {
    for await (const event of res.value.eventStream) {
      const parsed = AgentMessageEventDataSchema.safeParse(event);
      if (!parsed.success) {
        problems.push(
          `event #${events.length + 1} (${event?.type}) does not match AgentMessageEventDataSchema:`,
          ...zodIssues(parsed.error).map((l) => `  ${l}`),
        );
      }
      events.push(event);
      if (stopTypes.has(event.type) || TERMINAL.has(event.type)) break;
    }
  } finally {
    controller.abort();
  }
  if (problems.length) throw new ContractError(`${what}: malformed events`, problems);
  check(events.length > 0, `${what}: no events`);
  return events;
}

function tokensText(events) {
  return events
    .filter((e) => e.type === "generation_tokens" && e.classification === "tokens")
    .map((e) => e.text)
    .join("");
}

// --- agents ----------------------------------------------------------------------------------

async function agents() {
  const G = "agents";
  await report.op(
    "list agents, view=all (the bridge's listing)",
    meta(G, "getAgentConfigurations({view: 'all'})", "GetAgentConfigurationsResponseSchema"),
    async (f) => {
      const list = unwrap(
        await api.getAgentConfigurations({ view: "all" }),
        f,
        /agent_configurations$/,
        "GetAgentConfigurationsResponseSchema",
        GetAgentConfigurationsResponseSchema,
        "GET agent_configurations?view=all",
      );
      check(list.length > 0, "view=all listed no agent");
      check(
        list.some((a) => a.sId === ECHO),
        `view=all does not list ${ECHO}`,
      );
    },
  );
  await report.op(
    "list agents, view=global (global agents only; the bridge itself lists with view=all)",
    meta(G, "getAgentConfigurations({view: 'global'})", "GetAgentConfigurationsResponseSchema"),
    async (f) => {
      const list = unwrap(
        await api.getAgentConfigurations({ view: "global" }),
        f,
        /agent_configurations$/,
        "GetAgentConfigurationsResponseSchema",
        GetAgentConfigurationsResponseSchema,
        "GET agent_configurations?view=global",
      );
      const notGlobal = list.filter((a) => a.scope !== "global").map((a) => `${a.sId} (${a.scope})`);
      check(notGlobal.length === 0, "view=global listed agents that are not global", notGlobal);
    },
  );
  await report.op(
    "get one agent by sId",
    meta(
      G,
      "request(GET assistant/agent_configurations/{sId}) (no SDK method)",
      "GetOrPatchAgentConfigurationResponseSchema",
    ),
    async (f) => {
      await api.request({ method: "GET", path: `assistant/agent_configurations/${ECHO}` });
      const record = lastFetch(f, /agent_configurations\/[^/]+$/);
      expectStatus(record, is2xx, `GET agent_configurations/${ECHO}`);
      const body = expectSchema(
        "GetOrPatchAgentConfigurationResponseSchema",
        GetOrPatchAgentConfigurationResponseSchema,
        JSON.parse(record.text),
        `GET agent_configurations/${ECHO}`,
      );
      check(body.agentConfiguration.sId === ECHO, `asked for ${ECHO}, got ${body.agentConfiguration.sId}`);
    },
  );
  await report.op(
    "get an unknown agent: 404 with a Dust error body",
    meta(G, "request(GET assistant/agent_configurations/{sId})", "APIErrorSchema", { expectsApiError: true }),
    async (f) => {
      await api.request({ method: "GET", path: "assistant/agent_configurations/nosuchagent0" });
      const error = expectApiError(lastFetch(f, /agent_configurations\//), 404, "GET an unknown agent");
      check(error.type === "agent_configuration_not_found", `error type ${error.type}`);
    },
  );
}

async function userOnlyViews() {
  const G = "user-only-views";
  for (const view of ["list", "favorites"]) {
    await report.op(
      `view=${view} is refused to an API key with 401 (Dust: only for OAuth users)`,
      meta(G, `getAgentConfigurations({view: '${view}'})`, "APIErrorSchema", { expectsApiError: true }),
      async (f) => {
        const result = await api.getAgentConfigurations({ view });
        const record = lastFetch(f, /agent_configurations$/);
        const error = expectApiError(record, 401, `GET agent_configurations?view=${view}`);
        check(result.isErr(), "the SDK accepted the refusal as a success");
        check(
          error.type === "invalid_request_error",
          `error type ${error.type} (Dust: invalid_request_error)`,
        );
      },
    );
  }
}

// --- conversations ---------------------------------------------------------------------------

async function conversations() {
  const G = "conversations";
  const created = await report.op(
    "create a conversation with a first message (no content fragment)",
    meta(G, "createConversation", "CreateConversationResponseSchema + PostConversationsResponseSchema"),
    async (f) => {
      const made = await createConversation(f, "POST assistant/conversations", {
        message: newMessage("hello from the contract test", ECHO),
      });
      expectSchema(
        "PostConversationsResponseSchema",
        PostConversationsResponseSchema,
        JSON.parse(lastFetch(f, /conversations$/).text),
        "POST assistant/conversations",
      );
      check(made.agentMessage.status === "created", `new agent message status ${made.agentMessage.status}`);
      return made;
    },
  );
  const posted = await report.op(
    "post a follow-up user message",
    meta(G, "postUserMessage", "PostUserMessageResponseSchema + agentMessages[] as AgentMessage"),
    async (f) => {
      const message = unwrap(
        await api.postUserMessage({
          conversationId: created.conversation.sId,
          message: newMessage("and a follow-up", ECHO),
        }),
        f,
        /\/messages$/,
        "PostUserMessageResponseSchema",
        PostUserMessageResponseSchema,
        "POST .../messages",
      );
      // The bridge follows the agent message it finds in `agentMessages` (not in the SDK's schema).
      const raw = JSON.parse(lastFetch(f, /\/messages$/).text);
      const agentMessages = expectSchema(
        "AgentMessage[]",
        AgentMessageSchema.array(),
        raw.agentMessages,
        "POST .../messages `agentMessages`",
      );
      const answer = agentMessages.find((m) => m.parentMessageId === message.sId);
      check(answer, "no agent message answers the posted message in `agentMessages`");
      return { message, answer };
    },
    created,
  );
  await report.op(
    "get the conversation with both turns",
    meta(G, "getConversation", "GetConversationResponseSchema"),
    async (f) => {
      const conversation = unwrap(
        await api.getConversation({ conversationId: created.conversation.sId }),
        f,
        /conversations\/[^/]+$/,
        "GetConversationResponseSchema",
        GetConversationResponseSchema,
        "GET assistant/conversations/{cId}",
      );
      check(agentMessageFor(conversation, created.message.sId), "first turn's agent message missing");
      check(agentMessageFor(conversation, posted.message.sId), "follow-up's agent message missing");
    },
    created,
    posted,
  );
  await report.op(
    "get an unknown conversation: 404 with a Dust error body",
    meta(G, "getConversation", "APIErrorSchema", { expectsApiError: true }),
    async (f) => {
      const result = await api.getConversation({ conversationId: "nosuchconversation" });
      check(result.isErr(), "the SDK accepted a missing conversation");
      const error = expectApiError(lastFetch(f, /conversations\//), 404, "GET an unknown conversation");
      check(error.type === "conversation_not_found", `error type ${error.type}`);
    },
  );
}

// --- streaming -------------------------------------------------------------------------------

async function streaming() {
  const G = "streaming";
  await sim("faults", { token_delay_ms: 1, events_per_connection: 5 });
  const made = await report.op(
    "create a conversation to stream (echo, about 20 events)",
    meta(G, "createConversation", "CreateConversationResponseSchema"),
    (f) =>
      createConversation(f, "POST assistant/conversations", {
        message: newMessage("stream me across several connections of five events each, please", ECHO),
      }),
  );
  const streamed = await report.op(
    "stream the agent message to its terminal event, reconnecting with lastEventId (5 events per connection)",
    meta(G, "streamAgentAnswerEvents (auto-reconnect)", "AgentMessageEventDataSchema per event"),
    async (f) => {
      const events = await sdkStream(made.conversation, made.message.sId, "SDK stream");
      const requests = f.filter((r) => /\/events$/.test(new URL(r.url).pathname));
      const resumed = requests.filter((r) => new URL(r.url).searchParams.get("lastEventId"));
      check(
        requests.length >= 2,
        `expected several event connections, saw ${requests.length}`,
        requests.map((r) => r.url),
      );
      check(
        resumed.length === requests.length - 1,
        "every reconnection must carry lastEventId",
        requests.map((r) => r.url),
      );
      const bad = requests.filter((r) => r.status !== 200);
      check(
        bad.length === 0,
        "an event connection did not answer 200",
        bad.map((r) => `${r.url} => ${r.status}`),
      );
      const last = events.at(-1);
      check(last.type === "agent_message_success", `terminal event ${last.type}`);
      const text = tokensText(events);
      check(text === last.message.content, "the streamed tokens differ from the final message content", [
        `tokens:  ${JSON.stringify(text)}`,
        `content: ${JSON.stringify(last.message.content)}`,
      ]);
      return events;
    },
    made,
  );
  await report.op(
    "replay the finished message on one connection: same events as the reconnecting stream, each {eventId, data}",
    meta(
      G,
      "request(GET .../events, stream) + eventsource-parser",
      "{eventId: string, data: AgentMessageEventDataSchema}",
    ),
    async () => {
      await sim("faults", { events_per_connection: 1000 });
      const { events, done } = envelopes(
        await readEventConnection(made.conversation.sId, made.agentMessage.sId, null),
        "one-connection replay",
      );
      check(done, "the connection did not end with `data: done`");
      const ids = events.map((e) => e.eventId);
      check(new Set(ids).size === ids.length, "duplicate eventIds in one replay");
      const replayed = JSON.stringify(events.map((e) => e.data));
      check(
        replayed === JSON.stringify(streamed),
        "the reconnecting stream lost, duplicated or reordered events",
        [`reconnecting stream: ${streamed.length} events; single connection: ${events.length} events`],
      );
      return events;
    },
    made,
    streamed,
  );
  await report.op(
    "explicit lastEventId: the next connection starts right after the given event",
    meta(G, "request(GET .../events?lastEventId=)", "{eventId, data: AgentMessageEventDataSchema}"),
    async () => {
      await sim("faults", { events_per_connection: 1000 });
      const all = envelopes(
        await readEventConnection(made.conversation.sId, made.agentMessage.sId, null),
        "reference",
      ).events;
      await sim("faults", { events_per_connection: 5 });
      const first = envelopes(
        await readEventConnection(made.conversation.sId, made.agentMessage.sId, null),
        "first connection",
      );
      check(
        first.events.length === 5 && first.done,
        `first connection: ${first.events.length} events, done=${first.done}`,
      );
      const second = envelopes(
        await readEventConnection(made.conversation.sId, made.agentMessage.sId, first.events.at(-1).eventId),
        "resumed connection",
      );
      check(second.events.length > 0, "the resumed connection sent nothing");
      check(
        JSON.stringify(second.events[0]) === JSON.stringify(all[5]),
        "the resumed connection does not start with the event after lastEventId",
        [`got ${second.events[0].eventId}, expected ${all[5]?.eventId}`],
      );
    },
    made,
    streamed,
  );
  await sim("faults", { events_per_connection: 1000 });
  for (const [agent, name, terminal] of [
    [
      RESEARCHER,
      "a tool-using agent (tool_call_started, tool_params, tool_notification, agent_action_success)",
      "agent_message_success",
    ],
    [BROKEN, "a failing agent (agent_error)", "agent_error"],
  ]) {
    await report.op(
      `stream ${name}`,
      meta(G, "createConversation + streamAgentAnswerEvents", "AgentMessageEventDataSchema per event"),
      async (f) => {
        const c = await createConversation(f, "POST assistant/conversations", {
          message: newMessage("look it up", agent),
        });
        const events = await sdkStream(c.conversation, c.message.sId, `stream of ${agent}`);
        check(events.at(-1).type === terminal, `terminal event ${events.at(-1).type}, expected ${terminal}`);
        return events.map((e) => e.type);
      },
    );
  }
}

// --- cancel ----------------------------------------------------------------------------------

async function cancel() {
  const G = "cancel";
  await sim("faults", { token_delay_ms: 1, slow_seconds: 30 });
  const made = await report.op(
    "create a conversation with a slow agent",
    meta(G, "createConversation", "CreateConversationResponseSchema"),
    (f) =>
      createConversation(f, "POST assistant/conversations", { message: newMessage("take your time", SLOW) }),
  );
  await report.op(
    "cancel the generation",
    meta(G, "cancelMessageGeneration", "CancelMessageGenerationResponseSchema"),
    async (f) => {
      const value = unwrap(
        await api.cancelMessageGeneration({
          conversationId: made.conversation.sId,
          messageIds: [made.agentMessage.sId],
        }),
        f,
        /\/cancel$/,
        "CancelMessageGenerationResponseSchema",
        CancelMessageGenerationResponseSchema,
        "POST .../cancel",
      );
      check(value.success === true, "cancel did not answer success");
    },
    made,
  );
  await report.op(
    "the stream of the cancelled message ends with agent_generation_cancelled",
    meta(G, "streamAgentAnswerEvents", "AgentMessageEventDataSchema per event"),
    async () => {
      const events = await sdkStream(made.conversation, made.message.sId, "stream after cancel", {
        abortAfterTerminal: true,
      });
      check(events.at(-1).type === "agent_generation_cancelled", `terminal event ${events.at(-1).type}`);
    },
    made,
  );
  await report.op(
    "the conversation shows the agent message as cancelled",
    meta(G, "getConversation", "GetConversationResponseSchema"),
    async (f) => {
      const conversation = unwrap(
        await api.getConversation({ conversationId: made.conversation.sId }),
        f,
        /conversations\/[^/]+$/,
        "GetConversationResponseSchema",
        GetConversationResponseSchema,
        "GET assistant/conversations/{cId}",
      );
      const message = agentMessageFor(conversation, made.message.sId);
      check(message?.status === "cancelled", `agent message status ${message?.status}`);
    },
    made,
  );
}

// --- files -----------------------------------------------------------------------------------

async function upload(f, what, name, text, useCaseMetadata) {
  const bytes = new TextEncoder().encode(text);
  const result = await api.uploadFile({
    contentType: "text/plain",
    fileName: name,
    fileSize: bytes.length,
    useCase: "conversation",
    useCaseMetadata,
    fileObject: new File([bytes], name, { type: "text/plain" }),
  });
  // uploadFile validates the creation answer but returns the upload answer unparsed: parse both.
  const [create, put] = f.filter(
    (r) => r.method === "POST" && /\/files(\/[^/]+)?$/.test(new URL(r.url).pathname),
  );
  expectStatus(create, is2xx, `${what}: POST files`);
  expectSchema(
    "FileUploadRequestResponseSchema",
    FileUploadRequestResponseSchema,
    JSON.parse(create.text),
    `${what}: POST files`,
  );
  expectStatus(put, is2xx, `${what}: POST uploadUrl`);
  check(result.isOk(), `${what}: uploadFile failed: ${result.isErr() ? result.error.message : ""}`);
  const uploaded = expectSchema(
    "FileUploadedRequestResponseSchema",
    FileUploadedRequestResponseSchema,
    JSON.parse(put.text),
    `${what}: POST uploadUrl`,
  ).file;
  check(uploaded.status === "ready", `${what}: uploaded file status ${uploaded.status}`);
  return uploaded;
}

async function files() {
  const G = "files";
  await sim("faults", { token_delay_ms: 1 });
  const file = await report.op(
    "create and upload a file (no conversation yet)",
    meta(G, "uploadFile", "FileUploadRequestResponseSchema, FileUploadedRequestResponseSchema"),
    (f) => upload(f, "upload", "notes.txt", "some notes for the agent\n"),
  );
  const made = await report.op(
    "create a conversation with content fragments (an uploaded file and inline text)",
    meta(
      G,
      "createConversation({contentFragments})",
      "CreateConversationResponseSchema + PostConversationsResponseSchema",
    ),
    async (f) => {
      const c = await createConversation(f, "POST assistant/conversations", {
        message: newMessage("what do you see?", FILE_READER),
        contentFragments: [
          { title: "notes.txt", fileId: file.sId },
          { title: "inline.md", content: "# inline\n", contentType: "text/markdown" },
        ],
      });
      const body = expectSchema(
        "PostConversationsResponseSchema",
        PostConversationsResponseSchema,
        JSON.parse(lastFetch(f, /conversations$/).text),
        "POST assistant/conversations",
      );
      const fragments = body.conversation.content.flat().filter((m) => m.type === "content_fragment");
      check(
        fragments.length === 2,
        `${fragments.length} content fragment(s) in the conversation, expected 2`,
      );
      return c;
    },
    file,
  );
  const second = await report.op(
    "create and upload a file for an existing conversation (useCaseMetadata.conversationId)",
    meta(
      G,
      "uploadFile({useCaseMetadata})",
      "FileUploadRequestResponseSchema, FileUploadedRequestResponseSchema",
    ),
    (f) => upload(f, "upload", "more.txt", "more notes\n", { conversationId: made.conversation.sId }),
    made,
  );
  await report.op(
    "post a content fragment, then a message that sees it",
    meta(
      G,
      "postContentFragment + postUserMessage",
      "PostContentFragmentResponseSchema, PostUserMessageResponseSchema",
    ),
    async (f) => {
      const fragment = unwrap(
        await api.postContentFragment({
          conversationId: made.conversation.sId,
          contentFragment: { title: "more.txt", fileId: second.sId },
        }),
        f,
        /content_fragments$/,
        "PostContentFragmentResponseSchema",
        PostContentFragmentResponseSchema,
        "POST .../content_fragments",
      );
      check(
        fragment.contentFragmentType === "file" && fragment.fileId === second.sId,
        "fragment does not carry the file",
        [JSON.stringify({ type: fragment.contentFragmentType, fileId: fragment.fileId })],
      );
      unwrap(
        await api.postUserMessage({
          conversationId: made.conversation.sId,
          message: newMessage("and now?", FILE_READER),
        }),
        f,
        /\/messages$/,
        "PostUserMessageResponseSchema",
        PostUserMessageResponseSchema,
        "POST .../messages",
      );
    },
    made,
    second,
  );
  await report.op(
    "delete a created file that was never uploaded",
    meta(G, "deleteFile", "(204, no body)"),
    async (f) => {
      const created = await api.request({
        method: "POST",
        path: "files",
        body: { contentType: "text/plain", fileName: "unused.txt", fileSize: 3, useCase: "conversation" },
      });
      check(created.isOk(), "POST files failed");
      const slot = expectSchema(
        "FileUploadRequestResponseSchema",
        FileUploadRequestResponseSchema,
        JSON.parse(lastFetch(f, /\/files$/).text),
        "POST files",
      ).file;
      await api.deleteFile({ fileID: slot.sId });
      expectStatus(lastFetch(f, /\/files\/[^/]+$/), is2xx, "DELETE files/{sId}");
    },
  );
}

// --- pauses ----------------------------------------------------------------------------------

const PAUSES = new Set(["tool_approve_execution", "tool_ask_user_question", "tool_personal_auth_required"]);

/** A new conversation with `agent`, streamed until its agent message pauses: the pause event. */
async function pausedAt(f, agent, content, what) {
  const made = await createConversation(f, "POST assistant/conversations", {
    message: newMessage(content, agent),
  });
  const events = await sdkStreamUntil(made.conversation.sId, made.agentMessage.sId, PAUSES, what);
  const pause = events.at(-1);
  check(PAUSES.has(pause.type), `${what}: the message did not pause`, [`last event: ${pause.type}`]);
  return { made, pause };
}

async function blockedActions(f, conversationId, what) {
  return unwrap(
    await api.getBlockedActions({ conversationId }),
    f,
    /\/actions\/blocked$/,
    "BlockedActionsResponseSchema",
    BlockedActionsResponseSchema,
    what,
  ).blockedActions;
}

/** The rest of a resumed message, to its terminal event, and its final content. */
async function finishedContent(conversationId, messageId, what) {
  const events = await sdkStreamUntil(conversationId, messageId, new Set(), what);
  const last = events.at(-1);
  check(last.type === "agent_message_success", `${what}: terminal event ${last.type}`);
  return last.message.content;
}

async function pauses() {
  const G = "pauses";
  await sim("faults", { token_delay_ms: 1 });
  const approval = await report.op(
    "an agent that needs approval pauses with a tool_approve_execution event",
    meta(G, "createConversation + streamAgentMessageEvents", "AgentMessageEventDataSchema per event"),
    async (f) => {
      const paused = await pausedAt(f, APPROVER, "send the minutes", "stream to the approval");
      const { pause, made } = paused;
      check(pause.type === "tool_approve_execution", `pause event ${pause.type}`);
      check(
        pause.conversationId === made.conversation.sId && pause.messageId === made.agentMessage.sId,
        "the approval does not name the agent's own conversation and message",
      );
      return paused;
    },
  );
  await report.op(
    "the blocked actions list the action waiting for validation",
    meta(G, "getBlockedActions", "BlockedActionsResponseSchema"),
    async (f) => {
      const listed = await blockedActions(f, approval.made.conversation.sId, "GET .../actions/blocked");
      check(
        listed.length === 1 &&
          listed[0].actionId === approval.pause.actionId &&
          listed[0].status === "blocked_validation_required",
        "the waiting action is not listed as blocked_validation_required",
        [JSON.stringify(listed).slice(0, 600)],
      );
    },
    approval,
  );
  const approved = await report.op(
    "approve the action",
    meta(G, "validateAction({approved: 'approved'})", "ValidateActionResponseSchema"),
    async (f) => {
      const { pause } = approval;
      const value = unwrap(
        await api.validateAction({
          conversationId: pause.conversationId,
          messageId: pause.messageId,
          actionId: pause.actionId,
          approved: "approved",
        }),
        f,
        /\/validate-action$/,
        "ValidateActionResponseSchema",
        ValidateActionResponseSchema,
        "POST .../validate-action",
      );
      check(value.success === true, "validate-action did not answer success");
      return true;
    },
    approval,
  );
  await report.op(
    "the approved message goes on to its answer",
    meta(G, "streamAgentMessageEvents", "AgentMessageEventDataSchema per event"),
    async () => {
      const { pause } = approval;
      const content = await finishedContent(pause.conversationId, pause.messageId, "resumed");
      const expected = "Email sent to team@example.com: send the minutes";
      check(content === expected, `content ${JSON.stringify(content)}`);
    },
    approval,
    approved,
  );
  await report.op(
    "validating it again: 400 action_not_blocked with a Dust error body",
    meta(G, "validateAction", "APIErrorSchema", { expectsApiError: true }),
    async (f) => {
      const { pause } = approval;
      const result = await api.validateAction({
        conversationId: pause.conversationId,
        messageId: pause.messageId,
        actionId: pause.actionId,
        approved: "rejected",
      });
      check(result.isErr(), "the SDK accepted a second validation");
      const error = expectApiError(lastFetch(f, /\/validate-action$/), 400, "POST .../validate-action again");
      check(error.type === "action_not_blocked", `error type ${error.type}`);
    },
    approval,
    approved,
  );
  await pausesQuestionAndAuth(G);
  await pausesSubAgent(G);
}

async function pausesQuestionAndAuth(G) {
  const question = await report.op(
    "an agent that asks a question pauses with tool_ask_user_question, listed with its question",
    meta(
      G,
      "streamAgentMessageEvents + getBlockedActions",
      "AgentMessageEventDataSchema, BlockedActionsResponseSchema",
    ),
    async (f) => {
      const paused = await pausedAt(f, ASKER, "the report", "stream to the question");
      check(paused.pause.type === "tool_ask_user_question", `pause event ${paused.pause.type}`);
      const [listed] = await blockedActions(f, paused.made.conversation.sId, "GET .../actions/blocked");
      check(
        listed?.status === "blocked_user_answer_required" && listed.question?.options.length === 3,
        "the question is not listed with its options",
        [JSON.stringify(listed).slice(0, 600)],
      );
      return paused;
    },
  );
  await report.op(
    "answer the question with an option and free text; the agent goes on",
    meta(G, "answerUserQuestion + streamAgentMessageEvents", "AnswerUserQuestionResponseSchema"),
    async (f) => {
      const { pause } = question;
      const value = unwrap(
        await api.answerUserQuestion({
          conversationId: pause.conversationId,
          messageId: pause.messageId,
          actionId: pause.actionId,
          answer: { selectedOptions: [1], customResponse: "by Friday" },
        }),
        f,
        /\/answer-question$/,
        "AnswerUserQuestionResponseSchema",
        AnswerUserQuestionResponseSchema,
        "POST .../answer-question",
      );
      check(value.success === true, "answer-question did not answer success");
      const content = await finishedContent(pause.conversationId, pause.messageId, "answered");
      check(content === "You chose: Full report (note: by Friday)", `content ${JSON.stringify(content)}`);
    },
    question,
  );
  await report.op(
    "an agent that needs the user's account pauses with tool_personal_auth_required, then goes on once connected",
    meta(
      G,
      "streamAgentMessageEvents + getBlockedActions",
      "AgentMessageEventDataSchema, BlockedActionsResponseSchema",
    ),
    async (f) => {
      const { pause, made } = await pausedAt(f, NEEDS_AUTH, "the roadmap", "stream to the authorisation");
      check(pause.type === "tool_personal_auth_required", `pause event ${pause.type}`);
      const [listed] = await blockedActions(f, made.conversation.sId, "GET .../actions/blocked");
      check(listed?.status === "blocked_authentication_required", `listed status ${listed?.status}`);
      await sim("connect", {});
      const content = await finishedContent(pause.conversationId, pause.messageId, "connected");
      const expected = "Found 2 documents in Google Drive for: the roadmap";
      check(content === expected, `content ${JSON.stringify(content)}`);
    },
  );
}

async function pausesSubAgent(G) {
  const relayed = await report.op(
    "a sub-agent's approval appears on the caller's stream, naming the child conversation and message",
    meta(
      G,
      "streamAgentMessageEvents + getBlockedActions (both conversations)",
      "AgentMessageEventDataSchema, BlockedActionsResponseSchema",
    ),
    async (f) => {
      const paused = await pausedAt(f, DELEGATOR, "the minutes", "stream of the caller");
      const { pause, made } = paused;
      check(pause.type === "tool_approve_execution", `pause event ${pause.type}`);
      check(
        pause.conversationId !== made.conversation.sId,
        "the relayed approval names the caller's conversation",
      );
      const [parent] = await blockedActions(f, made.conversation.sId, "GET the caller's actions/blocked");
      check(
        parent?.status === "blocked_child_action_input_required",
        `caller's listed status ${parent?.status}`,
      );
      const [child] = await blockedActions(f, pause.conversationId, "GET the child's actions/blocked");
      check(
        child?.actionId === pause.actionId,
        "the child conversation does not list the sub-agent's action",
      );
      return paused;
    },
  );
  await report.op(
    "approve on the child's ids; the sub-agent, then the caller, finish",
    meta(G, "validateAction + streamAgentMessageEvents", "ValidateActionResponseSchema"),
    async (f) => {
      const { pause, made } = relayed;
      unwrap(
        await api.validateAction({
          conversationId: pause.conversationId,
          messageId: pause.messageId,
          actionId: pause.actionId,
          approved: "approved",
        }),
        f,
        /\/validate-action$/,
        "ValidateActionResponseSchema",
        ValidateActionResponseSchema,
        "POST .../validate-action (child)",
      );
      const content = await finishedContent(made.conversation.sId, made.agentMessage.sId, "caller");
      check(
        content === "The sub-agent finished: Email sent to team@example.com: the minutes",
        `content ${JSON.stringify(content)}`,
      );
    },
    relayed,
  );
}

// --- generated files -------------------------------------------------------------------------

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const NOT_FOR_API = "The file use case is not supported by the API.";

/** JSON with every object's keys sorted: equal values compare equal whatever order zod left them in. */
function canonical(value) {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  );
}

/** The conversation (GetConversationResponseSchema) and the agent message answering `userMessageId`. */
async function readConversation(f, conversationId, userMessageId, what) {
  const conversation = unwrap(
    await api.getConversation({ conversationId }),
    f,
    /conversations\/[^/]+$/,
    "GetConversationResponseSchema",
    GetConversationResponseSchema,
    what,
  );
  const message = agentMessageFor(conversation, userMessageId);
  check(message, `${what}: no agent message answers the user message`);
  return { conversation, message };
}

async function generatedFiles() {
  const G = "generated-files";
  await sim("faults", { token_delay_ms: 1 });
  const made = await report.op(
    "an agent's tool generates two files: the action's generatedFiles and tool-output.file blocks",
    meta(G, "createConversation + streamAgentAnswerEvents", "AgentMessageEventDataSchema per event"),
    async (f) => {
      const c = await createConversation(f, "POST assistant/conversations", {
        message: newMessage("Q3 sales", FILE_MAKER),
      });
      const events = await sdkStream(c.conversation, c.message.sId, "stream of the file-maker");
      const done = events.find((e) => e.type === "agent_action_success");
      check(done, "no agent_action_success event");
      const files = done.action.generatedFiles;
      check(
        files.map((x) => `${x.title} ${x.contentType}`).join(", ") === "data.csv text/csv, chart.png image/png",
        "generatedFiles are not data.csv and chart.png",
        [JSON.stringify(files)],
      );
      check(
        done.action.output.length === 2 && done.action.output.every((block) => isToolGeneratedFile(block)),
        "the output blocks are not the SDK's tool-generated files (isToolGeneratedFile)",
        [JSON.stringify(done.action.output).slice(0, 800)],
      );
      const answer = events.at(-1).message.content;
      check(answer === "I made a CSV and a chart for: Q3 sales", `content ${JSON.stringify(answer)}`);
      const byTitle = Object.fromEntries(files.map((x) => [x.title, x]));
      return { ...c, action: done.action, csv: byTitle["data.csv"], png: byTitle["chart.png"] };
    },
  );
  await report.op(
    "the conversation shows the action with its generated files",
    meta(G, "getConversation", "GetConversationResponseSchema"),
    async (f) => {
      const { message } = await readConversation(f, made.conversation.sId, made.message.sId, "GET conversation");
      check(
        canonical(message.actions) === canonical([made.action]),
        "the conversation's action differs from the streamed one",
        [JSON.stringify(message.actions).slice(0, 800)],
      );
    },
    made,
  );
  await generatedFileDownloads(G, made);
}

async function generatedFileDownloads(G, made) {
  await report.op(
    "getFileContent (action=view) of the chart: the PNG bytes",
    meta(G, "getFileContent", "(bytes, image/png)"),
    async (f) => {
      const result = await api.getFileContent({ fileId: made.png.fileId });
      check(result.isOk(), `getFileContent failed: ${result.isErr() ? result.error.message : ""}`);
      const record = lastFetch(f, /\/files\/[^/]+$/);
      expectStatus(record, (s) => s === 200, "GET files/{chart}?action=view");
      const bytes = new Uint8Array(await result.value.arrayBuffer());
      check(
        PNG_SIGNATURE.every((b, i) => bytes[i] === b),
        "the body is not a PNG",
        [`first bytes: ${Array.from(bytes.slice(0, 8)).join(",")}`],
      );
    },
    made,
  );
  await report.op(
    "downloadFile (action=download) of the chart: redirected to a signed URL the SDK only trusts on GCS",
    meta(G, "downloadFile", "(302 to the signed URL, then the SDK's storage.googleapis.com check)"),
    async (f) => {
      const result = await api.downloadFile({ fileID: made.png.fileId });
      const record = lastFetch(f, /\/files\/[^/]+$/);
      check(record?.redirected && record.status === 200, "the download was not redirected to a 200", [
        JSON.stringify({ status: record?.status, finalUrl: record?.finalUrl }),
      ]);
      check(
        new URL(record.finalUrl).pathname.endsWith(`/files/w/${workspaceId}/${made.png.fileId}/original`),
        `redirected to ${record.finalUrl}`,
      );
      // The SDK fetched the signed URL and then refuses any host but storage.googleapis.com.
      check(
        result?.isErr() && result.error.message.startsWith("Invalid redirect URL format"),
        "the SDK did not refuse the simulator's storage host",
        [JSON.stringify(result?.isErr() ? result.error : "Ok")],
      );
    },
    made,
  );
  await report.op(
    "the CSV a tool made is refused to an API key: 400 invalid_request_error",
    meta(G, "getFileContent + downloadFile", "APIErrorSchema", { expectsApiError: true }),
    async (f) => {
      const viewed = await api.getFileContent({ fileId: made.csv.fileId });
      // getFileContent does not look at the status: the error body comes back as the content.
      check(viewed.isOk(), "getFileContent failed");
      const error = expectApiError(lastFetch(f, /\/files\/[^/]+$/), 400, "GET files/{csv}?action=view");
      check(error.type === "invalid_request_error" && error.message === NOT_FOR_API, JSON.stringify(error));
      const downloaded = await api.downloadFile({ fileID: made.csv.fileId });
      expectApiError(lastFetch(f, /\/files\/[^/]+$/), 400, "GET files/{csv}?action=download");
      // downloadFile returns nothing at all for a 4xx (files.download then throws "no response").
      check(downloaded === undefined, `downloadFile answered ${JSON.stringify(downloaded)}`);
    },
    made,
  );
  await report.op(
    "the CSV is read by its conversation path (conversation/data.csv)",
    meta(G, "request(GET assistant/conversations/{cId}/files/conversation/data.csv)", "(bytes, text/csv)"),
    async (f) => {
      const res = await api.request({
        method: "GET",
        path: `assistant/conversations/${made.conversation.sId}/files/conversation/${made.csv.title}`,
      });
      check(res.isOk(), "request failed");
      const record = lastFetch(f, /\/files\/conversation\//);
      expectStatus(record, (s) => s === 200, "GET .../files/conversation/data.csv");
      check(record.text.startsWith("month,topic,value\n"), "not the CSV", [record.text.slice(0, 200)]);
    },
    made,
  );
}

// --- citations -------------------------------------------------------------------------------

const CITE = /:cite\[([a-zA-Z0-9, ]+)\]/g; // connectors' Slack annotateCitations

/** The refs of an agent message's search results, read with the SDK's resource guards. */
function citationRefs(actions) {
  const refs = new Map();
  for (const action of actions) {
    for (const block of action.output ?? []) {
      if (isWebsearchResultResourceType(block)) refs.set(block.resource.reference, block.resource.uri);
      if (isSearchResultResourceType(block)) refs.set(block.resource.ref, block.resource.uri);
    }
  }
  return refs;
}

function checkCitations(actions, content, what) {
  const blocks = actions.flatMap((a) => a.output ?? []);
  for (const block of blocks) {
    const schema =
      block.resource?.mimeType === "application/vnd.dust.tool-output.websearch-result"
        ? ["WebsearchResultResourceSchema", WebsearchResultResourceSchema]
        : ["SearchResultResourceSchema", SearchResultResourceSchema];
    expectSchema(...schema, block.resource, `${what}: a search result`);
  }
  const refs = citationRefs(actions);
  check(refs.size === 4, `${what}: ${refs.size} cited sources, expected 4`);
  const markers = [...content.matchAll(CITE)].map((m) => m[1].split(",").map((k) => k.trim()));
  check(markers.length === 3, `${what}: ${markers.length} :cite markers`, [content]);
  const [single, pair, unknown] = markers;
  check(single.length === 1 && refs.has(single[0]), `${what}: the first marker is not one known ref`);
  check(pair.length === 2 && pair.every((k) => refs.has(k)), `${what}: the second marker is not two known refs`);
  check(unknown.length === 1 && !refs.has(unknown[0]), `${what}: the third marker's ref is known`);
}

async function citations() {
  const G = "citations";
  await sim("faults", { token_delay_ms: 1 });
  const made = await report.op(
    "an agent searches the web and the documents, then cites them with :cite markers",
    meta(
      G,
      "createConversation + streamAgentAnswerEvents",
      "AgentMessageEventDataSchema, WebsearchResultResourceSchema, SearchResultResourceSchema",
    ),
    async (f) => {
      const c = await createConversation(f, "POST assistant/conversations", {
        message: newMessage("Q3 sales", CITER),
      });
      const events = await sdkStream(c.conversation, c.message.sId, "stream of the citing agent");
      const last = events.at(-1);
      check(last.type === "agent_message_success", `terminal event ${last.type}`);
      checkCitations(last.message.actions, last.message.content, "the finished message");
      return c;
    },
  );
  await report.op(
    "the conversation's agent message carries the same sources and markers",
    meta(G, "getConversation", "GetConversationResponseSchema"),
    async (f) => {
      const { message } = await readConversation(f, made.conversation.sId, made.message.sId, "GET conversation");
      checkCitations(message.actions, message.content, "the conversation");
    },
    made,
  );
}

// --- run -------------------------------------------------------------------------------------

const RUNNERS = {
  agents,
  "user-only-views": userOnlyViews,
  conversations,
  streaming,
  cancel,
  files,
  pauses,
  "generated-files": generatedFiles,
  citations,
};

try {
  for (const group of groups) {
    await sim("reset", {});
    try {
      await RUNNERS[group]();
    } catch (err) {
      report.results.push({
        name: `${group}: harness error`,
        group,
        sdk: "-",
        schema: "-",
        ok: false,
        problems: [String(err?.stack ?? err)],
        http: [],
      });
    }
  }
} finally {
  await sim("reset", {}).catch(() => {});
}

console.log(report.text());
if (args.json) {
  writeFileSync(
    String(args.json),
    JSON.stringify({ sdkVersion: SDK_VERSION, results: report.results }, null, 2),
  );
}
process.exit(report.failed.length ? 1 : 0);
