/**
 * What each forced-command verb does, in the glossary's words. A reset is a warm reboot inside
 * the same QEMU process and never applies pending config; a cycle is stop→start with a new QEMU
 * process and applies it. Forensics always runs first, automatically, before any mutation.
 */
import { MUTATING_VERBS, PVE_VERBS } from '../../../workflows/pve-types.js';
import type { PveVerb } from './types.js';

export { PVE_VERBS };

export const isMutating = (verb: string): boolean => (MUTATING_VERBS as readonly string[]).includes(verb);

export interface VerbInfo {
  verb: PveVerb;
  label: string;
  /** One line for the button's description. */
  short: string;
  /** What the confirmation dialog explains. */
  explain: string[];
  /** QEMU process after the verb. */
  qemu: 'same' | 'new' | 'none' | 'untouched';
  appliesPending: boolean;
}

export const VERBS: Record<PveVerb, VerbInfo> = {
  status: {
    verb: 'status',
    label: 'Status',
    short: 'qm status: run state, QMP status, QEMU pid, pending config, lock',
    explain: ['Read-only: asks the PVE host for the VM state. Changes nothing.'],
    qemu: 'untouched',
    appliesPending: false,
  },
  forensics: {
    verb: 'forensics',
    label: 'Forensics',
    short: 'capture evidence now: qm status/config/pending, QMP, block stats sampled twice, guest diagnostics',
    explain: ['Read-only: a point-in-time diagnostic dump, saved on the PVE host with its sha256. Not a disk snapshot.'],
    qemu: 'untouched',
    appliesPending: false,
  },
  reset: {
    verb: 'reset',
    label: 'Reset',
    short: 'warm reboot in the SAME QEMU process; does NOT apply pending config',
    explain: [
      'A reset is a warm reboot of the guest (QMP system_reset): the SAME QEMU process keeps running, so the QEMU pid does not change.',
      'It does NOT apply pending (staged) VM config — only a cycle does.',
      'It will not fix a wedged QEMU process or an I/O stall (the 2026-06-11 class): for that, cycle.',
    ],
    qemu: 'same',
    appliesPending: false,
  },
  stop: {
    verb: 'stop',
    label: 'Stop',
    short: 'stop VM 102; the devvm is down until start',
    explain: [
      'Stops the VM: the QEMU process ends and the devvm is down until someone starts it again.',
      'qm stop applies pending config in its cleanup. Use cycle to stop and start in one step.',
    ],
    qemu: 'none',
    appliesPending: true,
  },
  start: {
    verb: 'start',
    label: 'Start',
    short: 'start a stopped VM 102 (a new QEMU process)',
    explain: ['Starts a stopped VM with a new QEMU process, which applies pending config. Fails if the VM is already running.'],
    qemu: 'new',
    appliesPending: true,
  },
  cycle: {
    verb: 'cycle',
    label: 'Cycle',
    short: 'stop → start: a NEW QEMU process; applies pending config',
    explain: [
      'A cycle is a full stop, then start: the old QEMU process ends and a NEW one starts (new pid).',
      'It applies pending (staged) VM config.',
      'This is the fix for a wedged QEMU / I/O stall (the 2026-06-11 incident), where a reset does not help.',
    ],
    qemu: 'new',
    appliesPending: true,
  },
};

export const FORENSICS_FIRST =
  'Forensics is captured automatically first (qm status/config/pending, QMP, block stats sampled twice, guest diagnostics), before anything changes.';
