// Validates request bodies recorded by the simulator (`GET /_sim/bodies`) with the request schemas
// of Dust's official SDK (@dust-tt/client): what the bridge sends must be what Dust accepts.
//
//   node validate_bodies.mjs --bodies bodies.json [--require conversation,message,...]
//
// Each JSON body must parse with the SDK schema of its route, and parsing must not silently drop
// or rewrite anything (Dust strips unknown keys and `.catch`es some values: a field Dust ignores is
// a bug in the sender). Multipart uploads are checked for their content type only. A body on a
// route with no known schema is a failure too. `--require` names kinds that must have been seen.
// Exit status: 0 when every body passed, 1 otherwise, 2 on bad usage.

import { readFileSync } from "node:fs";

import { SDK_VERSION, parseArgs, sdk, silentChanges, zodIssues } from "./lib.mjs";

const W = "/api/v1/w/[^/]+";
const ROUTES = [
  {
    kind: "conversation",
    route: new RegExp(`^${W}/assistant/conversations$`),
    schemaName: "PublicPostConversationsRequestBodySchema",
    schema: sdk.PublicPostConversationsRequestBodySchema,
  },
  {
    kind: "message",
    route: new RegExp(`^${W}/assistant/conversations/[^/]+/messages$`),
    schemaName: "PublicPostMessagesRequestBodySchema",
    schema: sdk.PublicPostMessagesRequestBodySchema,
  },
  {
    kind: "content_fragment",
    route: new RegExp(`^${W}/assistant/conversations/[^/]+/content_fragments$`),
    schemaName: "PublicPostContentFragmentRequestBodySchema",
    schema: sdk.PublicPostContentFragmentRequestBodySchema,
  },
  {
    kind: "cancel",
    route: new RegExp(`^${W}/assistant/conversations/[^/]+/cancel$`),
    schemaName: "CancelMessageGenerationRequestSchema",
    schema: sdk.CancelMessageGenerationRequestSchema,
  },
  {
    kind: "validate_action",
    route: new RegExp(`^${W}/assistant/conversations/[^/]+/messages/[^/]+/validate-action$`),
    schemaName: "ValidateActionRequestBodySchema",
    schema: sdk.ValidateActionRequestBodySchema,
  },
  {
    kind: "answer_question",
    route: new RegExp(`^${W}/assistant/conversations/[^/]+/messages/[^/]+/answer-question$`),
    schemaName: "AnswerUserQuestionRequestBodySchema",
    schema: sdk.AnswerUserQuestionRequestBodySchema,
  },
  {
    kind: "file",
    route: new RegExp(`^${W}/files$`),
    schemaName: "FileUploadUrlRequestSchema",
    schema: sdk.FileUploadUrlRequestSchema,
  },
  {
    kind: "file_upload",
    route: new RegExp(`^${W}/files/[^/]+$`),
    multipart: true,
    schemaName: "multipart/form-data (uploadUrl)",
  },
];

const args = parseArgs(process.argv.slice(2));
if (!args.bodies) {
  console.error("usage: node validate_bodies.mjs --bodies FILE [--require kind,kind]");
  process.exit(2);
}
const recorded = JSON.parse(readFileSync(String(args.bodies), "utf8"));
const bodies = Array.isArray(recorded) ? recorded : recorded.bodies;
const required = args.require ? String(args.require).split(",") : [];
const unknownKinds = required.filter((k) => !ROUTES.some((r) => r.kind === k));
if (unknownKinds.length) {
  console.error(`unknown kind(s) ${unknownKinds.join(", ")}; known: ${ROUTES.map((r) => r.kind).join(", ")}`);
  process.exit(2);
}

const lines = [`Request bodies checked with @dust-tt/client ${SDK_VERSION} request schemas`];
const seen = new Map();
let failed = 0;

for (const [index, body] of bodies.entries()) {
  const label = `#${index + 1} ${body.method} ${body.path}`;
  const problems = [];
  const route = body.method === "POST" ? ROUTES.find((r) => r.route.test(body.path)) : undefined;
  if (!route) {
    problems.push("no Dust SDK request schema is known for this method and route");
  } else if (route.multipart) {
    if (!/^multipart\/form-data;\s*boundary=/i.test(body.content_type ?? "")) {
      problems.push(
        `expected a multipart/form-data body with a boundary, got ${JSON.stringify(body.content_type)}`,
      );
    }
  } else if (body.truncated || body.invalid_json || !("json" in body)) {
    problems.push(
      body.invalid_json
        ? `the body is not JSON: ${JSON.stringify(body.text ?? "").slice(0, 200)}`
        : "the body was too large to record",
    );
  } else {
    if (!/^application\/json\b/i.test(body.content_type ?? "")) {
      problems.push(`Content-Type ${JSON.stringify(body.content_type)} (Dust parses application/json)`);
    }
    const parsed = route.schema.safeParse(body.json);
    if (!parsed.success) {
      problems.push(`does not match ${route.schemaName}:`, ...zodIssues(parsed.error).map((l) => `  ${l}`));
    } else {
      problems.push(...silentChanges(body.json, parsed.data));
    }
  }
  if (route) seen.set(route.kind, (seen.get(route.kind) ?? 0) + 1);
  if (problems.length) {
    failed++;
    lines.push(`FAIL  ${label}  (${route?.schemaName ?? "no schema"})`);
    for (const p of problems) lines.push(`      ${p}`);
    if (body.json !== undefined) lines.push(`      body: ${JSON.stringify(body.json).slice(0, 800)}`);
  } else {
    lines.push(`PASS  ${label}  (${route.schemaName})`);
  }
}

const missing = required.filter((k) => !seen.has(k));
if (missing.length) {
  failed++;
  lines.push(`FAIL  expected bodies of kind(s) never recorded: ${missing.join(", ")}`);
}
lines.push(`kinds seen: ${[...seen].map(([k, n]) => `${k}×${n}`).join(", ") || "none"}`);
const total = bodies.length + (required.length ? 1 : 0);
lines.push(`${total - failed} passed, ${failed} failed`);
console.log(lines.join("\n"));
process.exit(failed ? 1 : 0);
