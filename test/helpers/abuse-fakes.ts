// Stand-ins for the workflow side of the API, for fuzzing the HTTP layer: a Sessions object
// that answers like the real one (incl. Temporal's not-found error for unknown ids) and checks
// that everything the routes hand it is in-schema. "Accepted" in the abuse suite means "reached
// one of these methods"; a violation means garbage got through validation.
import { WorkflowNotFoundError } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps } from '../../server/app.js';
import type { Authenticator } from '../../server/auth.js';
import type { SessionEvents } from '../../server/events.js';
import { OPERATOR_FILTER_PATTERN } from '../../server/session-search.js';
import type { Sessions } from '../../server/sessions.js';
import { MAX_COMMAND_LENGTH, MAX_COMMAND_TIMEOUT_SECONDS, MAX_MESSAGE_LENGTH, MAX_REASON_LENGTH } from '../../workflows/messages.js';
import { PVE_VERBS } from '../../workflows/pve-types.js';
import { DEFAULT_POLICY, type SessionState } from '../../workflows/session-types.js';

export const KNOWN_SESSION = 'bg-20260611-0312-k7qm';

export interface FakeSessions {
  sessions: Sessions;
  events: SessionEvents;
  /** Every call that reached the session layer: method, operator, arguments. */
  calls: { method: string; operator: string | null; args: unknown[] }[];
  /** In-schema violations seen by the fake (must stay empty). */
  violations: string[];
  /**
   * ±Infinity that got through an integer field's bounds (RELIABILITY.md, finding A2: ajv's type
   * coercion turns "Infinity"/"1e400" into a number and then skips minimum/maximum). Kept apart
   * from violations because it is a known, reported finding; the workflow layer bounds it.
   */
  nonFinite: string[];
}

const ID = /^[A-Za-z0-9._-]{1,200}$/;
const KEY = /^[A-Za-z0-9_-]{1,40}$/;
const APPROVAL_ID = /^[A-Za-z0-9_-]{1,60}$/;

