/**
 * What the console suggests from the evidence (ui/src/lib/suggestions.ts): the prefilled reason
 * for a mutating verb and the first screen's next action, judged in order of urgency.
 */
import { describe, expect, it } from 'vitest';
import { nextStep, suggestedReasons } from '../ui/src/lib/suggestions.js';
import { fakeState } from './helpers/abuse-fakes.js';
import type { SessionState } from '../workflows/session-types.js';
import type { ForensicsResult, VmState } from '../workflows/pve-types.js';

const vm = (over: Partial<VmState> = {}): VmState => ({
  status: 'running',
  qmpstatus: 'running',
  pid: 4242,
  uptimeSeconds: 600,
  lock: '',
  pending: { present: false, lines: [] },
  qmp: 'answered',
  ...over,
});

const session = (over: Partial<SessionState> = {}): SessionState => ({
  ...fakeState('bg-test'),
  description: 'SSH to the devvm hangs',
  vm: vm(),
  vmCheckedAt: 1,
  agent: { enabled: true, reason: '', thinking: false, turns: 0, awaiting: [] },
  ...over,
});

const frozen = (qmpAnswered: boolean) => ({ at: 5, result: { summary: { qmpAnswered, ioVerdict: 'frozen', ioFrozen: true, stallSigns: ['D threads'] } } as unknown as ForensicsResult });

describe('reasons drawn from the evidence', () => {
  it('when forensics saw frozen I/O while QMP answered, then that is the first reason, before the report', () => {
    const reasons = suggestedReasons('cycle', { session: session(), forensics: frozen(true) });
    expect(reasons[0]).toBe('disk I/O frozen while QMP answers (forensics)');
    expect(reasons.at(-1)).toBe('reported: SSH to the devvm hangs');
  });

  it('when QMP was silent, the devvm unreachable and config staged, then each is offered, and staged config only for verbs that apply it', () => {
    const s = session({ vm: vm({ qmp: 'silent', pending: { present: true, lines: ['memory: 8192'] } }), devvmReachable: false });
    const cycle = suggestedReasons('cycle', { session: s, forensics: null });
    expect(cycle).toEqual(['QMP silent at the last look: qm status could not reach QEMU', 'devvm SSH not answering', 'apply the pending config (1 staged line)', 'reported: SSH to the devvm hangs']);
    expect(suggestedReasons('reset', { session: s, forensics: null })).not.toContain('apply the pending config (1 staged line)');
  });

  it('when nothing is known but the report, then the report is the reason, cut to the reason limit', () => {
    const long = 'x'.repeat(900);
    const [only, ...rest] = suggestedReasons('reset', { session: session({ vm: null, description: long }), forensics: null });
    expect(rest).toEqual([]);
    expect(only!.length).toBe(500);
    expect(only!.startsWith('reported: xxx')).toBe(true);
  });
});

describe('the next sensible action', () => {
  it('when approvals wait, then they come before everything, even frozen I/O', () => {
    const s = session({ pendingApprovals: [{ approvalId: 'a1' } as SessionState['pendingApprovals'][number]] });
    expect(nextStep({ session: s, forensics: frozen(true) }, true)).toMatchObject({ target: 'approvals', tone: 'warn' });
  });

  it('when I/O is frozen, then cycle; when QMP is silent, cycle; when the VM is stopped, start; when the devvm is unreachable with no evidence yet, forensics', () => {
    expect(nextStep({ session: session(), forensics: frozen(true) }, true)).toMatchObject({ target: 'verb', verb: 'cycle', tone: 'danger' });
    expect(nextStep({ session: session({ vm: vm({ qmp: 'silent' }) }), forensics: null }, true)).toMatchObject({ verb: 'cycle' });
    expect(nextStep({ session: session({ vm: vm({ status: 'stopped', qmp: null }) }), forensics: null }, true)).toMatchObject({ verb: 'start' });
    expect(nextStep({ session: session({ devvmReachable: false }), forensics: null }, true)).toMatchObject({ verb: 'forensics' });
  });

  it('when a mutation runs, the VM was never looked at, or the session ended, then there is nothing to press', () => {
    const running = session({ running: { item: { kind: 'verb', verb: 'cycle' } as never, since: 0 } });
    expect(nextStep({ session: running, forensics: frozen(true) }, true).target).toBe('none');
    expect(nextStep({ session: session({ vm: null }), forensics: null }, true).target).toBe('none');
    expect(nextStep({ session: session({ ended: true }), forensics: frozen(true) }, true).target).toBe('none');
  });

  it('when no agent is configured, then the console says to capture forensics first; with an idle agent, to ask it', () => {
    expect(nextStep({ session: session({ agent: { enabled: false, reason: 'no key', thinking: false, turns: 0, awaiting: [] } }), forensics: null }, false)).toMatchObject({
      verb: 'forensics',
      text: 'No agent in this session: capture forensics, then decide.',
    });
    expect(nextStep({ session: session(), forensics: null }, true).target).toBe('message');
  });
});
