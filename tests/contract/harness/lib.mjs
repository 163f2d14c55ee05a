// Shared by the contract harnesses: loads Dust's official SDK (@dust-tt/client) from tools/node,
// formats zod issues readably, and records what each operation did so a failure names the
// operation, the schema and the issue.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// tools/node of this repository (where `make node-tools` installs the pinned SDK); overridable.
export const NODE_TOOLS = process.env.CONTRACT_NODE_TOOLS ?? path.resolve(here, "../../../tools/node");

const toolsRequire = createRequire(path.join(NODE_TOOLS, "package.json"));
const sdkEntry = toolsRequire.resolve("@dust-tt/client");
// The SDK ships CommonJS without an "exports" map, so it is required, not imported.
export const sdk = toolsRequire("@dust-tt/client");
// The very SSE parser the SDK itself uses (its own nested dependency).
const sdkRequire = createRequire(sdkEntry);
export const { createParser } = sdkRequire("eventsource-parser");

function sdkVersion() {
  let dir = path.dirname(sdkEntry);
  while (dir !== path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"));
      if (pkg.name === "@dust-tt/client") {
        return pkg.version;
      }
    } catch {
      // not the package root yet
    }
    dir = path.dirname(dir);
  }
  return "unknown";
}

export const SDK_VERSION = sdkVersion();

// --- zod issues ------------------------------------------------------------------------------

const DISCRIMINANTS = new Set(["type", "contentFragmentType"]);

function flatten(issues) {
  const out = [];
  for (const issue of issues) {
    if (issue.code === "invalid_union" && issue.unionErrors?.length) {
      // A union fails when every branch does; the relevant branches are those whose
      // discriminant (`type`, `contentFragmentType`) matched, or failing that the closest ones.
      // (zod 3 gives branch issues full paths from the root.)
      let branches = issue.unionErrors.map((err) => flatten(err.issues));
      const matching = branches.filter(
        (b) => !b.some((i) => i.code === "invalid_literal" && DISCRIMINANTS.has(String(i.path.at(-1)))),
      );
      if (matching.length > 0) {
        branches = matching;
      }
      const fewest = Math.min(...branches.map((b) => b.length));
      const closest = branches.filter((b) => b.length === fewest);
      if (closest.length === 1) {
        out.push(...closest[0]);
      } else {
        out.push({
          code: "invalid_union",
          path: issue.path,
          message: `no branch of the union matched (${closest.length} equally close)`,
          branches: closest.slice(0, 4),
        });
      }
      continue;
    }
    out.push(issue);
  }
  return out;
}

function describeIssue(issue, indent = "") {
  const where = issue.path.length ? issue.path.join(".") : "(root)";
  const detail = [];
  if (issue.expected !== undefined) detail.push(`expected ${JSON.stringify(issue.expected)}`);
  if (issue.received !== undefined) detail.push(`received ${JSON.stringify(issue.received)}`);
  if (issue.keys) detail.push(`keys ${JSON.stringify(issue.keys)}`);
  const code = detail.length ? `${issue.code}; ${detail.join(", ")}` : issue.code;
  let line = `${indent}${where}: ${issue.message} [${code}]`;
  if (issue.branches) {
    issue.branches.forEach((branch, n) => {
      line += `\n${indent}  branch ${n + 1}:`;
      for (const sub of branch.slice(0, 6)) line += `\n${describeIssue(sub, `${indent}    `)}`;
    });
  }
  return line;
}

/** The zod issues of a failed safeParse, one readable line each (unions narrowed to the relevant branch). */
export function zodIssues(error) {
  return flatten(error.issues).map((issue) => describeIssue(issue));
}

/** Parse `value` with `schema`; on failure throw a ContractError listing the zod issues. */
export function expectSchema(schemaName, schema, value, what) {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new ContractError(`${what} does not match ${schemaName}`, zodIssues(parsed.error));
  }
  return parsed.data;
}

/**
 * What a schema parse silently changes in a request body: keys Dust's schema does not know (Dust
 * strips them, so they are ignored) and values it replaces (`.catch`, transforms). Defaults added
 * by the schema are not reported.
 */
