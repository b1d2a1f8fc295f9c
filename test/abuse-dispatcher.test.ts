// Abuse suite, part 1: property-based fuzzing of the PVE forced-command dispatcher
// (host/pve/pve-dispatch) with the real install config over the lab's qm stand-in, which drives
// a real QEMU (VM 102 without a guest). Thousands of generated inputs — random bytes, near-misses
// of the verb grammar, injection suffixes, homoglyphs, bad request ids, over-long commands — and a
// few valid read-only commands.
//
// Two ways in, the same script and the same config:
// - the bulk runs the dispatcher directly, exactly as sshd's forced command does
//   (SSH_ORIGINAL_COMMAND + SSH_CONNECTION set, the config path as argument 1);
// - a few hundred go through the real OpenSSH sshd with the real `command="…",restrict,from="…"`
//   authorized_keys line, as exec channels multiplexed over two ssh2 connections.
//
// The qm stand-in logs a `started` line for every call, so "zero mutations" is read from the
// record, not assumed: after the lab's own start of VM 102, no qm reset/stop/start ever starts,
// nothing but the qm calls of status and forensics ever runs, and the same QEMU process runs
// throughout.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DISPATCHER } from '../lab/pve-host.js';
import { readVm } from '../lab/pve/lab-vm.mjs';
import { invocations, isAlive, type Invocation } from '../lab/pve/pve-node.mjs';
import { ChannelRunner, mapLimit, type ChannelResult } from './helpers/abuse-ssh.js';
import { bulkInputs, forensicsInputs, grammatical, isMutating, rejectedInputs, statusInputs, type FuzzInput } from './helpers/abuse-inputs.js';
import { scaled, scaledTimeout } from './helpers/abuse-scale.js';
import { startPveFixture, waitFor, type PveFixture } from './helpers/fixtures.js';

// Bounded: at scale 1, 1,824 direct + 176 through sshd + 2 forensics + 11 NUL/huge = 2,013
// inputs; ~40 s on 2 idle cores. ABUSE_SCALE=5 (npm run abuse): 10,013.
// (Through sshd each input costs ~80 ms, most of it the account's login shell starting.)
const DIRECT_BATCH = 24;
const DIRECT_RUNS = scaled(76);
const SSHD_BATCH = 16;
const SSHD_RUNS = scaled(11);
/** Channels open at once per connection (sshd allows 10; more only thrashes two cores). */
const SSHD_LANES = 4;
const FORENSICS_DIRECT = 1;
const FORENSICS_SSHD = 1;

/** The qm calls status and forensics make; anything else would be a mutation or worse. */
const READ_ONLY_QM = new Set(['status', 'config', 'pending', 'guest']);
const MUTATING_QM = new Set(['reset', 'stop', 'start']);
const FAKE_CONNECTION = '198.51.100.7 50000 127.0.0.1 22';

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: string;
}

const counts = {
  generated: 0,
  direct: 0,
  throughSshd: 0,
  rejected: 0,
  acceptedStatus: 0,
  acceptedForensics: 0,
  refusedBeforeDispatcher: 0,
  mutations: 0,
  qmCalls: 0,
  byKind: new Map<string, number>(),
};

function record(input: FuzzInput, via: 'direct' | 'sshd'): void {
  counts.generated++;
  counts[via === 'direct' ? 'direct' : 'throughSshd']++;
  counts.byKind.set(input.kind, (counts.byKind.get(input.kind) ?? 0) + 1);
}

/** The forced command run the way sshd runs it, without the network. */
function runDirect(configFile: string, command: string): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      DISPATCHER,
      [configFile],
      { env: { SSH_ORIGINAL_COMMAND: command, SSH_CONNECTION: FAKE_CONNECTION }, timeout: 30_000, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr, ...(error && code === null ? { error: error.message } : {}) });
      },
    );
  });
}