function plainObject(value: unknown): value is Record<string, unknown> {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A plausible session state (no VM look yet, agent off); tests override what they need. */
export function fakeState(id: string): SessionState {
  return {
    workflowId: id,
    runId: 'run-1',
    target: { devvm: 'devvm', vmid: 102 },
    operator: 'alice',
    description: 'devvm wedged',
    startedAt: Date.UTC(2026, 5, 11, 3, 12),
    policy: DEFAULT_POLICY,
    paused: false,
    pauseReason: '',
    ended: false,
    outcome: null,
    vm: null,
    vmCheckedAt: null,
    devvmReachable: null,
    lastVerb: '',
    running: null,
    queue: [],
    pendingApprovals: [],
    budget: { toolCallsUsed: 0, toolCallsPerMessage: 20, tokens: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, costUsd: 0 },
    agent: { enabled: false, reason: 'fake', thinking: false, turns: 0, awaiting: [] },
    transcript: { firstSeq: 1, nextSeq: 1, previousRunId: null },
  } as unknown as SessionState;
}

export function createFakeSessions(): FakeSessions {
  const calls: FakeSessions['calls'] = [];
  const violations: string[] = [];
  const nonFinite: string[] = [];
  const check = (ok: boolean, what: string, value: unknown) => {
    if (ok) return;
    if (typeof value === 'number' && !Number.isFinite(value)) nonFinite.push(`${what}: ${value}`);
    else violations.push(`${what}: ${JSON.stringify(value)?.slice(0, 200)}`);
  };
  const checkId = (id: unknown) => check(typeof id === 'string' && ID.test(id), 'session id', id);
  const checkOperator = (operator: unknown) => check(typeof operator === 'string' && operator.length > 0, 'operator', operator);
  const checkKeys = (what: string, body: unknown, allowed: string[]) => {
    check(plainObject(body), `${what} is a plain object`, body);
    if (!plainObject(body)) return;
    for (const key of Reflect.ownKeys(body)) check(typeof key === 'string' && allowed.includes(key), `${what} key`, String(key));
  };
  const optString = (what: string, value: unknown, max: number, pattern?: RegExp) =>
    check(value === undefined || (typeof value === 'string' && value.length <= max && (!pattern || pattern.test(value))), what, value);
  const known = async (id: string) => {
    if (id !== KNOWN_SESSION) throw new WorkflowNotFoundError(`workflow not found for ID: ${id}`, id, undefined);
  };
  const record = (method: string, operator: string | null, args: unknown[]) => calls.push({ method, operator, args });

  const sessions = {
    async start(operator: string, description: string) {
      record('start', operator, [description]);
      checkOperator(operator);
      check(typeof description === 'string' && description.trim() !== '' && description.length <= MAX_MESSAGE_LENGTH, 'description', description);
      return 'bg-20260611-0313-abcd';
    },
    async list(filter: Record<string, unknown>) {
      record('list', null, [filter]);
      checkKeys('list filter', filter, ['outcome', 'operator', 'since', 'search']);
      check(filter.outcome === undefined || ['open', 'recovered', 'ended', 'cancelled', 'failed'].includes(filter.outcome as string), 'outcome', filter.outcome);
      check(filter.since === undefined || ['1h', '24h', '7d', '30d'].includes(filter.since as string), 'since', filter.since);
      optString('operator filter', filter.operator, 200, new RegExp(OPERATOR_FILTER_PATTERN, 'u'));
      optString('search', filter.search, 200);
      return [];
    },
    async view(id: string, cursor: unknown, limit: unknown) {
      checkId(id);
      check(cursor === undefined || (Number.isInteger(cursor) && (cursor as number) >= 1), 'cursor', cursor);
      check(Number.isInteger(limit) && (limit as number) >= 1 && (limit as number) <= 200, 'limit', limit);
      await known(id);
      return { state: fakeState(id), transcript: { entries: [], nextCursor: null, firstSeq: 1, previousRunId: null } };
    },
    async state(id: string) {
      checkId(id);
      await known(id);
      return fakeState(id);
    },
    async transcript(id: string, cursor: unknown, limit: unknown) {
      record('transcript', null, [id, cursor, limit]);
      checkId(id);
      // The schema bounds cursor below only (1e20 is an integer too; the workflow answers an empty page).
      check(cursor === undefined || (Number.isInteger(cursor) && (cursor as number) >= 1), 'cursor', cursor);
      check(Number.isInteger(limit) && (limit as number) >= 1 && (limit as number) <= 200, 'limit', limit);
      await known(id);
      return { entries: [], nextCursor: null, firstSeq: 1, previousRunId: null };
    },
    async fullTranscript(id: string) {
      checkId(id);
      await known(id);
      return [];
    },
    async message(id: string, operator: string, text: string) {
      record('message', operator, [id, text]);
      checkId(id);
      checkOperator(operator);
      check(typeof text === 'string' && text.length >= 1 && text.length <= MAX_MESSAGE_LENGTH, 'text', text);
      await known(id);
      return { seq: 2 };
    },
    async verb(id: string, request: Record<string, unknown>) {
      record('verb', request?.operator as string, [id, request]);
      checkId(id);
      checkKeys('verb body', request, ['verb', 'reason', 'requestKey', 'operator']);
      check((PVE_VERBS as readonly unknown[]).includes(request.verb), 'verb', request.verb);
      check(typeof request.reason === 'string' && request.reason.length <= MAX_REASON_LENGTH, 'reason', request.reason);
      optString('requestKey', request.requestKey, 40, KEY);
      checkOperator(request.operator);
      await known(id);
      return { key: 'k-1', approvalId: null };
    },
    async command(id: string, request: Record<string, unknown>) {
      record('command', request?.operator as string, [id, request]);
      checkId(id);
      checkKeys('command body', request, ['command', 'timeoutSeconds', 'requestKey', 'operator']);
      check(typeof request.command === 'string' && request.command.length >= 1 && request.command.length <= MAX_COMMAND_LENGTH, 'command', request.command);
      check(
        request.timeoutSeconds === undefined || (Number.isInteger(request.timeoutSeconds) && (request.timeoutSeconds as number) >= 1 && (request.timeoutSeconds as number) <= MAX_COMMAND_TIMEOUT_SECONDS),
        'timeoutSeconds',
        request.timeoutSeconds,
      );
      optString('requestKey', request.requestKey, 40, KEY);
      checkOperator(request.operator);
      await known(id);
      return { key: 'k-2', approvalId: null };
    },
    async approval(id: string, decision: Record<string, unknown>) {
      record('approval', decision?.operator as string, [id, decision]);
      checkId(id);
      checkKeys('approval', decision, ['approvalId', 'decision', 'operator', 'reason']);
      check(typeof decision.approvalId === 'string' && APPROVAL_ID.test(decision.approvalId), 'approvalId', decision.approvalId);
      check(decision.decision === 'approve' || decision.decision === 'deny', 'decision', decision.decision);
      optString('approval reason', decision.reason, MAX_REASON_LENGTH);
      checkOperator(decision.operator);
      await known(id);
      return { ok: true };
    },
    async policy(id: string, operator: string, policy: Record<string, unknown>) {
      record('policy', operator, [id, policy]);
      checkId(id);
      checkOperator(operator);
      checkKeys('policy', policy, ['mutatingVerbs', 'devvmCommands', 'toolCallsPerMessage']);
      check(Object.keys(policy).length >= 1, 'policy not empty', policy);
      check(policy.mutatingVerbs === undefined || ['autonomous', 'approve', 'two-person'].includes(policy.mutatingVerbs as string), 'mutatingVerbs', policy.mutatingVerbs);
      check(policy.devvmCommands === undefined || ['allowlist', 'autonomous'].includes(policy.devvmCommands as string), 'devvmCommands', policy.devvmCommands);
      check(
        policy.toolCallsPerMessage === undefined || (Number.isInteger(policy.toolCallsPerMessage) && (policy.toolCallsPerMessage as number) >= 1 && (policy.toolCallsPerMessage as number) <= 200),
        'toolCallsPerMessage',
        policy.toolCallsPerMessage,
      );
      await known(id);
      return { ...DEFAULT_POLICY, ...policy };
    },
    ...Object.fromEntries(
      (['pause', 'resume', 'end'] as const).map((method) => [
        method,
        async (id: string, operator: string, reason?: unknown) => {
          record(method, operator, [id, reason]);
          checkId(id);
          checkOperator(operator);
          optString(`${method} reason`, reason, MAX_REASON_LENGTH);
          await known(id);
        },
      ]),
    ),
    async cancel(id: string) {
      record('cancel', null, [id]);
      checkId(id);
      await known(id);
    },
  };

  const events = {
    async subscribe(id: string, from: unknown) {
      record('subscribe', null, [id, from]);
      checkId(id);
      check(from === undefined || (Number.isInteger(from) && (from as number) >= 1), 'from', from);
      // Ends the stream at once (an `error` event), so a fuzzed request never hangs.
      throw new Error('fake: no events');
    },
  };

  return { sessions: sessions as unknown as Sessions, events: events as unknown as SessionEvents, calls, violations, nonFinite };
}

/** The API over the fakes, listening on 127.0.0.1 port 0. */
export async function serveFake(auth: Authenticator, overrides: Partial<AppDeps> = {}): Promise<{ app: FastifyInstance; base: string; port: number; fake: FakeSessions }> {
  const fake = createFakeSessions();
  const app = await buildApp({
    sessions: fake.sessions,
    events: fake.events,
    auth,
    readiness: async () => ({ temporal: true, worker: true }),
    temporalUiUrl: null,
    namespace: 'default',
    agent: { mode: 'off', reason: 'abuse suite' },
    heartbeatMs: 60_000,
    // The fuzzer sends thousands of mutations from one operator; the limiter itself is tested
    // separately (a 429 is a fine answer, but it would hide what validation does).
    mutationRateLimit: 1_000_000,
    loginRateLimit: 1_000_000,
    ...overrides,
  });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base, port: Number(new URL(base).port), fake };
}
