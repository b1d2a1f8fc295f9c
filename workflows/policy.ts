/**
 * Who must approve what. Pure functions: the workflow calls them, tests call them directly.
 */
import { classifyCommand } from './allowlist-classifier.js';
import { isMutatingVerb } from './pve-types.js';
import type { SessionPolicy, WorkItem } from './session-types.js';

export interface ApprovalRule {
  /** Distinct operators who must approve before the item runs (0: runs at once). */
  required: number;
  why: string;
}

/**
 * Whether the agent may run a devvm command without approval under the default policy: every
 * word of it is on the allowlist (workflows/allowlist.ts), so `cat /proc/pressure/io` runs on
 * its own but `cat /proc/kmsg`, `tail -f x` or `ps; reboot` waits.
 */
export function isReadOnlyCommand(command: string): boolean {
  return classifyCommand(command).readOnly;
}

// The rule before the argument allowlist: first words only.
const READ_ONLY_COMMANDS = new Set([
  'uptime', 'dmesg', 'journalctl', 'ps', 'df', 'free', 'top', 'cat', 'ls', 'uname', 'who', 'w', 'last',
  'vmstat', 'iostat', 'mpstat', 'pidstat', 'lsblk', 'findmnt', 'ss', 'id', 'whoami', 'head', 'tail', 'grep',
  'wc', 'stat', 'du', 'lsof', 'nproc',
]);
// Deliberately absent although often harmless: date, hostname, ip, mount, timedatectl and
// loginctl all change the system with the right arguments.
const SYSTEMCTL_READ_ONLY = new Set(['status', 'is-active', 'is-failed', 'list-units', 'list-timers', 'show', '--failed']);
const SHELL_SYNTAX = /[;&|<>`$(){}\\\n\r*?[\]!~'"]/;
const MUTATING_FLAGS = /(^|\s)(-f|--follow|-w|--write|--rotate|--vacuum\S*|--flush|--sync)(\s|=|$)/;

/** Exists only for histories recorded before the patch 'argument-allowlist'. */
export function isReadOnlyCommandFirstWord(command: string): boolean {
  const trimmed = command.trim();
  if (trimmed === '' || SHELL_SYNTAX.test(trimmed) || MUTATING_FLAGS.test(trimmed)) return false;
  const [first, second] = trimmed.split(/\s+/);
  if (first === 'systemctl') return second !== undefined && SYSTEMCTL_READ_ONLY.has(second);
  if (first === 'dmesg') return !/(^|\s)-(C|c|D|E|n)\b|--clear|--read-clear|--console/.test(trimmed);
  return first !== undefined && READ_ONLY_COMMANDS.has(first);
}

/** `argumentAllowlist: false`: the first-word rule, for decisions recorded before the patch 'argument-allowlist'. */
export function approvalRule(item: WorkItem, policy: SessionPolicy, options: { argumentAllowlist?: boolean } = {}): ApprovalRule {
  // An operator the console did not vouch for is treated as the agent is: it needs approvals.
  const unverified = item.requestedBy.kind === 'operator' && item.requestedBy.unverified !== undefined;
  const byAgent = item.requestedBy.kind === 'agent' || unverified;
  const requester = unverified ? 'an unverified sender (straight through Temporal)' : 'the agent';
  if (item.kind === 'command') {
    if (!byAgent) return { required: 0, why: 'typed by an operator' };
    if (policy.devvmCommands === 'autonomous') return { required: 0, why: 'devvm commands run autonomously by policy' };
    if (options.argumentAllowlist === false) {
      return isReadOnlyCommandFirstWord(item.command)
        ? { required: 0, why: 'read-only command on the allowlist' }
        : { required: 1, why: `${requester} wants to run a command outside the read-only allowlist` };
    }
    const verdict = classifyCommand(item.command);
    return verdict.readOnly
      ? { required: 0, why: 'read-only command on the allowlist' }
      : { required: 1, why: `${requester} wants to run a command outside the read-only allowlist (${verdict.why})` };
  }
  if (!isMutatingVerb(item.verb)) return { required: 0, why: 'read-only verb' };
  switch (policy.mutatingVerbs) {
    case 'autonomous':
      return { required: 0, why: 'mutating verbs run autonomously by policy' };
    case 'approve':
      return byAgent
        ? { required: 1, why: `policy "approve": an operator must approve ${requester}'s ${item.verb}` }
        : { required: 0, why: 'requested by an operator under policy "approve"' };
    case 'two-person':
      return byAgent
        ? { required: 2, why: `policy "two-person": two operators must approve ${requester}'s ${item.verb}` }
        : { required: 1, why: `policy "two-person": a second operator must approve this ${item.verb}` };
  }
}

const STRICTNESS: Record<SessionPolicy['mutatingVerbs'], number> = { autonomous: 0, approve: 1, 'two-person': 2 };

/** Whether `next` lets anything happen with fewer eyes than `current` does. */
export function loosens(current: SessionPolicy, next: SessionPolicy): boolean {
  return (
    STRICTNESS[next.mutatingVerbs] < STRICTNESS[current.mutatingVerbs] ||
    (current.devvmCommands === 'allowlist' && next.devvmCommands === 'autonomous') ||
    next.toolCallsPerMessage > current.toolCallsPerMessage
  );
}

export const samePolicy = (a: SessionPolicy, b: SessionPolicy) =>
  a.mutatingVerbs === b.mutatingVerbs && a.devvmCommands === b.devvmCommands && a.toolCallsPerMessage === b.toolCallsPerMessage;
