/**
 * The console's view of sessions, over the Temporal client: start, list (visibility), state and
 * transcript (queries), and the operator's messages (updates and signals).
 */
import { createHash, randomBytes } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
// A CommonJS package: under Node's ESM loader its namespaces hang off the default export.
import proto from '@temporalio/proto';
import { readFullTranscript } from '../activities/agent/transcript.js';
import { breakglassSession } from '../workflows/session.js';
import {
  approvalUpdate,
  cancelRequestSignal,
  endSessionSignal,
  operatorMessageUpdate,
  pauseSignal,
  requestCommandUpdate,
  requestVerbUpdate,
  resumeSignal,
  setPolicyUpdate,
  stateQuery,
  transcriptQuery,
  viewQuery,
  type ApprovalInput,
  type CommandRequestInput,
  type VerbRequestInput,
} from '../workflows/messages.js';
import { mdBlock, mdText } from '../workflows/markdown.js';
import { LAST_VERB, OPERATOR, OUTCOME, TARGET, VM_STATE, WORDS } from '../workflows/search-attributes.js';
import { listQuery, searchWords, type ListFilter } from './session-search.js';
import type { SessionPolicy, SessionState, SessionTarget, TranscriptEntry, TranscriptPage } from '../workflows/session-types.js';

const EventType = proto.temporal.api.enums.v1.EventType;
/** History events that end a run; the session goes on in a new run only after ContinuedAsNew. */
const RUN_ENDS = new Set([
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
  EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
]);
const HISTORY_PAGE = 1000;

/** Where a reader of one run's history stands (the server's page token is opaque). */
export interface HistoryPosition {
  runId: string;
  token: Uint8Array | null;
}

export interface HistoryNews {
  position: HistoryPosition;
  /** Events arrived (a page that was not a full catch-up page: something happened). */
  changed: boolean;
  /** The run ended: 'continued' as a new run, or 'closed' for good. */
  ended: 'continued' | 'closed' | null;
}

/** Makes a request happen once: an Update id from the client's Idempotency-Key. */
export interface Once {
  updateId?: string;
}

/** A session's runs that stand for it: not those it continued from as new. */
export const SESSION_RUNS = `WorkflowType = 'breakglassSession' AND ExecutionStatus != 'ContinuedAsNew'`;

export interface SessionSummary {
  id: string;
  status: string;
  operator: string | null;
  target: string | null;
  startedAt: string;
  closedAt: string | null;
  outcome: string | null;
  lastVerb: string | null;
  /** The VM at the session's last look (e.g. `running (QMP silent)`). */
  vmState: string | null;
}

const ID_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

/** `bg-20261124-0312-k7qm`: time-ordered, short enough to read out on a call and type. */
export function newSessionId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 13);
  const suffix = [...randomBytes(4)].map((byte) => ID_ALPHABET[byte % ID_ALPHABET.length]).join('');
  return `bg-${stamp}-${suffix}`;
}

export class Sessions {
  constructor(
    private readonly client: Client,
    private readonly options: {
      taskQueue: string;
      target: SessionTarget;
      policy: SessionPolicy;
      namespace: string;
      agent?: { enabled: boolean; reason: string };
      notify?: boolean;
      approvalExpiryMinutes?: number;
      leaseHoldMinutes?: number;
      /** Search keys (searchKeyFrom each codec key, the encrypting one first): words stored hashed. */
      searchKeys?: Buffer[];
    },
  ) {}

  handle(id: string): WorkflowHandle<typeof breakglassSession> {
    return this.client.workflow.getHandle<typeof breakglassSession>(id);
  }

