/**
 * Records the workflow histories that test/session-replay.test.ts replays, from real sessions on
 * a real Temporal dev server (real sshd, real dispatcher, the lab's qm over a real QEMU):
 *
 *   npx tsx test/helpers/record-histories.ts            # all scenarios
 *   npx tsx test/helpers/record-histories.ts cycle      # only the named ones
 *
 * Writes test/fixtures/histories/<name>.json as the real `temporal workflow show --output json`
 * prints it: the standard JSON form that `Worker.runReplayHistories` accepts.
 *
 * When to re-record: only when a workflow change is MEANT to change the commands a session
 * issues, and sessions recorded with the old code can no longer be running anywhere (otherwise
 * keep the old behaviour behind `patched()` and keep the old fixtures). If the replay test fails
 * and you did not mean to change the workflow's commands, the change breaks determinism: fix the
 * change, not the fixture.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import {
  approvalUpdate,
  endSessionSignal,
  operatorMessageUpdate,
  pauseSignal,
  requestCommandUpdate,
  requestVerbSignal,
  requestVerbUpdate,
  resumeSignal,
  setPolicyUpdate,
} from '../../workflows/messages.js';
import { readConversation } from '../../lab/messages-api/scenarios.js';
import type { Script } from '../../lab/messages-api/server.js';
import { cliOk } from './fault-tools.js';
import { startSessionEnv, stateOf, uniqueQueue, waitForTranscript, type SessionEnv } from './session-env.js';

export const HISTORIES_DIR = join(dirname(fileURLToPath(import.meta.url)), '../fixtures/histories');

/** High enough for every other scenario, low enough that continue-as-new comes in seconds. */
const CONTINUE_AS_NEW_THRESHOLD = 100;

type Recorded = { name: string; handle: WorkflowHandle; runId: string };
type Scenario = (env: SessionEnv, queue: string) => Promise<Recorded[]>;

const hasEntry = (type: string, key?: string) => (entries: { type: string; key?: string }[]) =>
  entries.some((entry) => entry.type === type && (key === undefined || entry.key === key));

const runIdOf = async (handle: WorkflowHandle) => (await handle.describe()).runId;

