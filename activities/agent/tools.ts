/**
 * The breakglass agent's tools, and nothing else: one devvm command tool and the six PVE verbs.
 * There is no web, fetch, file or other untrusted-input tool, by design (MISSION.md: the agent
 * has no prompt-injection vector it could be handed through a tool).
 *
 * The schemas are strict (every property typed, required fields listed, no additional
 * properties). The model's input is still validated here, because a model can emit malformed
 * or schema-violating input: validateToolCall turns it into a request or an error that goes
 * back to the model as a tool error, and nothing runs.
 */
import type { Tool } from '@anthropic-ai/sdk/resources/messages.js';
import {
  DEFAULT_COMMAND_TIMEOUT_SECONDS,
  MAX_COMMAND_LENGTH,
  MAX_COMMAND_TIMEOUT_SECONDS,
  MAX_REASON_LENGTH,
} from '../../workflows/messages.js';
import type { PveVerb } from '../../workflows/pve-types.js';

export const TOOL_NAMES = ['devvm_command', 'pve_status', 'pve_forensics', 'pve_reset', 'pve_stop', 'pve_start', 'pve_cycle'] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

/** The PVE verb each pve_* tool runs. */
export const TOOL_VERBS: Readonly<Record<Exclude<ToolName, 'devvm_command'>, PveVerb>> = {
  pve_status: 'status',
  pve_forensics: 'forensics',
  pve_reset: 'reset',
  pve_stop: 'stop',
  pve_start: 'start',
  pve_cycle: 'cycle',
};

const reasonProperty = {
  type: 'string',
  minLength: 1,
  maxLength: MAX_REASON_LENGTH,
  description: 'One line saying why, citing the evidence. Shown to the operators and kept in the session record.',
} as const;

function verbSchema(): Tool.InputSchema {
  return { type: 'object', properties: { reason: reasonProperty }, required: ['reason'], additionalProperties: false };
}

const FORENSICS_NOTE = 'Forensics are captured automatically before it runs; do not call pve_forensics just for that.';

/** The tool definitions sent with every request, in a fixed order (prompt caching). */
export const AGENT_TOOLS: readonly Tool[] = [
  {
    name: 'devvm_command',
    description: [
      'Run one shell command on the devvm (the guest being diagnosed) over SSH, as the breakglass user with sudo.',
      'Returns exit code, stdout and stderr; long output is capped (head + tail, the dropped byte count is stated) and secrets are redacted.',
      'Plain read-only commands (uptime, dmesg, journalctl, ps, df, free, cat, ls, systemctl status, ...) without pipes, redirections, ;, &&, quotes or other shell syntax run at once;',
      'anything else waits for an operator to approve it. Prefer several simple read-only commands over one pipeline.',
      'If the command times out or the devvm is unreachable, the guest is not answering: stop retrying commands and look at the VM from the PVE host (pve_status, pve_forensics).',
    ].join(' '),
    input_schema: {
      type: 'object',
      properties: {
        command: { type: 'string', minLength: 1, maxLength: MAX_COMMAND_LENGTH, description: 'The command line, run by the devvm user\'s shell.' },
        timeout_seconds: {
          type: 'integer',
          minimum: 1,
          maximum: MAX_COMMAND_TIMEOUT_SECONDS,
          description: `Enforced on the devvm; default ${DEFAULT_COMMAND_TIMEOUT_SECONDS}. Keep it short (5-15) while checking whether the guest answers.`,
        },
        reason: reasonProperty,
      },
      required: ['command', 'reason'],
      additionalProperties: false,
    },
  },
  {
    name: 'pve_status',
    description: [
      'Read VM state from the PVE host (qm status and qm pending): running or stopped, QMP status, QEMU pid, uptime, lock, and staged (pending) config.',
      'Read-only and quick. "running" proves little: a wedged QEMU still reports running.',
    ].join(' '),
    input_schema: { type: 'object', properties: {}, additionalProperties: false },
  },
  {
    name: 'pve_forensics',
    description: [
      'Capture forensics now: a point-in-time diagnostic dump (qm status/config/pending, a QMP query with two block-statistics samples, guest diagnostics) and its summary:',
      'whether QMP answers, the disk I/O verdict (frozen only when no block counter moved between the samples AND something else points at a stall: QEMU threads in D state, the guest agent silent, hung tasks on the guest console, I/O pressure; flat counters alone are what an idle guest shows), the QEMU threads, the guest agent.',
      'Read-only. Use it to tell a wedged QEMU or an I/O stall from a guest problem.',
      FORENSICS_NOTE,
    ].join(' '),
    input_schema: verbSchema(),
  },
  {
    name: 'pve_reset',
    description: [
      'Reset: a warm reset of the VM (qm reset, the virtual reset button). The SAME QEMU process keeps running (same pid) and staged pending config is NOT applied.',
      'Only for a guest hung at the OS level while QEMU is healthy (QMP answers, block I/O moves) and no pending config needs applying.',
      'It does not fix a wedged QEMU or stalled I/O: that needs pve_cycle. A reset is not a cycle.',
      FORENSICS_NOTE,
    ].join(' '),
    input_schema: verbSchema(),
  },
  {
    name: 'pve_stop',
    description: [
      'Stop the VM (qm stop, a hard power-off) and leave it stopped. Rarely what you want: to restart, use pve_cycle.',
      'Use only when the operators want the VM kept off.',
      FORENSICS_NOTE,
    ].join(' '),
    input_schema: verbSchema(),
  },
  {
    name: 'pve_start',
    description: [
      'Start the VM when it is stopped (qm start: a new QEMU process, pending config applied). Fails with "already running" when it runs.',
      FORENSICS_NOTE,
    ].join(' '),
    input_schema: verbSchema(),
  },
  {
    name: 'pve_cycle',
    description: [
      'Cycle the VM: a full stop then start, which spawns a NEW QEMU process (new pid) and applies staged pending config. Not a reset, not a reboot.',
      'Use when QEMU is wedged (QMP does not answer, the process is stuck), when disk I/O is stalled (block stats frozen while QMP answers: the 2026-06-11 case),',
      'or when pending config must be applied. The result reports the old and new QEMU pid and whether pending config was applied.',
      FORENSICS_NOTE,
    ].join(' '),
    input_schema: verbSchema(),
  },
];

