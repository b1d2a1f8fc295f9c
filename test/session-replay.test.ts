/**
 * Replays recorded histories of representative sessions (test/fixtures/histories, recorded by
 * test/helpers/record-histories.ts from real sessions) against today's workflow code, so a
 * change that breaks determinism — and would wedge every session running at deploy time — fails
 * here instead of in an incident.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, Worker, type InjectedSinks, type ReplayResult } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { describe, expect, it } from 'vitest';
import { codecDataConverter, EncryptingPayloadCodec } from '../server/payload-codec.js';
import { WORKFLOWS_PATH, bundlerOptions } from '../server/worker.js';
import { encryptHistoryJson } from './helpers/encrypt-history.js';
import { historyFromShowJson } from './helpers/history-json.js';
import type { ReplayInputSinks } from './helpers/replay-inputs.js';
import { workflowBundle } from './helpers/session-env.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const FIXTURES = join(HERE, 'fixtures/histories');

/** What each fixture stands for; the test below checks the recording really shows it. */
const FIXTURE_NAMES = ['agent-cycle', 'approval-deny', 'cancelled', 'continued-as-new-run1', 'continued-as-new-run2', 'cycle', 'identity-2026-12', 'keys-2026-12', 'lease-holder', 'lease-taker'];

interface JsonEvent {
  eventId: string;
  eventType: string;
  [attributes: string]: unknown;
}

function load(name: string): { events: JsonEvent[] } {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as { events: JsonEvent[] };
}

const eventTypes = (name: string) => load(name).events.map((event) => event.eventType.replace(/^EVENT_TYPE_/, ''));
const activityTypes = (name: string) =>
  load(name)
    .events.map((event) => (event.activityTaskScheduledEventAttributes as { activityType?: { name?: string } } | undefined)?.activityType?.name)
    .filter((type): type is string => type !== undefined);
const updateNames = (name: string) =>
  load(name)
    .events.map((event) => (event.workflowExecutionUpdateAcceptedEventAttributes as { acceptedRequest?: { input?: { name?: string } } } | undefined)?.acceptedRequest?.input?.name)
    .filter((update): update is string => update !== undefined);

/** Patch ids the recording's markers carry (`patched()` calls taken). */
const patchIds = (name: string) =>
  load(name)
    .events.map((event) => (event.markerRecordedEventAttributes as { details?: Record<string, { payloads?: { data?: string }[] }> } | undefined)?.details?.['patch-data']?.payloads?.[0]?.data)
    .filter((data): data is string => data !== undefined)
    .map((data) => (JSON.parse(Buffer.from(data, 'base64').toString('utf8')) as { id: string }).id);
const requestIds = (name: string) =>
  recordedInputs(name)
    .flatMap((input) => input.args)
    .map((arg) => (arg as { requestId?: unknown } | null)?.requestId)
    .filter((id): id is string => typeof id === 'string');

// Replayed as the product's workers run: with the payload codec. Histories recorded before it
// hold plain payloads, which the codec passes through.
const codec = new EncryptingPayloadCodec([{ id: 'replay-key', key: randomBytes(32) }], { compress: true });
const dataConverter = codecDataConverter(codec);