export const SCENARIOS: Record<string, Scenario> = {
  /** An operator message, a cycle (forensics, the verb, the wait for SSH), a command, the end. */
  async cycle(env, queue) {
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm writes stalled since 03:10', operator: 'alice' }] });
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'I/O stalled, apply the staged config', operator: 'alice' }] });
    await waitForTranscript(handle, hasEntry('devvm-wait'), 60_000);
    await handle.executeUpdate(requestCommandUpdate, { args: [{ command: 'uptime', operator: 'alice' }] });
    await waitForTranscript(handle, hasEntry('command-result'));
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    await handle.result();
    return [{ name: 'cycle', handle, runId: await runIdOf(handle) }];
  },

  /**
   * Today's key rules: a cycle by update (its key from the update id), a keyless status by signal
   * (numbered per run), a keyless cycle by signal (refused), and an approval that lapses.
   */
  async 'keys-2026-12'(env, queue) {
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' }, approvalExpiryMinutes: 0.05 });
    const cycle = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'needs bob', operator: 'alice' }] });
    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: cycle.approvalId as string, decision: 'approve', operator: 'bob' }] });
    await waitForTranscript(handle, hasEntry('devvm-wait'), 60_000);
    await handle.signal(requestVerbSignal, { verb: 'status', reason: 'keyless look', operator: 'bob' });
    await handle.signal(requestVerbSignal, { verb: 'cycle', reason: 'keyless cycle', operator: 'bob' });
    await waitForTranscript(handle, hasEntry('status'));
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'reset', reason: 'nobody approves this', operator: 'alice' }] });
    await waitForTranscript(handle, (entries) => entries.filter((entry) => entry.type === 'skipped').length >= 2, 30_000);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    await handle.result();
    return [{ name: 'keys-2026-12', handle, runId: await runIdOf(handle) }];
  },

  /**
   * Two sessions on one VM: the holder cycles under the VM's lease; the other is refused, then
   * takes over (the holder is told) and cycles; the holder's next cycle is refused; both end.
   */
  async 'lease-2026-12'(env, queue) {
    const holder = await env.startSession(queue, { leaseHoldMinutes: 10 });
    const taker = await env.startSession(queue, { leaseHoldMinutes: 10, operator: 'bob' });
    const cycle = (handle: WorkflowHandle, key: string, takeOver = false) =>
      handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: `lease ${key}`, operator: handle === holder ? 'alice' : 'bob', requestKey: key, ...(takeOver ? { takeOver } : {}) }] });
    await cycle(holder, 'first');
    await waitForTranscript(holder, hasEntry('devvm-wait'), 60_000);
    await cycle(taker, 'refused');
    await waitForTranscript(taker, hasEntry('skipped', 'refused'));
    await cycle(taker, 'taken', true);
    await waitForTranscript(taker, hasEntry('devvm-wait', 'taken'), 60_000);
    await waitForTranscript(holder, hasEntry('lease'));
    await cycle(holder, 'again');
    await waitForTranscript(holder, hasEntry('skipped', 'again'));
    for (const handle of [taker, holder]) {
      await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
      await handle.result();
    }
    return [
      { name: 'lease-holder', handle: holder, runId: await runIdOf(holder) },
      { name: 'lease-taker', handle: taker, runId: await runIdOf(taker) },
    ];
  },

  /** An agent turn asking for a cycle, keyed by turn and place (t-1-0), and its report after. */
  async 'agent-cycle'(env, queue) {
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm is wedged, please fix it', operator: 'alice' }] });
    await waitForTranscript(handle, (entries) => hasEntry('devvm-wait')(entries) && entries.filter((entry) => entry.type === 'agent-message').length >= 2, 90_000);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    await handle.result();
    return [{ name: 'agent-cycle', handle, runId: await runIdOf(handle) }];
  },

  /** Two-person policy: a reset denied, then a cycle approved by a second operator and run. */
  async 'approval-deny'(env, queue) {
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' } });
    const reset = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'reset', reason: 'try the warm one', operator: 'alice' }] });
    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: reset.approvalId as string, decision: 'deny', operator: 'bob', reason: 'a reset will not apply the staged config' }] });
    const cycle = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'then a cycle', operator: 'alice' }] });
    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: cycle.approvalId as string, decision: 'approve', operator: 'bob' }] });
    await waitForTranscript(handle, hasEntry('devvm-wait'), 60_000);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    await handle.result();
    return [{ name: 'approval-deny', handle, runId: await runIdOf(handle) }];
  },

  /**
   * Who sent what (verified operators, the argument allowlist): under two-person, a cycle asked
   * by the console's client, an approval and a policy loosening forged straight through Temporal
   * (unverified, not counted), a forged `pidstat -e` command (held for approval by the argument
   * allowlist, then denied), the real second operator's approval, and the cycle.
   */
  async 'identity-2026-12'(env, queue) {
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' } });
    // The checks add events: this run passes the recording's low continue-as-new threshold, so
    // the recording is this first run, read as such.
    const firstRunId = await runIdOf(handle);
    const firstRun = env.client.workflow.getHandle(handle.workflowId, firstRunId);
    const forged = env.rawClient.workflow.getHandle(handle.workflowId);
    const cycle = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'wedged', operator: 'alice' }] });
    await forged.executeUpdate(approvalUpdate, { args: [{ approvalId: cycle.approvalId as string, decision: 'approve', operator: 'bob' }] });
    await forged.executeUpdate(setPolicyUpdate, { args: [{ operator: 'bob', policy: { mutatingVerbs: 'autonomous' } }] });
    const command = await forged.executeUpdate(requestCommandUpdate, { args: [{ command: 'pidstat -e /bin/true', operator: 'bob', requestKey: 'forged-pidstat' }] });
    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: command.approvalId as string, decision: 'deny', operator: 'bob' }] });
    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: cycle.approvalId as string, decision: 'approve', operator: 'bob' }] });
    await waitForTranscript(firstRun, hasEntry('devvm-wait'), 60_000);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    await handle.result();
    return [{ name: 'identity-2026-12', handle: firstRun, runId: firstRunId }];
  },

  /** A status, pause and resume by signal, then a cancel while a devvm command runs. */
  async cancelled(env, queue) {
    const handle = await env.startSession(queue);
    await handle.signal(requestVerbSignal, { verb: 'status', reason: 'look', operator: 'bob' });
    await waitForTranscript(handle, hasEntry('status'));
    await handle.signal(pauseSignal, { operator: 'bob', reason: 'hands off' });
    await handle.signal(resumeSignal, { operator: 'bob' });
    await waitForTranscript(handle, hasEntry('resumed'));
    await handle.executeUpdate(requestCommandUpdate, { args: [{ command: 'sleep 30', operator: 'alice', timeoutSeconds: 40 }] });
    for (let i = 0; i < 100 && !(await stateOf(handle)).running; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1_000));
    await handle.cancel();
    await handle.result().catch(() => undefined);
    return [{ name: 'cancelled', handle, runId: await runIdOf(handle) }];
  },

  /**
   * Continue-as-new with state to carry (policy, a pending approval, a pause), then in the new
   * run the approval is denied, the session resumed, a status taken, and the session ended.
   */
  async 'continued-as-new'(env, queue) {
    const handle = await env.startSession(queue);
    const firstRunId = await runIdOf(handle);
    await handle.executeUpdate(setPolicyUpdate, { args: [{ operator: 'bob', policy: { mutatingVerbs: 'two-person' } }] });
    const pending = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'needs a second operator', operator: 'alice' }] });
    await handle.signal(pauseSignal, { operator: 'bob', reason: 'waiting for carol' });
    const latest = env.client.workflow.getHandle(handle.workflowId);
    for (let i = 0; (await runIdOf(latest)) === firstRunId; i++) {
      if (i >= 60) throw new Error('the session did not continue as new');
      await latest.executeUpdate(operatorMessageUpdate, { args: [{ text: `note ${i}`, operator: 'alice' }] });
    }
    const secondRunId = await runIdOf(latest);
    await latest.executeUpdate(approvalUpdate, { args: [{ approvalId: pending.approvalId as string, decision: 'deny', operator: 'carol' }] });
    await latest.signal(resumeSignal, { operator: 'carol' });
    await latest.executeUpdate(requestVerbUpdate, { args: [{ verb: 'status', reason: 'after the boundary', operator: 'carol' }] });
    await waitForTranscript(latest, hasEntry('status'));
    await latest.signal(endSessionSignal, { operator: 'carol' });
    await latest.result();
    return [
      { name: 'continued-as-new-run1', handle: env.client.workflow.getHandle(handle.workflowId, firstRunId), runId: firstRunId },
      { name: 'continued-as-new-run2', handle: env.client.workflow.getHandle(handle.workflowId, secondRunId), runId: secondRunId },
    ];
  },
};