  /**
   * Opens a session. With an idempotency key the session id comes from it (and the operator), and
   * a repeat — even after the session closed — answers with that id instead of opening another.
   */
  async start(operator: string, description: string, idempotencyKey?: string): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const keyed = idempotencyKey !== undefined;
      const id = keyed ? `bg-once-${createHash('sha256').update(`${operator}\0${idempotencyKey}`).digest('hex').slice(0, 24)}` : newSessionId();
      try {
        await this.client.workflow.start(breakglassSession, {
          taskQueue: this.options.taskQueue,
          workflowId: id,
          args: [
            {
              target: this.options.target,
              operator,
              description,
              policy: this.options.policy,
              // Look at once; with an agent, it starts on the problem as written.
              opening: { lookFirst: true, agentOnDescription: true },
              ...(this.options.agent ? { agent: this.options.agent } : {}),
              ...(this.options.notify ? { notify: true } : {}),
              ...(this.options.approvalExpiryMinutes ? { approvalExpiryMinutes: this.options.approvalExpiryMinutes } : {}),
              ...(this.options.leaseHoldMinutes !== undefined ? { leaseHoldMinutes: this.options.leaseHoldMinutes } : {}),
            },
          ],
          ...(keyed ? { workflowIdReusePolicy: 'REJECT_DUPLICATE' as const } : {}),
          staticSummary: `Breakglass: ${this.options.target.devvm} (VM ${this.options.target.vmid}) — ${operator}`,
          // The Web UI renders this as Markdown: the description stays text (no hidden links).
          staticDetails: `**Problem reported by ${mdText(operator)}:**\n\n${mdBlock(description)}`,
          typedSearchAttributes: [
            { key: TARGET, value: this.options.target.devvm },
            { key: OPERATOR, value: operator },
            { key: OUTCOME, value: 'open' },
            { key: WORDS, value: searchWords(id, description, this.options.searchKeys?.[0] ?? null) },
          ],
        });
        return id;
      } catch (error) {
        if (error instanceof WorkflowExecutionAlreadyStartedError && keyed) return id;
        if (error instanceof WorkflowExecutionAlreadyStartedError && attempt < 3) continue;
        throw error;
      }
    }
  }

  /** Sessions matching `filter`, open ones first, then newest first. */
  async list(filter: ListFilter = {}, limit = 50): Promise<SessionSummary[]> {
    const sessions: SessionSummary[] = [];
    // One row per session, not per run: a continue-as-new leaves its earlier runs behind, a reset
    // the run it replaced (terminated). Visibility returns newest first (ORDER BY is not
    // available on every store, not on SQLite), so the first run seen of an id is its latest.
    const seen = new Set<string>();
    for await (const execution of this.client.workflow.list({ query: listQuery(SESSION_RUNS, filter, Date.now(), this.options.searchKeys), pageSize: limit })) {
      if (seen.has(execution.workflowId)) continue;
      seen.add(execution.workflowId);
      const attributes = execution.typedSearchAttributes;
      sessions.push({
        id: execution.workflowId,
        status: execution.status.name,
        operator: attributes.get(OPERATOR) ?? null,
        target: attributes.get(TARGET) ?? null,
        startedAt: execution.startTime.toISOString(),
        closedAt: execution.closeTime?.toISOString() ?? null,
        outcome: attributes.get(OUTCOME) ?? null,
        lastVerb: attributes.get(LAST_VERB) ?? null,
        vmState: attributes.get(VM_STATE) ?? null,
      });
      if (sessions.length >= limit) break;
    }
    const open = (session: SessionSummary) => (session.status === 'RUNNING' ? 0 : 1);
    return sessions.sort((a, b) => open(a) - open(b) || b.startedAt.localeCompare(a.startedAt));
  }

  state(id: string): Promise<SessionState> {
    return this.handle(id).query(stateQuery);
  }

  /**
   * State and a transcript page in one query (two at once on one workflow answer one after the
   * other, the second up to seconds late); an entry older than the current run is read from the
   * run that holds it.
   */
  async view(id: string, cursor?: number, limit = 100): Promise<{ state: SessionState; transcript: TranscriptPage }> {
    const view = await this.handle(id).query(viewQuery, { ...(cursor !== undefined ? { cursor } : {}), limit });
    if (cursor === undefined || cursor >= view.transcript.firstSeq || !view.transcript.previousRunId) return view;
    return { state: view.state, transcript: await this.transcript(id, cursor, limit) };
  }

  /**
   * Waits for the session's history to grow past `position` (Temporal's own long poll: the server
   * answers when events arrive, or empty after its poll interval), so the console learns of a
   * change without asking the workflow. Without a position it reads the current run from its start.
   */
  async historyAfter(id: string, position: HistoryPosition | null, signal: AbortSignal): Promise<HistoryNews> {
    const runId = position?.runId ?? (await this.handle(id).describe()).runId;
    const { connection } = this.client;
    // A signal per call, tied to the caller's: the SDK leaves its listener on the signal it is given.
    const call = new AbortController();
    const stop = () => call.abort();
    signal.addEventListener('abort', stop, { once: true });
    let response: Awaited<ReturnType<typeof this.client.workflowService.getWorkflowExecutionHistory>>;
    try {
      response = await connection.withAbortSignal(call.signal, () =>
        connection.withDeadline(Date.now() + 60_000, () =>
          this.client.workflowService.getWorkflowExecutionHistory({
            namespace: this.options.namespace,
            execution: { workflowId: id, runId },
            waitNewEvent: true,
            maximumPageSize: HISTORY_PAGE,
            skipArchival: true,
            ...(position?.token ? { nextPageToken: position.token } : {}),
          }),
        ),
      );
    } finally {
      signal.removeEventListener('abort', stop);
    }
    const events = response.history?.events ?? [];
    const last = events.at(-1)?.eventType;
    let ended: HistoryNews['ended'] = last !== undefined && last !== null && RUN_ENDS.has(last) ? (last === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW ? 'continued' : 'closed') : null;
    const more = response.nextPageToken && response.nextPageToken.length > 0;
    if (!ended && events.length === 0 && !more) {
      // Nothing new and nothing to wait on: the run ended before this read (its end read earlier).
      const status = (await this.client.workflow.getHandle(id, runId).describe()).status.name;
      if (status !== 'RUNNING') ended = status === 'CONTINUED_AS_NEW' ? 'continued' : 'closed';
    }
    const token = more ? (response.nextPageToken as Uint8Array) : (position?.token ?? null);
    return { position: { runId, token }, changed: events.length > 0 && events.length < HISTORY_PAGE, ended };
  }

  /** A page of the transcript; follows continue-as-new back into earlier runs when asked. */
  async transcript(id: string, cursor?: number, limit = 100): Promise<TranscriptPage> {
    const current = await this.handle(id).query(transcriptQuery, { ...(cursor !== undefined ? { cursor } : {}), limit });
    if (cursor === undefined || cursor >= current.firstSeq || !current.previousRunId) return current;
    // An older entry: walk back to the run that holds it (closed runs still answer queries).
    let runId: string | null = current.previousRunId;
    while (runId) {
      const page: TranscriptPage = await this.client.workflow.getHandle(id, runId).query(transcriptQuery, { cursor, limit });
      // A later run always follows an earlier one: its end is not the transcript's.
      if (cursor >= page.firstSeq || !page.previousRunId) return { ...page, more: true };
      runId = page.previousRunId;
    }
    return current;
  }

  /** Every entry of every run, oldest first (the postmortem). */
  fullTranscript(id: string): Promise<TranscriptEntry[]> {
    return readFullTranscript(this.client, id);
  }

  // `once.updateId`: an API client's Idempotency-Key made into the Update's id. Temporal runs an
  // Update id once per run and answers a repeat with the first outcome, and the session keys
  // the request from it, so a retried POST is never a second request.
  message(id: string, operator: string, text: string, once: Once = {}) {
    return this.handle(id).executeUpdate(operatorMessageUpdate, { args: [{ operator, text }], ...once });
  }

  verb(id: string, request: VerbRequestInput, once: Once = {}) {
    return this.handle(id).executeUpdate(requestVerbUpdate, { args: [request], ...once });
  }

  command(id: string, request: CommandRequestInput, once: Once = {}) {
    return this.handle(id).executeUpdate(requestCommandUpdate, { args: [request], ...once });
  }

  approval(id: string, decision: ApprovalInput, once: Once = {}) {
    return this.handle(id).executeUpdate(approvalUpdate, { args: [decision], ...once });
  }

  policy(id: string, operator: string, policy: Partial<SessionPolicy>, once: Once = {}) {
    return this.handle(id).executeUpdate(setPolicyUpdate, { args: [{ operator, policy }], ...once });
  }

  pause(id: string, operator: string, reason?: string) {
    return this.handle(id).signal(pauseSignal, { operator, ...(reason ? { reason } : {}) });
  }

  resume(id: string, operator: string) {
    return this.handle(id).signal(resumeSignal, { operator });
  }

  end(id: string, operator: string, reason?: string) {
    return this.handle(id).signal(endSessionSignal, { operator, ...(reason ? { reason } : {}) });
  }

  /** Names the operator in the record, then asks Temporal to cancel (which carries no identity). */
  async cancel(id: string, operator: string, reason?: string) {
    await this.handle(id).signal(cancelRequestSignal, { operator, ...(reason ? { reason } : {}) });
    return this.handle(id).cancel();
  }
}