const quietLogger = { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never;

/** The activities each recording scheduled, with their inputs (json/plain payloads decoded). */
function recordedInputs(name: string): { type: string; args: unknown[] }[] {
  return load(name)
    .events.map((event) => event.activityTaskScheduledEventAttributes as { activityType?: { name?: string }; input?: { payloads?: { data?: string }[] } } | undefined)
    .filter((attributes) => attributes !== undefined)
    .map((attributes) => ({
      type: attributes.activityType?.name ?? '',
      args: (attributes.input?.payloads ?? []).map((payload) => JSON.parse(Buffer.from(payload.data ?? '', 'base64').toString('utf8')) as unknown),
    }));
}

/**
 * Replays with an observer interceptor; returns what today's code scheduled, per fixture, and
 * each replay's error. `removePatch` bundles the code as if that `patched()` guard were gone.
 */
async function replayedInputs(interceptor: string, names: string[], removePatch?: string): Promise<Map<string, { type: string; args: unknown[] }[]>> {
  const hook = bundlerOptions?.webpackConfigHook ?? ((config) => config);
  const bundle = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: [join(HERE, 'helpers', interceptor)],
    webpackConfigHook: (config) => {
      const hooked = hook(config);
      if (removePatch) {
        hooked.module = { ...hooked.module, rules: [...(hooked.module?.rules ?? []), { test: /workflows[\\/][^\\/]+\.ts$/, enforce: 'pre', use: [{ loader: join(HERE, 'helpers/remove-patch-loader.cjs'), options: { id: removePatch } }] }] };
      }
      return hooked;
    },
    logger: quietLogger,
  });
  // Replayed under the workflow id it was recorded with (host request ids are derived from it),
  // read back from the first recorded request id ("<workflow id>.<key>.<suffix>").
  const recordedId = (name: string) => {
    const first = recordedInputs(name).flatMap((input) => input.args).find((arg) => typeof (arg as { requestId?: unknown })?.requestId === 'string') as { requestId: string } | undefined;
    return first ? first.requestId.slice(0, first.requestId.lastIndexOf('.', first.requestId.lastIndexOf('.') - 1)) : name;
  };
  const ids = new Map(names.map((name) => [recordedId(name), name]));
  const seen = new Map<string, { type: string; args: unknown[] }[]>(names.map((name) => [name, []]));
  const histories = [...ids].map(([workflowId, name]) => ({ workflowId, history: historyFromShowJson(load(name)) }));
  const scheduled = (info: { workflowId: string }, type: string, args: unknown[]) => {
    seen.get(ids.get(info.workflowId) ?? info.workflowId)?.push({ type, args });
  };
  const sinks = { replayInputs: { scheduled: { fn: scheduled, callDuringReplay: true } } } as unknown as InjectedSinks<ReplayInputSinks>;
  for await (const result of Worker.runReplayHistories({ workflowBundle: bundle, sinks, dataConverter }, histories)) {
    if (result.error) throw new ReplayError(ids.get(result.workflowId) ?? result.workflowId, result.error);
  }
  return seen;
}

class ReplayError extends Error {
  constructor(
    readonly fixture: string,
    readonly failure: unknown,
  ) {
    super(`${fixture}: ${String(failure)}`);
  }
}

async function replayAll(bundle: { code: string }, names: string[], options: { encrypted?: boolean; withCodec?: boolean } = {}): Promise<ReplayResult[]> {
  const results: ReplayResult[] = [];
  const histories = await Promise.all(
    names.map(async (name) => ({ workflowId: name, history: historyFromShowJson(options.encrypted ? (await encryptHistoryJson(load(name), codec)).history : load(name)) })),
  );
  for await (const result of Worker.runReplayHistories({ workflowBundle: bundle, ...(options.withCodec === false ? {} : { dataConverter }) }, histories)) results.push(result);
  return results;
}