export function silentChanges(input, output, at = []) {
  const where = () => (at.length ? at.join(".") : "(root)");
  if (Array.isArray(input) && Array.isArray(output)) {
    return input.flatMap((item, i) => silentChanges(item, output[i], [...at, i]));
  }
  if (isObject(input) && isObject(output)) {
    const out = [];
    for (const [key, value] of Object.entries(input)) {
      if (!(key in output)) {
        if (value !== undefined)
          out.push(`${[...at, key].join(".")}: not in Dust's schema, so Dust ignores it`);
        continue;
      }
      out.push(...silentChanges(value, output[key], [...at, key]));
    }
    return out;
  }
  if (input !== output && !(Number.isNaN(input) && Number.isNaN(output))) {
    return [`${where()}: Dust's schema turns ${JSON.stringify(input)} into ${JSON.stringify(output)}`];
  }
  return [];
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// --- operations and the report ---------------------------------------------------------------

export class ContractError extends Error {
  constructor(message, details = []) {
    super(message);
    this.details = details;
  }
}

export function check(condition, message, details = []) {
  if (!condition) {
    throw new ContractError(message, details);
  }
}

/**
 * Every HTTP exchange made through the global fetch (the SDK's and ours), attributed to the running
 * operation: method, URL, status, redirects, and the body text of non-stream answers.
 */
export class FetchLog {
  constructor() {
    this.current = null;
    const original = globalThis.fetch;
    globalThis.fetch = async (input, init = {}) => {
      const url = typeof input === "string" ? input : input.url;
      const record = { method: init.method ?? "GET", url, status: null };
      this.current?.push(record);
      try {
        const response = await original(input, init);
        record.status = response.status;
        record.finalUrl = response.url;
        record.redirected = response.redirected;
        const type = response.headers.get("content-type") ?? "";
        if (!type.includes("text/event-stream")) {
          record.text = await response.clone().text();
        }
        return response;
      } catch (err) {
        record.error = String(err);
        throw err;
      }
    };
  }

  start() {
    this.current = [];
    return this.current;
  }
}

/** A logger for the SDK that keeps what it logs, so an SDK-side parse failure is not missed. */
export class SdkLogger {
  constructor() {
    this.errors = [];
  }
  error(details, message) {
    this.errors.push({ message: message ?? String(details), details });
  }
  warn() {}
  info() {}
  debug() {}
}

export class Report {
  constructor(title) {
    this.title = title;
    this.results = [];
  }

  /**
   * Run one operation. `meta` names what it proves: `sdk` (the SDK method or route) and `schema`
   * (the zod schema(s) the response is parsed with). `fn` gets the fetch records of this operation.
   * `deps` are the results of earlier operations it builds on: when one of them failed
   * (undefined), this one is reported as skipped rather than run.
   */
  async op(name, meta, fn, ...deps) {
    const result = {
      name,
      group: meta.group,
      sdk: meta.sdk,
      schema: meta.schema,
      ok: false,
      problems: [],
      http: [],
    };
    this.results.push(result);
    if (deps.some((dep) => dep === undefined || dep === null)) {
      result.skipped = true;
      result.problems.push("skipped: an operation it depends on failed");
      return undefined;
    }
    const fetches = meta.fetchLog.start();
    const loggedBefore = meta.logger.errors.length;
    try {
      const value = await fn(fetches);
      // An operation that expects a Dust error lets the SDK log that (well-formed) error.
      const logged = meta.logger.errors
        .slice(loggedBefore)
        .filter((e) => !(meta.expectsApiError && e.details?.dustError && !e.details?.parseError));
      if (logged.length) {
        throw new ContractError(
          "the SDK logged errors",
          logged.map((e) => `${e.message}: ${describeLogged(e.details)}`),
        );
      }
      result.ok = true;
      return value;
    } catch (err) {
      result.problems.push(err instanceof ContractError ? err.message : `threw: ${err?.stack ?? err}`);
      if (err instanceof ContractError) {
        result.problems.push(...err.details);
      }
      return undefined;
    } finally {
      result.http = fetches.map((f) => {
        const pathOf = (u) => (u ? new URL(u).pathname + new URL(u).search : u);
        const hop = f.redirected ? ` -> ${pathOf(f.finalUrl)}` : "";
        return `${f.method} ${pathOf(f.url)}${hop} => ${f.status ?? f.error}`;
      });
      meta.fetchLog.current = null;
    }
  }

  get failed() {
    return this.results.filter((r) => !r.ok);
  }

  text() {
    const lines = [`${this.title} (@dust-tt/client ${SDK_VERSION})`];
    for (const r of this.results) {
      const mark = r.ok ? "PASS" : r.skipped ? "SKIP" : "FAIL";
      lines.push(`${mark}  [${r.group}] ${r.name}`);
      lines.push(`      sdk: ${r.sdk}; schema: ${r.schema}`);
      if (!r.ok) {
        for (const h of r.http) lines.push(`      http: ${h}`);
        for (const p of r.problems) lines.push(`      ${p.replaceAll("\n", "\n      ")}`);
      }
    }
    const passed = this.results.filter((r) => r.ok).length;
    lines.push(`${passed} passed, ${this.results.length - passed} failed`);
    return lines.join("\n");
  }
}

function describeLogged(details) {
  if (!details || typeof details !== "object") return String(details);
  const parts = [];
  for (const key of ["dustError", "parseError", "error", "status", "url"]) {
    if (details[key] !== undefined) {
      const v = details[key];
      parts.push(`${key}=${typeof v === "string" ? v : (JSON.stringify(v) ?? String(v))}`);
    }
  }
  return parts.join(" ").slice(0, 2000);
}

/** The last HTTP exchange of an operation to a URL path matching `pattern`. */
export function lastFetch(fetches, pattern) {
  const matching = fetches.filter((f) => pattern.test(new URL(f.url).pathname));
  return matching.at(-1);
}

export function expectStatus(record, accept, what) {
  check(record !== undefined, `${what}: no HTTP request was made`);
  check(
    accept(record.status),
    `${what}: unexpected HTTP status ${record.status ?? record.error}`,
    record.text ? [`body: ${record.text.slice(0, 600)}`] : [],
  );
}

export const is2xx = (status) => status >= 200 && status < 300;

export function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (!key.startsWith("--")) throw new Error(`unexpected argument ${key}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) {
      args[key.slice(2)] = true;
    } else {
      args[key.slice(2)] = next;
      i++;
    }
  }
  return args;
}