/**
 * The lab PVE host's forensics include the recording machine's own kernel log (`dmesg`):
 * not ours to commit. The workflow never branches on section output, so replacing it leaves the
 * history exactly as replayable.
 */
const REDACTED_SECTIONS = new Set(['host dmesg tail']);

function redact<T>(history: T): T {
  const visit = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(visit);
    if (!value || typeof value !== 'object') return value;
    const record = value as Record<string, unknown>;
    if (typeof record.name === 'string' && REDACTED_SECTIONS.has(record.name) && typeof record.output === 'string') {
      return { ...record, output: '(redacted by test/helpers/record-histories.ts: the recording machine\'s kernel log)' };
    }
    const payload = record.metadata as { encoding?: string } | undefined;
    if (typeof record.data === 'string' && payload && Buffer.from(payload.encoding ?? '', 'base64').toString() === 'json/plain') {
      const decoded = visit(JSON.parse(Buffer.from(record.data, 'base64').toString('utf8')));
      return { ...record, data: Buffer.from(JSON.stringify(decoded)).toString('base64') };
    }
    return Object.fromEntries(Object.entries(record).map(([key, inner]) => [key, visit(inner)]));
  };
  return visit(history) as T;
}

async function main(names: string[]): Promise<void> {
  const unknown = names.filter((name) => !(name in SCENARIOS));
  if (unknown.length) throw new Error(`unknown scenario(s) ${unknown.join(', ')}; known: ${Object.keys(SCENARIOS).join(', ')}`);
  for (const withAgent of [false, true]) {
    const chosen = (names.length ? names : Object.keys(SCENARIOS)).filter((name) => AGENT_SCENARIOS.has(name) === withAgent);
    if (chosen.length) await record(chosen, withAgent);
  }
}

/** Scenarios whose sessions have an agent (the Messages API stand-in, scripted below). */
const AGENT_SCENARIOS = new Set(['agent-cycle']);

/** A model that asks for a cycle, waits for its result, and reports. */
const cycleOnce: Script = (request) => {
  const cycle = readConversation(request).calls.find((call) => call.name === 'pve_cycle');
  if (!cycle) return { text: 'The devvm is wedged: cycling VM 102.', toolCalls: [{ name: 'pve_cycle', input: { reason: 'devvm wedged (agent)' } }] };
  if (!cycle.result || /reported in a later message/i.test(cycle.result.text)) return { text: 'Waiting for the cycle.' };
  return { text: 'Cycled: the devvm answers again.' };
};

async function record(names: string[], withAgent: boolean): Promise<void> {
  const env = await startSessionEnv({ dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': CONTINUE_AS_NEW_THRESHOLD }, ...(withAgent ? { agentScript: cycleOnce } : {}) });
  try {
    await mkdir(HISTORIES_DIR, { recursive: true });
    for (const name of names) {
      const queue = uniqueQueue(`record-${name}`);
      const worker = await env.startWorker(queue);
      try {
        for (const recorded of await (SCENARIOS[name] as Scenario)(env, queue)) {
          const shown = await cliOk(env, 'temporal', ['workflow', 'show', '--workflow-id', recorded.handle.workflowId, '--run-id', recorded.runId, '--output', 'json']);
          const history = redact(JSON.parse(shown) as { events: unknown[] });
          const file = join(HISTORIES_DIR, `${recorded.name}.json`);
          await writeFile(file, `${JSON.stringify(history)}\n`);
          console.log(`${recorded.name}: ${history.events.length} events (run ${recorded.runId}) -> ${file}`);
        }
      } finally {
        await worker.stop();
      }
    }
  } finally {
    await env.teardown();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