describe('replay of recorded session histories', () => {
  it('when the fixtures are read, then each is the session it stands for', () => {
    expect(readdirSync(FIXTURES).filter((file) => file.endsWith('.json')).sort()).toEqual(FIXTURE_NAMES.map((name) => `${name}.json`));

    // A cycle: forensics strictly before the verb, then the wait for the devvm, a command, the end.
    const cycle = activityTypes('cycle');
    expect(cycle.slice(0, 3)).toEqual(['pveForensics', 'pveMutation', 'waitForDevvm']);
    expect(cycle).toContain('devvmCommand');
    expect(eventTypes('cycle').at(-1)).toBe('WORKFLOW_EXECUTION_COMPLETED');

    // Two-person policy: a denied request and an approved one; only the approved one ran.
    expect(updateNames('approval-deny').filter((update) => update === 'approval')).toHaveLength(2);
    expect(activityTypes('approval-deny')).toEqual(['pveForensics', 'pveMutation', 'waitForDevvm']);

    expect(eventTypes('cancelled')).toContain('WORKFLOW_EXECUTION_CANCEL_REQUESTED');
    expect(eventTypes('cancelled').at(-1)).toBe('WORKFLOW_EXECUTION_CANCELED');
    expect(activityTypes('cancelled')).toEqual(['pveStatus', 'devvmCommand']);

    expect(eventTypes('continued-as-new-run1').at(-1)).toBe('WORKFLOW_EXECUTION_CONTINUED_AS_NEW');
    const started = load('continued-as-new-run2').events[0]!.workflowExecutionStartedEventAttributes as { continuedExecutionRunId?: string };
    expect(started.continuedExecutionRunId).toBeTruthy();
    expect(eventTypes('continued-as-new-run2').at(-1)).toBe('WORKFLOW_EXECUTION_COMPLETED');

    // Today's key rules, each behind its patch: update-id keys, per-run signal numbers, refused
    // keyless mutating signals, lapsing approvals; and the agent's turn-and-place keys.
    expect(patchIds('keys-2026-12')).toEqual(expect.arrayContaining(['request-keys-from-update-ids', 'signal-keys-per-run', 'keyless-mutating-signals-refused', 'approval-expiry']));
    expect(requestIds('keys-2026-12').filter((id) => id.endsWith('.m'))).toEqual([expect.stringMatching(/\.u[A-Za-z0-9]{20,}\.m$/)]);
    expect(patchIds('agent-cycle')).toContain('agent-keys-from-turns');
    expect(activityTypes('agent-cycle')).toEqual(['agentTurn', 'pveForensics', 'pveMutation', 'waitForDevvm', 'agentTurn']);
    expect(requestIds('agent-cycle')).toEqual([expect.stringMatching(/\.t-1-0\.f$/), expect.stringMatching(/\.t-1-0\.m$/)]);
  });

  it('when every recorded history is replayed against the current workflow code, then none hits a determinism error', async () => {
    const results = await replayAll(await workflowBundle(), FIXTURE_NAMES);
    expect(results.map((result) => [result.workflowId, result.error ? String(result.error) : null])).toEqual(FIXTURE_NAMES.map((name) => [name, null]));
  }, 120_000);

  it('when the recorded histories are stored encrypted (as with the payload codec), then each replays with the codec and none replays without it', async () => {
    const { count } = await encryptHistoryJson(load('cycle'), codec);
    expect(count).toBeGreaterThan(10);
    const bundle = await workflowBundle();
    const decoded = await replayAll(bundle, FIXTURE_NAMES, { encrypted: true });
    expect(decoded.map((result) => [result.workflowId, result.error ? String(result.error) : null])).toEqual(FIXTURE_NAMES.map((name) => [name, null]));
    // Negative control: the encryption reached what the workflow reads.
    const undecoded = await replayAll(bundle, ['cycle', 'keys-2026-12'], { encrypted: true, withCodec: false });
    for (const result of undecoded) expect(String(result.error), result.workflowId).toMatch(/binary\/encrypted/);
  }, 120_000);

  it('when every recorded history is replayed, then each activity is scheduled with exactly the input it was recorded with (host request ids included)', async () => {
    const replayed = await replayedInputs('replay-inputs.ts', FIXTURE_NAMES);
    for (const name of FIXTURE_NAMES) expect(replayed.get(name), name).toEqual(recordedInputs(name));
    // Not vacuous: the recordings schedule the host verbs whose ids matter.
    expect(FIXTURE_NAMES.flatMap((name) => recordedInputs(name).map((input) => input.type))).toEqual(expect.arrayContaining(['pveForensics', 'pveMutation', 'devvmCommand']));
  }, 120_000);

  it('when a changed id rule makes the inputs differ, then the input comparison fails (negative control)', async () => {
    const names = ['cycle', 'approval-deny', 'agent-cycle', 'keys-2026-12'];
    const replayed = await replayedInputs('replay-inputs-altered.ts', names);
    for (const name of names) expect(replayed.get(name), name).not.toEqual(recordedInputs(name));
  }, 120_000);

  // Each guard, removed, must break the replay of a recording made with it: by a determinism
  // error or by different activity inputs. The recording must carry the guard's marker, or the
  // control proves nothing.
  it.each([
    ['agent-keys-from-turns', 'agent-cycle'],
    ['signal-keys-per-run', 'keys-2026-12'],
    ['keyless-mutating-signals-refused', 'keys-2026-12'],
    ['approval-expiry', 'keys-2026-12'],
    ['target-lease', 'lease-holder'],
    ['target-lease', 'lease-taker'],
    ['verified-operators', 'identity-2026-12'],
    ['argument-allowlist', 'identity-2026-12'],
  ])('when the patch %s is removed, then replaying %s fails (negative control)', async (patch, name) => {
    expect(patchIds(name)).toContain(patch);
    let outcome: string;
    try {
      const replayed = await replayedInputs('replay-inputs.ts', [name], patch);
      outcome = JSON.stringify(replayed.get(name)) === JSON.stringify(recordedInputs(name)) ? 'replayed the same' : 'inputs differ';
    } catch (error) {
      if (!(error instanceof ReplayError)) throw error;
      outcome = 'replay failed';
    }
    expect(outcome).not.toBe('replayed the same');
  }, 120_000);

  it('when the workflow issues its commands in a different order, then replaying the recordings fails with a determinism violation', async () => {
    const broken = await bundleWorkflowCode({
      workflowsPath: join(HERE, 'helpers/nondeterministic-session.ts'),
      ...(bundlerOptions?.webpackConfigHook ? { webpackConfigHook: bundlerOptions.webpackConfigHook } : {}),
      logger: quietLogger,
    });
    const results = await replayAll(broken, ['cycle', 'cancelled']);
    expect(results).toHaveLength(2);
    for (const result of results) expect(result.error).toBeInstanceOf(DeterminismViolationError);
  }, 120_000);
});
