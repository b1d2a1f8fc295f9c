/**
 * Durability of a breakglass session against real faults: the worker SIGKILLed at each step of
 * a cycle and at the steps of a reset, a stop and a start, the Temporal dev server restarted, the
 * SSH connection to the PVE host dropped, and the PVE host's sshd gone for good. Real Temporal dev
 * server, real sshd, real dispatcher, the lab's qm over a real QEMU.
 */
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPveHost } from '../lab/pve-host.js';
import { clearFaults, readVm, runQm, setFault } from '../lab/pve/lab-vm.mjs';
import { invocations } from '../lab/pve/pve-node.mjs';
import { hostRequestId, keyFromUpdateId } from '../workflows/session.js';
import { endSessionSignal, operatorMessageUpdate, requestVerbSignal, requestVerbUpdate } from '../workflows/messages.js';
import {
  FAST_TIMING,
  dropSshConnectionOf,
  entriesOf,
  hostLog,
  invocationCount,
  mutatingVerbsRun,
  onHostLogLine,
  re,
  sleep,
  startFaultEnv,
  startedCalls,
  eventually,
  type FaultEnv,
  type LogMatch,
  type WorkerProcess,
} from './helpers/fault-tools.js';
import { stateOf, transcriptOf, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';
import { expectInOrder } from './helpers/order.js';

let fault: FaultEnv;
let env: SessionEnv;

beforeAll(async () => {
  fault = await startFaultEnv();
  env = fault.env;
}, 120_000);

afterAll(async () => {
  await fault?.teardown();
});

const workerFor = (queue: string): Promise<WorkerProcess> => fault.workerFor(queue);

interface KillContext {
  env: SessionEnv;
  worker: WorkerProcess;
  workflowId: string;
  forensicsId: string;
  mutationId: string;
  /** Index of the first qm invocation of this session in the lab qm's invocation log. */
  callsBefore: number;
}

interface KillPoint {
  name: string;
  /** slow_verbs on: qm stop/start take 1.5 s each, so "during" a verb is a wide window. */
  slow: boolean;
  /**
   * Arms the kill before the cycle is requested. Returns what the host log and qm looked like
   * right after the SIGKILL, once it happened, and an undo for anything held meanwhile.
   */
  arm(ctx: KillContext): { killed: Promise<LogMatch | 'after-update'>; release?: () => void };
  /** Proves, from the evidence at kill time, that the kill landed at the intended step. */
  check(evidence: LogMatch, ctx: KillContext): void;
  /**
   * Whether the retried attempt must have re-attached to the host journal (`replayed`), where
   * that is certain: the host had started the capture or the verb before the kill.
   */
  replayed: { forensics?: boolean; mutation: boolean };
}

const has = (lines: string[], pattern: RegExp) => lines.some((line) => pattern.test(line));

const KILL_POINTS: KillPoint[] = [
  {
    name: 'before forensics (right after the update is accepted)',
    slow: false,
    replayed: { mutation: false },
    arm: (ctx) => {
      // Hold new SSH connections at the PVE host's listener, so that however fast the worker
      // picks up the forensics activity, nothing reaches the host before the kill.
      const listener = ctx.env.pve.sshd.process.pid as number;
      process.kill(listener, 'SIGSTOP');
      return { killed: Promise.resolve('after-update'), release: () => process.kill(listener, 'SIGCONT') };
    },
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`request=${re(ctx.forensicsId)}\\b`))).toBe(false);
    },
  },
  {
    name: 'during forensics',
    slow: false,
    replayed: { forensics: true, mutation: false },
    arm: (ctx) => ({ killed: onHostLogLine(ctx.env.pve, new RegExp(`event=forensics-start verb=forensics request=${re(ctx.forensicsId)}$`), () => ctx.worker.killNow()).matched }),
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=forensics-done verb=forensics request=${re(ctx.forensicsId)} `))).toBe(false);
    },
  },
  {
    name: 'between forensics and stop',
    slow: false,
    replayed: { forensics: false, mutation: false },
    arm: (ctx) => {
      // Once forensics is published on the host, hold new SSH connections at the listener (the
      // running one still answers): the mutation's connection then waits at the door while the
      // worker is killed, after forensics is in history and before the host ever saw the verb.
      const listener = ctx.env.pve.sshd.process.pid as number;
      const held = onHostLogLine(ctx.env.pve, new RegExp(`event=verb-done verb=forensics request=${re(ctx.forensicsId)} `), () => process.kill(listener, 'SIGSTOP'));
      const killed = held.matched.then(async () => {
        const handle = ctx.env.client.workflow.getHandle(ctx.workflowId);
        await eventually(async () => {
          const description = await handle.describe();
          const pending = description.raw.pendingActivities ?? [];
          // PendingActivityState 2 = STARTED: a worker holds the task.
          return pending.some((activity) => activity.activityType?.name === 'pveMutation' && Number(activity.state) === 2) ? true : undefined;
        }, 10_000, 'the mutation activity started', 20);
        ctx.worker.killNow();
        const log = hostLog(ctx.env.pve);
        return { line: '(mutation activity started on the worker)', logAfterAction: log, callsAfterAction: invocations(ctx.env.pve.nodeRoot) };
      });
      return { killed, release: () => process.kill(listener, 'SIGCONT') };
    },
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=verb-done verb=forensics request=${re(ctx.forensicsId)} `))).toBe(true);
      expect(has(evidence.logAfterAction, new RegExp(`request=${re(ctx.mutationId)}\\b`))).toBe(false);
    },
  },
  {
    name: 'during stop',
    slow: true,
    replayed: { forensics: false, mutation: true },
    arm: (ctx) => ({ killed: onHostLogLine(ctx.env.pve, new RegExp(`event=verb-step verb=cycle request=${re(ctx.mutationId)} step="qm stop"`), () => ctx.worker.killNow()).matched }),
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=cycle request=${re(ctx.mutationId)} step="qm stop"`))).toBe(false);
    },
  },
  {
    name: 'between stop and start',
    // slow_verbs: `qm start` takes 1.5 s, so the freeze lands before the start has done anything
    // even when a loaded machine notices the log line late.
    slow: true,
    replayed: { forensics: false, mutation: true },
    arm: (ctx) => {
      // The host runner logs its own pid: freeze it right after `qm stop` is done so the VM stays
      // stopped, with the start not done, until the new worker is up.
      let runner = 0;
      const matched = onHostLogLine(ctx.env.pve, new RegExp(`event=verb-step-done verb=cycle request=${re(ctx.mutationId)} step="qm stop"`), (line) => {
        runner = Number(/ pid=(\d+) /.exec(line)?.[1]);
        process.kill(runner, 'SIGSTOP');
        ctx.worker.killNow();
      }).matched;
      return { killed: matched, release: () => runner && process.kill(runner, 'SIGCONT') };
    },
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=cycle request=${re(ctx.mutationId)} step="qm stop"`))).toBe(true);
      const calls = evidence.callsAfterAction.slice(ctx.callsBefore);
      expect(calls.filter((call) => call.started && call.argv[0] === 'stop')).toHaveLength(1);
      expect(calls.filter((call) => call.argv[0] === 'stop' && call.exit !== undefined)).toHaveLength(1);
      // The VM was left stopped: no start had finished when the worker died.
      expect(calls.filter((call) => call.argv[0] === 'start' && call.exit !== undefined)).toHaveLength(0);
    },
  },
  {
    name: 'during start',
    slow: true,
    replayed: { forensics: false, mutation: true },
    arm: (ctx) => ({ killed: onHostLogLine(ctx.env.pve, new RegExp(`event=verb-step verb=cycle request=${re(ctx.mutationId)} step="qm start"`), () => ctx.worker.killNow()).matched }),
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=cycle request=${re(ctx.mutationId)} step="qm stop"`))).toBe(true);
      expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=cycle request=${re(ctx.mutationId)} step="qm start"`))).toBe(false);
    },
  },
];