/** The one assertion every input gets: rejected with 64 unless the oracle says read-only valid. */
function expectAnswer(input: FuzzInput, out: Outcome | ChannelResult): void {
  const label = `${input.kind}: ${JSON.stringify(input.command.slice(0, 200))} -> ${JSON.stringify(out).slice(0, 400)}`;
  const parsed = grammatical(input.command);
  // The generators never produce a grammatical mutation; this guards the guard.
  expect(isMutating(input.command), label).toBe(false);
  expect(out.error, label).toBeUndefined();
  // One JSON document on stdout (forensics embeds its saved document, so it spans lines).
  const answer = JSON.parse(out.stdout) as { ok: boolean; result: string; verb?: string; reason?: string; vm?: { status: string }; forensics?: { sha256: string } };
  if (parsed === null) {
    expect(out.code, label).toBe(64);
    expect(out.stdout.split('\n').filter(Boolean), label).toHaveLength(1);
    expect(answer, label).toMatchObject({ ok: false, result: 'rejected', reason: expect.any(String) });
    // The last stderr line is the dispatcher's (over sshd, the account's login shell may print first).
    expect(out.stderr.split('\n').filter(Boolean).at(-1), label).toBe(`breakglass: rejected: ${answer.reason}`);
    counts.rejected++;
  } else if (parsed.verb === 'status') {
    expect(out.code, label).toBe(0);
    expect(answer, label).toMatchObject({ ok: true, result: 'ok', verb: 'status', vm: { status: 'running' } });
    counts.acceptedStatus++;
  } else if (parsed.verb === 'forensics') {
    expect(out.code, label).toBe(0);
    expect(answer, label).toMatchObject({ ok: true, result: 'ok', verb: 'forensics', forensics: { sha256: expect.stringMatching(/^[0-9a-f]{64}$/) } });
    counts.acceptedForensics++;
  } else {
    throw new Error(`never sent: ${label}`);
  }
}

