/**
 * Who must approve what. Pure functions: the workflow calls them, tests call them directly.
 */
import { isMutatingVerb } from './pve-types.js';
import type { SessionPolicy, WorkItem } from './session-types.js';

export interface ApprovalRule {
  /** Distinct operators who must approve before the item runs (0: runs at once). */
  required: number;
  why: string;
}

/**
 * First words of devvm commands the agent may run without approval under the default policy.
 * Only plain invocations qualify: no shell operators, redirections or substitutions, so
 * `cat /proc/pressure/io` runs on its own but `cat x > y` or `ps; reboot` waits.
 */
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

export function isReadOnlyCommand(command: string): boolean {
  const trimmed = command.trim();
  if (trimmed === '' || SHELL_SYNTAX.test(trimmed) || MUTATING_FLAGS.test(trimmed)) return false;
  const [first, second] = trimmed.split(/\s+/);
  if (first === 'systemctl') return second !== undefined && SYSTEMCTL_READ_ONLY.has(second);
  if (first === 'dmesg') return !/(^|\s)-(C|c|D|E|n)\b|--clear|--read-clear|--console/.test(trimmed);
  return first !== undefined && READ_ONLY_COMMANDS.has(first);
}

export function approvalRule(item: WorkItem, policy: SessionPolicy): ApprovalRule {
  // An operator the console did not vouch for is treated as the agent is: it needs approvals.
  const unverified = item.requestedBy.kind === 'operator' && item.requestedBy.unverified !== undefined;
  const byAgent = item.requestedBy.kind === 'agent' || unverified;
  const requester = unverified ? 'an unverified sender (straight through Temporal)' : 'the agent';
  if (item.kind === 'command') {
    if (!byAgent) return { required: 0, why: 'typed by an operator' };
    if (policy.devvmCommands === 'autonomous') return { required: 0, why: 'devvm commands run autonomously by policy' };
    return isReadOnlyCommand(item.command)
      ? { required: 0, why: 'read-only command on the allowlist' }
      : { required: 1, why: `${requester} wants to run a command outside the read-only allowlist` };
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