/**
 * Every point twice: with an explicit requestKey, and with none — the key then comes from the
 * Update id, as for the console's Idempotency-Key and any client that sends no key.
 */
type Keying = 'explicit requestKey' | 'key from the update id';
const KEYINGS: Keying[] = ['explicit requestKey', 'key from the update id'];
let keyed = 0;
function keyFor(keying: Keying, explicit: string): { key: string; request: { requestKey: string } | Record<string, never>; updateId?: string } {
  if (keying === 'explicit requestKey') return { key: explicit, request: { requestKey: explicit } };
  const updateId = `kill-${process.pid}-${Date.now()}-${++keyed}`;
  return { key: keyFromUpdateId(updateId), request: {}, updateId };
}

describe('a worker SIGKILLed during a cycle', () => {
  it.each(KILL_POINTS.flatMap((point) => KEYINGS.map((keying) => ({ ...point, keying }))))('when the worker is killed $name and restarted ($keying), then the cycle completes once, forensics first', async (point) => {
    await clearFaults(env.pve.nodeRoot);
    if (point.slow) await setFault(env.pve.nodeRoot, 'slow_verbs');
    const queue = uniqueQueue('kill');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const { key, request, updateId } = keyFor(point.keying, 'cyc');
    const ctx: KillContext = {
      env,
      worker,
      workflowId: handle.workflowId,
      forensicsId: hostRequestId(handle.workflowId, key, '.f'),
      mutationId: hostRequestId(handle.workflowId, key, '.m'),
      callsBefore: invocationCount(env.pve),
    };
    const callsBefore = ctx.callsBefore;
    const logBefore = hostLog(env.pve).length;
    const armed = point.arm(ctx);
    let evidence: LogMatch | 'after-update';
    let replacement: WorkerProcess | undefined;
    try {
      const accepted = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: `kill ${point.name}`, operator: 'alice', ...request }], ...(updateId ? { updateId } : {}) });
      expect(accepted.key).toBe(key);
      evidence = await armed.killed;
      if (evidence === 'after-update') {
        worker.killNow();
        evidence = { line: '(update accepted)', logAfterAction: hostLog(env.pve), callsAfterAction: invocations(env.pve.nodeRoot) };
      }
      await worker.exited;
      expect(worker.child.signalCode).toBe('SIGKILL');
      point.check(evidence, ctx);
      replacement = await workerFor(queue);
    } finally {
      armed.release?.();
    }
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 90_000);

    // Exactly one stop and one start ran on the host for this session.
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    const log = hostLog(env.pve).slice(logBefore);
    const at = (pattern: RegExp) => log.findIndex((line) => pattern.test(line));
    const forensicsDone = at(new RegExp(`event=forensics-done verb=forensics request=${re(ctx.forensicsId)} `));
    const stop = at(new RegExp(`event=verb-step verb=cycle request=${re(ctx.mutationId)} step="qm stop"`));
    expect(forensicsDone).toBeGreaterThan(-1);
    expect(stop).toBeGreaterThan(forensicsDone);
    expect(log.filter((line) => line.includes(`event=run-start verb=forensics request=${ctx.forensicsId}`))).toHaveLength(1);
    expect(log.filter((line) => line.includes(`event=run-start verb=cycle request=${ctx.mutationId}`))).toHaveLength(1);
    // Both captures (the workflow's .f and the host's own before the verb) read the VM before the stop.
    const calls = startedCalls(env.pve, callsBefore);
    const stopIndex = calls.findIndex((call) => call.argv[0] === 'stop');
    const configReadsBeforeStop = calls.slice(0, stopIndex).filter((call) => call.argv[0] === 'config' && call.argv.includes('--current'));
    expect(configReadsBeforeStop).toHaveLength(2);

    const types = entries.map((e) => e.type);
    expect(entriesOf(entries, 'forensics')).toHaveLength(1);
    expect(entriesOf(entries, 'verb-result')).toHaveLength(1);
    expectInOrder(types, 'forensics', 'verb-result');
    const result = entriesOf(entries, 'verb-result')[0]!.result;
    expect(result.ok).toBe(true);
    expect(result.newPid).not.toBe(result.oldPid);
    expect(result.replayed).toBe(point.replayed.mutation);
    if (point.replayed.forensics !== undefined) expect(entriesOf(entries, 'forensics')[0]!.result.replayed).toBe(point.replayed.forensics);
    expect(entriesOf(entries, 'outcome-unknown')).toHaveLength(0);

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
    await replacement.stop();
  }, 120_000);
});