export type ToolRequest =
  | { kind: 'command'; command: string; timeoutSeconds: number; reason: string }
  | { kind: 'verb'; verb: PveVerb; reason: string };

export type ToolValidation = { ok: true; request: ToolRequest } | { ok: false; error: string };

function isToolName(name: string): name is ToolName {
  return (TOOL_NAMES as readonly string[]).includes(name);
}

function propertiesOf(name: ToolName): string[] {
  const tool = AGENT_TOOLS.find((candidate) => candidate.name === name) as Tool;
  return Object.keys((tool.input_schema.properties ?? {}) as object);
}

function fail(error: string): ToolValidation {
  return { ok: false, error };
}

function reasonOf(input: Record<string, unknown>): string | { error: string } {
  const reason = input.reason;
  if (reason === undefined) return { error: 'reason: required' };
  if (typeof reason !== 'string') return { error: `reason: expected a string, got ${typeName(reason)}` };
  if (reason.trim() === '') return { error: 'reason: must not be empty' };
  if (reason.length > MAX_REASON_LENGTH) return { error: `reason: at most ${MAX_REASON_LENGTH} characters` };
  return reason.trim();
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/**
 * Checks one tool call from the model against its schema. Errors name the offending field
 * (`command: must not be empty`), so the model can correct itself.
 */
export function validateToolCall(name: string, input: unknown): ToolValidation {
  if (!isToolName(name)) return fail(`tool: unknown tool "${name}"; the tools are ${TOOL_NAMES.join(', ')}`);
  if (typeof input === 'string') {
    const shown = input.length > 200 ? `${input.slice(0, 200)}…` : input;
    return fail(`input: not valid JSON (${JSON.stringify(shown)}); send a JSON object matching the ${name} schema`);
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return fail(`input: expected a JSON object, got ${typeName(input)}`);
  const fields = input as Record<string, unknown>;
  const allowed = propertiesOf(name);
  for (const key of Object.keys(fields)) {
    if (!allowed.includes(key)) {
      return fail(`${key}: unexpected property; ${name} accepts ${allowed.length ? allowed.join(', ') : 'no properties'}`);
    }
  }

  if (name === 'devvm_command') {
    const command = fields.command;
    if (command === undefined) return fail('command: required');
    if (typeof command !== 'string') return fail(`command: expected a string, got ${typeName(command)}`);
    if (command.trim() === '') return fail('command: must not be empty');
    if (command.length > MAX_COMMAND_LENGTH) return fail(`command: at most ${MAX_COMMAND_LENGTH} characters`);
    if (command.includes('\0')) return fail('command: must not contain NUL bytes');
    const timeout = fields.timeout_seconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS;
    if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1 || timeout > MAX_COMMAND_TIMEOUT_SECONDS) {
      return fail(`timeout_seconds: a whole number from 1 to ${MAX_COMMAND_TIMEOUT_SECONDS}, got ${JSON.stringify(timeout)}`);
    }
    const reason = reasonOf(fields);
    if (typeof reason !== 'string') return fail(reason.error);
    return { ok: true, request: { kind: 'command', command, timeoutSeconds: timeout, reason } };
  }

  const verb = TOOL_VERBS[name];
  if (name === 'pve_status') return { ok: true, request: { kind: 'verb', verb, reason: '' } };
  const reason = reasonOf(fields);
  if (typeof reason !== 'string') return fail(reason.error);
  return { ok: true, request: { kind: 'verb', verb, reason } };
}
