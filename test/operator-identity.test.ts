/**
 * Who an operator is: a message counts as an operator's only when the console vouched for it
 * (server/attestation.ts). Forged through Temporal itself — the REAL `temporal` CLI, or a client
 * without the console's key — an approval, a verb or command request, a policy change and a
 * message are recorded as unverified with the sender's Temporal identity, and count for no one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attest, attestingInterceptor, checkAttestation } from '../server/attestation.js';
import { ATTESTATION_TTL_MS, approvalUpdate, requestCommandUpdate, requestVerbUpdate, setPolicyUpdate, stateQuery } from '../workflows/messages.js';
import { TEST_ATTESTATION_KEY } from './helpers/attestation-key.js';
import { cliOk, entriesOf, invocationCount, mutatingVerbsRun, sleep } from './helpers/fault-tools.js';
import { startSessionEnv, transcriptOf, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';
import { Client } from '@temporalio/client';

const key = TEST_ATTESTATION_KEY;

describe('attestations', () => {
  const message = { approvalId: 'a-u1', decision: 'approve', operator: 'bob' };

  it('when a signed message is checked, then it passes for its own session and message name only', () => {
    const signed = { ...message, attestation: attest(key, 'bg-1', 'approval', message) };
    expect(checkAttestation(key, 'bg-1', 'approval', signed)).toEqual({ ok: true });
    expect(checkAttestation(key, 'bg-2', 'approval', signed)).toEqual({ ok: false, why: 'attestation does not match this message' });
    expect(checkAttestation(key, 'bg-1', 'policy', signed)).toEqual({ ok: false, why: 'attestation does not match this message' });
    expect(checkAttestation(Buffer.from('another-key-another-key-another-key'), 'bg-1', 'approval', signed).ok).toBe(false);
  });

  it('when any field of a signed message is changed, added or removed, then the check fails', () => {
    const signed = { ...message, attestation: attest(key, 'bg-1', 'approval', message) };
    for (const forged of [
      { ...signed, operator: 'mallory' },
      { ...signed, decision: 'deny' },
      { ...signed, approvalId: 'a-u2' },
      { ...signed, reason: 'added' },
      { approvalId: signed.approvalId, decision: signed.decision, attestation: signed.attestation },
      { ...signed, attestation: { ...signed.attestation, nonce: 'other' } },
      { ...signed, attestation: { ...signed.attestation, issuedAt: signed.attestation.issuedAt + 1 } },
    ]) {
      expect(checkAttestation(key, 'bg-1', 'approval', forged).ok, JSON.stringify(forged)).toBe(false);
    }
  });

  it('when a message is unsigned, malformed, or older than the time limit, then the check says which', () => {
    expect(checkAttestation(key, 'bg-1', 'approval', message)).toEqual({ ok: false, why: 'sent without the console' });
    expect(checkAttestation(key, 'bg-1', 'approval', { ...message, attestation: { v: 2 } })).toEqual({ ok: false, why: 'malformed attestation' });
    expect(checkAttestation(key, 'bg-1', 'approval', null)).toEqual({ ok: false, why: 'not an object' });
    const old = Date.now() - ATTESTATION_TTL_MS - 1_000;
    const stale = { ...message, attestation: attest(key, 'bg-1', 'approval', message, old) };
    expect(checkAttestation(key, 'bg-1', 'approval', stale)).toMatchObject({ ok: false, why: expect.stringMatching(/^attestation expired/) });
  });

  it('when JSON reorders the keys on the way (as a data converter may), then the signature still holds', () => {
    const signed = { ...message, attestation: attest(key, 'bg-1', 'approval', message) };
    const reordered = { operator: 'bob', attestation: signed.attestation, decision: 'approve', approvalId: 'a-u1' };
    expect(checkAttestation(key, 'bg-1', 'approval', JSON.parse(JSON.stringify(reordered)))).toEqual({ ok: true });
  });
});

describe('through Temporal directly', () => {
  let env: SessionEnv;
  beforeAll(async () => {
    env = await startSessionEnv();
  }, 120_000);
  afterAll(async () => {
    await env?.teardown();
  });

  const temporalCli = (args: string[]) => cliOk(env, 'temporal', [...args, '--identity', 'mallory@laptop']);
  /** The client identity of the first update of this name, read from the history itself. */
  const updateSender = async (workflowId: string, name: string) => {
    const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
    const accepted = history.events?.find((event) => event.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === name);
    const identity = accepted?.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.meta?.identity;
    expect(identity).toMatch(/@/);
    return identity;
  };

  it('when an approval is forged with `temporal workflow update`, then it is recorded as unverified with the CLI identity, the cycle does not run, and a real approval still can', async () => {
    const queue = uniqueQueue('forged-approval');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' } });
    const before = invocationCount(env.pve);
    const asked = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'wedged', operator: 'alice' }] });
    expect(asked.approvalId).not.toBeNull();

    const forged = await temporalCli(['workflow', 'update', 'execute', '--workflow-id', handle.workflowId, '--name', 'approval', '--input', JSON.stringify({ approvalId: asked.approvalId, decision: 'approve', operator: 'bob' })]);
    expect(forged).toContain('executed:false');
    const recorded = await waitForTranscript(handle, (all) => entriesOf(all, 'approval').length === 1);
    // The identity is the one Temporal wrote into history with the update (the CLI sends its own
    // pid@host for updates, whatever --identity says).
    expect(entriesOf(recorded, 'approval')[0]).toMatchObject({ operator: 'bob', unverified: { identity: await updateSender(handle.workflowId, 'approval'), why: 'sent without the console' } });
    // A copied signature does not help either: it names another message.
    const copied = { approvalId: asked.approvalId, decision: 'approve', operator: 'carol', attestation: attest(key, handle.workflowId, 'approval', { approvalId: asked.approvalId, decision: 'approve', operator: 'dave' }) };
    await temporalCli(['workflow', 'update', 'execute', '--workflow-id', handle.workflowId, '--name', 'approval', '--input', JSON.stringify(copied)]);
    const both = await waitForTranscript(handle, (all) => entriesOf(all, 'approval').length === 2);
    expect(entriesOf(both, 'approval')[1]).toMatchObject({ operator: 'carol', unverified: { why: 'attestation does not match this message' } });
    await sleep(1_000);
    expect((await handle.query(stateQuery)).pendingApprovals).toHaveLength(1);
    expect(mutatingVerbsRun(env.pve, before)).toEqual([]);

    // The console's client (signed) approves for real: the cycle runs.
    const real = await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: asked.approvalId!, decision: 'approve', operator: 'bob' }] });
    expect(real.executed).toBe(true);
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'verb-result'), 90_000);
    expect(mutatingVerbsRun(env.pve, before)).toEqual(['stop', 'start']);
  });

  it('when a cycle is requested straight through Temporal (CLI signal, or a client without the key), then it is an unverified request that waits for the approvals an agent would need', async () => {
    const queue = uniqueQueue('forged-request');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'approve' } });
    const before = invocationCount(env.pve);
    await temporalCli(['workflow', 'signal', '--workflow-id', handle.workflowId, '--name', 'requestVerb', '--input', JSON.stringify({ verb: 'cycle', reason: 'by cli', operator: 'alice', requestKey: 'cli-cycle-1' })]);
    const raw = env.rawClient.workflow.getHandle(handle.workflowId);
    await raw.executeUpdate(requestCommandUpdate, { args: [{ command: 'sudo reboot', operator: 'alice' }] });
    const entries = await waitForTranscript(handle, (all) => entriesOf(all, 'approval-needed').length === 2);
    // Each is admitted when its check comes back, in either order.
    const signalled = entriesOf(entries, 'request').find((e) => e.item.kind === 'verb');
    const command = entriesOf(entries, 'request').find((e) => e.item.kind === 'command');
    expect(signalled!.item.requestedBy).toMatchObject({ kind: 'operator', name: 'alice', unverified: { identity: 'mallory@laptop', why: 'sent without the console' } });
    expect(command!.item.requestedBy).toMatchObject({ kind: 'operator', name: 'alice', unverified: { why: 'sent without the console' } });
    expect(entriesOf(entries, 'approval-needed').map((e) => e.required)).toEqual([1, 1]);
    await sleep(1_000);
    expect(mutatingVerbsRun(env.pve, before)).toEqual([]);
    expect(entriesOf(await transcriptOf(handle), 'command-result')).toEqual([]);
  });

  it('when the policy is changed straight through Temporal, then a loosening is refused and recorded, and a tightening applies at once, marked unverified', async () => {
    const queue = uniqueQueue('forged-policy');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'approve' } });
    await temporalCli(['workflow', 'update', 'execute', '--workflow-id', handle.workflowId, '--name', 'policy', '--input', JSON.stringify({ operator: 'alice', policy: { mutatingVerbs: 'autonomous' } })]);
    const refused = await waitForTranscript(handle, (all) => entriesOf(all, 'skipped').length === 1);
    const sender = await updateSender(handle.workflowId, 'policy');
    expect(entriesOf(refused, 'skipped')[0]!.why).toBe(`unverified (sent without the console; Temporal identity ${sender}): only an operator the console authenticated can loosen the policy`);
    expect((await handle.query(stateQuery)).policy.mutatingVerbs).toBe('approve');

    await temporalCli(['workflow', 'update', 'execute', '--workflow-id', handle.workflowId, '--name', 'policy', '--input', JSON.stringify({ operator: 'alice', policy: { mutatingVerbs: 'two-person' } })]);
    const tightened = await waitForTranscript(handle, (all) => entriesOf(all, 'policy-changed').length === 1);
    expect(entriesOf(tightened, 'policy-changed')[0]).toMatchObject({ operator: 'alice', policy: { mutatingVerbs: 'two-person' }, unverified: { why: 'sent without the console' } });
  });

  it('when a signed message is sent a second time (copied from history), then the copy is unverified: each signature is good once', async () => {
    const queue = uniqueQueue('replayed-signature');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'approve' } });
    // Capture exactly what the console's client sends, then send it again unchanged.
    let sent: unknown;
    const capturing = new Client({
      connection: env.client.connection,
      interceptors: { workflow: [attestingInterceptor(key), { startUpdate: (input, next) => ((sent = input.args[0]), next(input)) }] },
    });
    await capturing.workflow.getHandle(handle.workflowId).executeUpdate(setPolicyUpdate, { args: [{ operator: 'alice', policy: { mutatingVerbs: 'autonomous' } }] });
    await handle.executeUpdate(setPolicyUpdate, { args: [{ operator: 'bob', policy: { mutatingVerbs: 'approve' } }] });
    await env.rawClient.workflow.getHandle(handle.workflowId).executeUpdate(setPolicyUpdate, { args: [sent as never] });
    const entries = await waitForTranscript(handle, (all) => entriesOf(all, 'skipped').length === 1);
    expect(entriesOf(entries, 'policy-changed').map((e) => [e.operator, e.policy.mutatingVerbs, e.unverified])).toEqual([
      ['alice', 'autonomous', undefined],
      ['bob', 'approve', undefined],
    ]);
    expect(entriesOf(entries, 'skipped')[0]!.why).toContain('its attestation was used before (a replayed message)');
    expect((await handle.query(stateQuery)).policy.mutatingVerbs).toBe('approve');
  });
});