type SingleVerb = 'reset' | 'stop' | 'start';

interface VerbKillPoint extends Omit<KillPoint, 'arm'> {
  verb: SingleVerb;
  /** The VM's state when the session starts: a start needs a stopped VM, a reset or stop a running one. */
  vmRunning: boolean;
  arm(ctx: KillContext): { killed: Promise<LogMatch>; release?: () => void };
}

/** Kills the worker the moment the host starts `qm <verb>` for the session's mutation. */
const duringQmStep = (verb: SingleVerb): Pick<VerbKillPoint, 'arm' | 'check'> => ({
  arm: (ctx) => ({ killed: onHostLogLine(ctx.env.pve, new RegExp(`event=verb-step verb=${verb} request=${re(ctx.mutationId)} step="qm ${verb}"`), () => ctx.worker.killNow()).matched }),
  check: (evidence, ctx) => {
    expect(has(evidence.logAfterAction, new RegExp(`event=forensics-done verb=forensics request=${re(ctx.forensicsId)} `))).toBe(true);
    expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=${verb} request=${re(ctx.mutationId)} step="qm ${verb}"`))).toBe(false);
    // slow_verbs: the qm call had not finished when the worker died.
    const calls = evidence.callsAfterAction.slice(ctx.callsBefore);
    expect(calls.filter((call) => call.argv[0] === verb && call.exit !== undefined)).toHaveLength(0);
  },
});

const VERB_KILL_POINTS: VerbKillPoint[] = [
  {
    name: 'during forensics before a reset',
    verb: 'reset',
    vmRunning: true,
    slow: false,
    replayed: { forensics: true, mutation: false },
    arm: (ctx) => ({ killed: onHostLogLine(ctx.env.pve, new RegExp(`event=forensics-start verb=forensics request=${re(ctx.forensicsId)}$`), () => ctx.worker.killNow()).matched }),
    check: (evidence, ctx) => {
      expect(has(evidence.logAfterAction, new RegExp(`event=forensics-done verb=forensics request=${re(ctx.forensicsId)} `))).toBe(false);
      expect(has(evidence.logAfterAction, new RegExp(`request=${re(ctx.mutationId)}\\b`))).toBe(false);
    },
  },
  { name: 'during qm reset', verb: 'reset', vmRunning: true, slow: true, replayed: { forensics: false, mutation: true }, ...duringQmStep('reset') },
  { name: 'during qm stop (verb stop)', verb: 'stop', vmRunning: true, slow: true, replayed: { forensics: false, mutation: true }, ...duringQmStep('stop') },
  { name: 'during qm start (verb start, VM stopped first)', verb: 'start', vmRunning: false, slow: true, replayed: { forensics: false, mutation: true }, ...duringQmStep('start') },
];

/** Brings VM 102 to the wanted state through the lab's `qm` (logged like any qm call; no faults set). */
async function vmShouldBe(running: boolean) {
  if (readVm(env.pve.nodeRoot).running === running) return;
  await runQm(env.pve.nodeRoot, [running ? 'start' : 'stop', '102']);
  expect(readVm(env.pve.nodeRoot).running).toBe(running);
}

describe('a worker SIGKILLed during a reset, a stop or a start', () => {
  it.each(VERB_KILL_POINTS.flatMap((point) => KEYINGS.map((keying) => ({ ...point, keying }))))('when the worker is killed $name and restarted ($keying), then the $verb completes once, forensics first', async (point) => {
    await clearFaults(env.pve.nodeRoot);
    await vmShouldBe(point.vmRunning);
    if (point.slow) await setFault(env.pve.nodeRoot, 'slow_verbs');
    const pidBefore = readVm(env.pve.nodeRoot).pid;
    const queue = uniqueQueue(`kill-${point.verb}`);
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const { key, request, updateId } = keyFor(point.keying, point.verb.slice(0, 3));
    const ctx: KillContext = {
      env,
      worker,
      workflowId: handle.workflowId,
      forensicsId: hostRequestId(handle.workflowId, key, '.f'),
      mutationId: hostRequestId(handle.workflowId, key, '.m'),
      callsBefore: invocationCount(env.pve),
    };
    const callsBefore = ctx.callsBefore;
    const logBefore = hostLog(env.pve).length;
    const armed = point.arm(ctx);
    let replacement: WorkerProcess | undefined;
    try {
      const accepted = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: point.verb, reason: `kill ${point.name}`, operator: 'alice', ...request }], ...(updateId ? { updateId } : {}) });
      expect(accepted.key).toBe(key);
      const evidence = await armed.killed;
      await worker.exited;
      expect(worker.child.signalCode).toBe('SIGKILL');
      point.check(evidence, ctx);
      replacement = await workerFor(queue);
    } finally {
      armed.release?.();
    }
    // A stop ends at its verb-result; a reset or start goes on to wait for the devvm.
    const last = point.verb === 'stop' ? 'verb-result' : 'devvm-wait';
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === last || e.type === 'outcome-unknown' || e.type === 'verb-failed' || e.type === 'skipped'), 90_000);

    // Exactly one qm <verb> ran on the host for this session.
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual([point.verb]);
    const log = hostLog(env.pve).slice(logBefore);
    const at = (pattern: RegExp) => log.findIndex((line) => pattern.test(line));
    const forensicsDone = at(new RegExp(`event=forensics-done verb=forensics request=${re(ctx.forensicsId)} `));
    const step = at(new RegExp(`event=verb-step verb=${point.verb} request=${re(ctx.mutationId)} step="qm ${point.verb}"`));
    expect(forensicsDone).toBeGreaterThan(-1);
    expect(step).toBeGreaterThan(forensicsDone);
    expect(log.filter((line) => line.includes(`event=run-start verb=forensics request=${ctx.forensicsId}`))).toHaveLength(1);
    expect(log.filter((line) => line.includes(`event=run-start verb=${point.verb} request=${ctx.mutationId}`))).toHaveLength(1);
    // Both captures (the workflow's .f and the host's own before the verb) read the VM before it.
    const calls = startedCalls(env.pve, callsBefore);
    const verbIndex = calls.findIndex((call) => call.argv[0] === point.verb);
    expect(calls.slice(0, verbIndex).filter((call) => call.argv[0] === 'config' && call.argv.includes('--current'))).toHaveLength(2);

    const types = entries.map((e) => e.type);
    expect(entriesOf(entries, 'forensics')).toHaveLength(1);
    expect(entriesOf(entries, 'verb-result')).toHaveLength(1);
    expectInOrder(types, 'forensics', 'verb-result');
    const result = entriesOf(entries, 'verb-result')[0]!.result;
    expect(result).toMatchObject({ ok: true, verb: point.verb, requestId: ctx.mutationId, replayed: point.replayed.mutation });
    if (point.replayed.forensics !== undefined) expect(entriesOf(entries, 'forensics')[0]!.result.replayed).toBe(point.replayed.forensics);
    expect(entriesOf(entries, 'outcome-unknown')).toHaveLength(0);
    const vm = readVm(env.pve.nodeRoot);
    if (point.verb === 'reset') {
      // A warm reset: the same QEMU process before, after, and now.
      expect(result.pidUnchanged).toBe(true);
      expect(result.oldPid).toBe(pidBefore);
      expect(result.newPid).toBe(pidBefore);
      expect(vm.pid).toBe(pidBefore);
    } else if (point.verb === 'stop') {
      expect(result.oldPid).toBe(pidBefore);
      expect(result.after.status).toBe('stopped');
      expect(result.newPid).toBeNull();
      expect(vm.running).toBe(false);
    } else {
      expect(pidBefore).toBeNull();
      expect(result.newPid).toEqual(expect.any(Number));
      expect(result.after.status).toBe('running');
      expect(vm.pid).toBe(result.newPid);
    }

    // 'recovered' needs a devvm seen reachable after the verb; a stop never waits for it.
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'done' });
    expect(await handle.result()).toBe(point.verb === 'stop' ? 'ended' : 'recovered');
    await replacement.stop();
  }, 90_000);
});

describe('the Temporal dev server restarted mid-session', () => {
  it('when the server restarts during a slow cycle and again between two acknowledged updates, then the session continues and every acknowledged message and request is in the transcript', async () => {
    await clearFaults(env.pve.nodeRoot);
    await setFault(env.pve.nodeRoot, 'slow_verbs');
    const queue = uniqueQueue('restart');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const callsBefore = invocationCount(env.pve);
    const mutationId = hostRequestId(handle.workflowId, 'cyc', '.m');
    const say = async (text: string) => ({ text, seq: (await handle.executeUpdate(operatorMessageUpdate, { args: [{ text, operator: 'alice' }] })).seq });

    const acknowledged = [await say('before the first restart')];
    const stopping = onHostLogLine(env.pve, new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`), () => undefined).matched;
    const request = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'server restart test', operator: 'alice', requestKey: 'cyc' }] });
    expect(request).toEqual({ key: 'cyc', approvalId: null });
    await stopping;
    // Restart while the host runs `qm stop`: the cycle's activity is in flight on the worker.
    const serverBefore = env.temporal.process.pid;
    await env.temporal.restart();
    expect(env.temporal.process.pid).not.toBe(serverBefore);
    acknowledged.push(await say('after the first restart'));
    // A signal is acknowledged once the server has persisted it.
    await handle.signal(requestVerbSignal, { verb: 'status', reason: 'after the restart', operator: 'bob', requestKey: 'st1' });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait') && all.some((e) => e.type === 'status' && e.key === 'st1'), 90_000);

    // Between two acknowledged updates, with nothing in flight.
    acknowledged.push(await say('before the second restart'));
    await env.temporal.restart();
    acknowledged.push(await say('after the second restart'));

    const entries = await transcriptOf(handle);
    for (const message of acknowledged) {
      expect(entries.find((e) => e.seq === message.seq)).toMatchObject({ type: 'operator-message', text: message.text, operator: 'alice' });
    }
    expect(entries.filter((e) => e.type === 'request').map((e) => (e.type === 'request' ? e.item.key : ''))).toEqual(['cyc', 'st1']);
    const types = entries.map((e) => e.type);
    expect(entriesOf(entries, 'verb-result')).toHaveLength(1);
    expect(entriesOf(entries, 'forensics')).toHaveLength(1);
    expectInOrder(types, 'forensics', 'verb-result');
    expect(entriesOf(entries, 'verb-result')[0]!.result.ok).toBe(true);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    // Sequence numbers are gap-free: nothing acknowledged was dropped and re-numbered.
    expect(entries.map((e) => e.seq)).toEqual(entries.map((_, i) => i + 1));

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'done' });
    expect(await handle.result()).toBe('recovered');
    await worker.stop();
  }, 150_000);
});