describe('abuse: the PVE dispatcher under generated input (real script, real config, real sshd)', () => {
  let fx: PveFixture;
  let canary: string;
  let pidBefore: number | null;
  /** The qm record as the lab left it: its own `qm start` of VM 102. */
  let labCalls: Invocation[];
  const runners: ChannelRunner[] = [];

  beforeAll(async () => {
    fx = await startPveFixture('abuse-dispatch');
    canary = join(fx.dir, 'CANARY');
    pidBefore = readVm(fx.host.nodeRoot).pid;
    expect(pidBefore).toBeGreaterThan(0);
    labCalls = invocations(fx.host.nodeRoot);
    // The record is really read (and holds the lab's start, the one mutation not ours).
    expect(labCalls.map((call) => `${call.argv.join(' ')} -> ${call.exit ?? 'started'}`)).toEqual(['start 102 -> started', 'start 102 -> 0']);
  });

  afterAll(async () => {
    for (const runner of runners) runner.close();
    const kinds = [...counts.byKind.entries()].sort((a, b) => b[1] - a[1]);
    console.log(
      [
        'abuse-dispatcher counts:',
        `  inputs generated and sent: ${counts.generated} (direct ${counts.direct}, through sshd ${counts.throughSshd})`,
        `  rejected with exit 64 + JSON "rejected": ${counts.rejected}`,
        `  refused before the dispatcher (NUL byte, over the exec limit): ${counts.refusedBeforeDispatcher}`,
        `  accepted read-only: status ${counts.acceptedStatus}, forensics ${counts.acceptedForensics}`,
        `  qm calls recorded: ${counts.qmCalls}; mutations (qm reset/stop/start): ${counts.mutations}`,
        '  by family:',
        ...kinds.map(([kind, n]) => `    ${String(n).padStart(5)}  ${kind}`),
      ].join('\n'),
    );
    await fx?.stop();
  });

  it(`when ${(DIRECT_BATCH * DIRECT_RUNS).toLocaleString('en')} generated inputs reach the forced command directly, then every non-grammatical one exits 64 with JSON "rejected" and valid statuses answer`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(bulkInputs({ canary }), { minLength: DIRECT_BATCH, maxLength: DIRECT_BATCH }), async (batch) => {
        const outcomes = await mapLimit(batch, 8, (input) => runDirect(fx.host.configFile, input.command));
        batch.forEach((input, i) => {
          record(input, 'direct');
          expectAnswer(input, outcomes[i] as Outcome);
        });
      }),
      { numRuns: DIRECT_RUNS, endOnFailure: true },
    );
    expect(existsSync(canary)).toBe(false);
  }, scaledTimeout(80_000));

  it(`when ${(SSHD_BATCH * SSHD_RUNS).toLocaleString('en')} generated inputs come through the real sshd (exec channels on two connections), then the same holds`, async () => {
    runners.push(await ChannelRunner.open(fx.target), await ChannelRunner.open(fx.target));
    const perRunner = SSHD_BATCH / runners.length;
    await fc.assert(
      // Each batch: generated inputs plus one valid status, so status is also proven over sshd.
      fc.asyncProperty(fc.tuple(fc.array(bulkInputs({ canary }), { minLength: SSHD_BATCH - 1, maxLength: SSHD_BATCH - 1 }), statusInputs).map(([inputs, status]) => [...inputs, status]), async (batch) => {
        const outcomes = await Promise.all(
          runners.map((runner, r) => mapLimit(batch.slice(r * perRunner, (r + 1) * perRunner), SSHD_LANES, (input) => runner.exec(input.command))),
        );
        batch.forEach((input, i) => {
          record(input, 'sshd');
          expectAnswer(input, outcomes[Math.floor(i / perRunner)]?.[i % perRunner] as ChannelResult);
        });
      }),
      { numRuns: SSHD_RUNS, endOnFailure: true },
    );
    for (const runner of runners) expect(runner.alive).toBe(true);
    expect(existsSync(canary)).toBe(false);
  }, scaledTimeout(80_000));

  it('when a generated forensics request (with or without a request id) arrives, then it captures and answers, directly and over sshd', async () => {
    // Forensics holds the host lock for a few seconds: run them one at a time, after the bulk.
    const samples = fc.sample(forensicsInputs, FORENSICS_DIRECT + FORENSICS_SSHD);
    for (const [i, input] of samples.entries()) {
      const viaSshd = i >= FORENSICS_DIRECT;
      record(input, viaSshd ? 'sshd' : 'direct');
      expectAnswer(input, viaSshd ? await (runners[0] as ChannelRunner).exec(input.command, 30_000) : await runDirect(fx.host.configFile, input.command));
    }
  }, 60_000);

  /**
   * Waits until every detached run on the host has logged its end: a run publishes its result
   * a moment before it logs `verb-done`, so a caller can have the answer before the log has it.
   */
  async function hostQuiet(): Promise<void> {
    await waitFor('every run on the host to log its end', async () => {
      const log = await fx.log();
      const count = (event: string) => log.filter((line) => line.includes(` event=${event} `)).length;
      return count('run-start') === count('verb-done') ? true : undefined;
    });
  }

  it('when a command carries a NUL byte or exceeds the exec limit, then sshd refuses it before the dispatcher and nothing runs', async () => {
    await hostQuiet();
    const logBefore = (await fx.log()).length;
    const nul = fc.sample(
      fc
        .tuple(fc.constantFrom('status', 'reset', 'cycle', 'stop', 'start'), rejectedInputs({ canary }), fc.constantFrom('', 'reset', 'cycle abcdefgh1'))
        .map(([verb, tail, after]) => ({
          kind: 'NUL byte',
          command: `${verb}\0${tail.command.slice(0, 20)}${after}`,
        }))
        // A NUL as the very last byte is another case (sshd strips it; see the next test).
        .filter((input) => input.command.indexOf('\0') < input.command.length - 1),
      6,
    );
    for (const input of nul) {
      // sshd drops the whole connection on a NUL in the command: one connection per input.
      const runner = await ChannelRunner.open(fx.target);
      const out = await runner.exec(input.command, 10_000);
      runner.close();
      record(input, 'sshd');
      expect(out.code, JSON.stringify(input.command)).toBeNull();
      expect(out.error).toBeDefined();
      counts.refusedBeforeDispatcher++;
    }
    // Past Linux's 128 KiB limit for one environment string, sshd cannot exec the forced
    // command at all (the command travels in SSH_ORIGINAL_COMMAND); below it, the dispatcher rejects.
    const runner = await ChannelRunner.open(fx.target);
    for (const size of [1_024, 65_536, 131_000, 140_000, 200_000]) {
      const input = { kind: 'over-long (huge)', command: `cycle ${'a'.repeat(size)}` };
      const out = await runner.exec(input.command, 15_000);
      record(input, 'sshd');
      expect(out.code, `size ${size}: ${JSON.stringify(out).slice(0, 300)}`).not.toBe(0);
      if (out.code === 64) expectAnswer(input, out);
      else counts.refusedBeforeDispatcher++;
    }
    runner.close();
    const newLines = (await fx.log()).slice(logBefore);
    expect(newLines.every((line) => / event=rejected /.test(line)), newLines.join('\n')).toBe(true);
  }, 60_000);

  it('when the only NUL byte is the last one, then sshd strips it and the dispatcher gets the words before it, through the same grammar', async () => {
    // OpenSSH reads the exec command as a C string and accepts a NUL as its final byte
    // (sshbuf_get_cstring): `status\0` arrives as `status`. Not a way around the grammar: what
    // arrives is checked like any command, and the key's holder could send the bare words anyway
    // (the client never sends a NUL). Read-only verbs only here: this suite mutates nothing.
    await hostQuiet();
    const logBefore = (await fx.log()).length;
    const runner = await ChannelRunner.open(fx.target);
    const status = await runner.exec('status\0', 15_000);
    const rejected = await runner.exec('status fx-x\0', 15_000);
    runner.close();
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ ok: true, result: 'ok', verb: 'status', vm: { status: 'running' } });
    expect(rejected.code).toBe(64);
    expect(JSON.parse(rejected.stdout)).toMatchObject({ ok: false, result: 'rejected', reason: expect.stringContaining('bad request id') });
    counts.rejected++;
    expect((await fx.log()).slice(logBefore)).toEqual([
      expect.stringMatching(/ event=received verb=status request=- /),
      expect.stringMatching(/ event=rejected .*received="status fx-x"/),
    ]);
  }, 30_000);

  it('after everything: zero mutations, only status/forensics qm calls, the VM untouched, every rejection logged', async () => {
    const record = invocations(fx.host.nodeRoot);
    expect(record.slice(0, labCalls.length)).toEqual(labCalls);
    const calls = record.slice(labCalls.length).filter((call) => call.started);
    counts.qmCalls = calls.length;
    counts.mutations = calls.filter((call) => MUTATING_QM.has(call.argv[0] ?? '')).length;
    expect(counts.mutations).toBe(0);
    expect(calls.filter((call) => !READ_ONLY_QM.has(call.argv[0] ?? '')).map((call) => call.argv.join(' '))).toEqual([]);
    expect(calls.filter((call) => !call.argv.includes('102'))).toEqual([]);
    expect(counts.acceptedStatus).toBeGreaterThan(0);
    expect(counts.acceptedForensics).toBe(FORENSICS_DIRECT + FORENSICS_SSHD);

    // Every status and forensics call ran its qm calls to the end (none hung or was killed).
    expect(record.slice(labCalls.length).filter((call) => call.exit !== undefined)).toHaveLength(calls.length);
    expect(calls.length).toBeGreaterThan(0);

    // The VM: same real QEMU process, still running.
    const vm = readVm(fx.host.nodeRoot);
    expect(vm).toMatchObject({ running: true, pid: pidBefore });
    expect(isAlive(pidBefore as number)).toBe(true);

    // The host's own record: only status and forensics were received, no verb ever stepped,
    // and each rejection is one log line.
    const log = await fx.log();
    const received = log.filter((line) => / event=received /.test(line)).map((line) => /verb=(\S+)/.exec(line)?.[1]);
    expect(new Set(received)).toEqual(new Set(['status', 'forensics']));
    expect(log.filter((line) => / event=(verb-step|verb-start|run-start) /.test(line) && !/verb=forensics/.test(line))).toEqual([]);
    expect(log.filter((line) => / event=rejected /.test(line))).toHaveLength(counts.rejected);

    // The journal holds forensics runs only.
    const requests = join(fx.host.stateDir, 'requests');
    const verbs = readdirSync(requests).filter((name) => !name.startsWith('.')).map((name) => readFileSync(join(requests, name, 'verb'), 'utf8').trim());
    expect(new Set(verbs)).toEqual(new Set(['forensics']));

    expect(existsSync(canary)).toBe(false);
    expect(counts.generated).toBeGreaterThanOrEqual(2_000);
  });
});

// Keep the generator honest: the families really are what they claim (a cheap, pure check).
describe('abuse: the dispatcher input generators', () => {
  it('when sampled, then rejected families are never grammatical and status samples always are', () => {
    for (const input of fc.sample(rejectedInputs({ canary: '/tmp/x' }), 2_000)) expect(grammatical(input.command), JSON.stringify(input)).toBeNull();
    for (const input of fc.sample(statusInputs, 200)) expect(grammatical(input.command)).toMatchObject({ verb: 'status' });
    expect(grammatical('reset abcdefgh')).toMatchObject({ verb: 'reset' });
    expect(grammatical(`status a${'b'.repeat(127)}`)).toMatchObject({ verb: 'status' });
    expect(grammatical(`status a${'b'.repeat(128)}`)).toBeNull();
  });
});