describe('retries of a mutating verb', () => {
  it('when the SSH connection drops while the host runs the stop, then the retried attempt re-attaches to the host journal: a replayed result, one stop and one start', async () => {
    await clearFaults(env.pve.nodeRoot);
    await setFault(env.pve.nodeRoot, 'slow_verbs');
    const queue = uniqueQueue('reattach');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const mutationId = hostRequestId(handle.workflowId, 'cyc', '.m');
    const callsBefore = invocationCount(env.pve);
    const logBefore = hostLog(env.pve).length;
    let front = 0;
    let dropped: number[] = [];
    const received = onHostLogLine(env.pve, new RegExp(`event=received verb=cycle request=${re(mutationId)} `), (line) => {
      front = Number(/ pid=(\d+) /.exec(line)?.[1]);
    });
    const stopping = onHostLogLine(env.pve, new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`), () => {
      dropped = dropSshConnectionOf(front, env.pve.sshd.process.pid as number);
    });
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'connection drop test', operator: 'alice', requestKey: 'cyc' }] });
    await received.matched;
    const evidence = await stopping.matched;
    expect(front).toBeGreaterThan(0);
    expect(dropped.length).toBeGreaterThan(0);
    expect(has(evidence.logAfterAction, new RegExp(`event=verb-step-done verb=cycle request=${re(mutationId)} step="qm stop"`))).toBe(false);

    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 90_000);
    const result = entriesOf(entries, 'verb-result')[0]!.result;
    expect(result.ok).toBe(true);
    expect(result.replayed).toBe(true);
    expect(result.requestId).toBe(mutationId);
    const log = hostLog(env.pve).slice(logBefore);
    // Two attempts reached the host; it ran the verb once and replayed it for the second.
    expect(log.filter((line) => line.includes(`event=received verb=cycle request=${mutationId} `))).toHaveLength(2);
    expect(log.filter((line) => line.includes(`event=run-start verb=cycle request=${mutationId}`))).toHaveLength(1);
    expect(log.filter((line) => line.includes(`event=replayed verb=cycle request=${mutationId}`))).toHaveLength(1);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    const types = entries.map((e) => e.type);
    expect(entriesOf(entries, 'forensics')).toHaveLength(1);
    expectInOrder(types, 'forensics', 'verb-result');

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'done' });
    expect(await handle.result()).toBe('recovered');
  }, 120_000);

  it('when the PVE host becomes unreachable right after it started the verb and every retry fails, then the outcome is recorded as unknown, the session pauses with a reason and nothing runs twice', async () => {
    // Its own PVE host: this one's sshd is stopped for good.
    const pve = await startPveHost({ dir: join(env.dir, 'pve-unknown'), clientPublicKey: env.clientKey.publicKey });
    try {
      await setFault(pve.nodeRoot, 'slow_verbs');
      // The lab's own `qm start` that brought VM 102 up is in the log too: count from here.
      const callsBefore = invocationCount(pve);
      const queue = uniqueQueue('unknown');
      await env.startWorker(queue, { pve: pve.target(await readFile(env.clientKey.privateKeyPath), userInfo().username) });
      // Every attempt fails at once (connection refused): keep the backoff short.
      const handle = await env.startSession(queue, { timing: { ...FAST_TIMING, retryMaximumIntervalSeconds: 1 } });
      const mutationId = hostRequestId(handle.workflowId, 'cyc', '.m');
      // The host's sshd dies (listener and the connection serving the verb) while the verb goes
      // on: what a client sees when the PVE host's network or sshd goes away mid-verb.
      let front = 0;
      const received = onHostLogLine(pve, new RegExp(`event=received verb=cycle request=${re(mutationId)} `), (line) => {
        front = Number(/ pid=(\d+) /.exec(line)?.[1]);
      });
      const stopping = onHostLogLine(pve, new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`), () => {
        const listener = pve.sshd.process.pid as number;
        process.kill(listener, 'SIGKILL');
        dropSshConnectionOf(front, listener);
      });
      await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'unknown outcome test', operator: 'alice', requestKey: 'cyc' }] });
      await received.matched;
      await stopping.matched;

      const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'paused'), 90_000);
      const unknown = entriesOf(entries, 'outcome-unknown');
      expect(unknown).toHaveLength(1);
      expect(unknown[0]).toMatchObject({ key: 'cyc', verb: 'cycle', status: null });
      expect(entriesOf(entries, 'verb-result')).toHaveLength(0);
      const types = entries.map((e) => e.type);
      expect(entriesOf(entries, 'forensics')).toHaveLength(1);
      expectInOrder(types, 'forensics', 'outcome-unknown', 'paused');
      expect(entriesOf(entries, 'paused')[0]).toMatchObject({ operator: 'system' });
      // The item is done once the VM's lease is settled after the unknown outcome (a moment later).
      const state = await eventually(async () => {
        const now = await stateOf(handle);
        return now.running === null ? now : undefined;
      }, 15_000, 'the cycle item finished');
      expect(state.paused).toBe(true);
      expect(state.pauseReason).toMatch(/outcome of cycle is unknown/);

      // The host finished its single run on its own; no retry ever reached it again.
      await eventually(() => (hostLog(pve).some((line) => line.includes(`event=verb-done verb=cycle request=${mutationId}`)) ? true : undefined), 30_000, 'the host finished the cycle').catch(
        (error: Error) => {
          throw new Error(`${error.message}\nhost log:\n${hostLog(pve).slice(-15).join('\n')}`);
        },
      );
      await sleep(1_000);
      expect(mutatingVerbsRun(pve, callsBefore)).toEqual(['stop', 'start']);
      expect(hostLog(pve).filter((line) => line.includes(`event=received verb=cycle request=${mutationId} `))).toHaveLength(1);

      await handle.signal(endSessionSignal, { operator: 'alice', reason: 'checked by hand' });
      expect(await handle.result()).toBe('ended');
    } finally {
      await pve.stop();
    }
  }, 120_000);
});
