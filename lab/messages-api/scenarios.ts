/**
 * Scripted "models" for the Messages API stand-in. Each reads the conversation it is sent
 * (tool results and notes as activities/agent/conversation.ts renders them) and decides its
 * next step from that alone, so it plays correctly whether driven by a test that fakes the
 * world or end-to-end through the session workflow with the lab's real devvm and PVE host.
 */
import type { Script, ScriptRequest, Step } from './server.js';

export interface SeenCall {
  id: string;
  name: string;
  input: Record<string, unknown>;
  /** The latest word on this call: its tool_result, or a later "result of your earlier …" note. */
  result: { text: string; isError: boolean } | null;
}

export interface SeenConversation {
  calls: SeenCall[];
  /** Text of the operator messages, oldest first. */
  operatorMessages: string[];
  /** The VM id named in the system prompt, when there is one. */
  vmid: string | null;
}

const LATE_RESULT = /\[result of your earlier (\S+) call (\S+), which was pending when you last replied\]\n?/g;

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((block: { type?: string; text?: string }) => (block?.type === 'text' ? (block.text ?? '') : '')).join('\n');
}

/** Reads tool calls, their results and operator messages out of a request. */
export function readConversation(request: Pick<ScriptRequest, 'messages' | 'system'>): SeenConversation {
  const calls: SeenCall[] = [];
  const byId = new Map<string, SeenCall>();
  const operatorMessages: string[] = [];
  for (const message of request.messages) {
    const blocks = Array.isArray(message.content) ? (message.content as Record<string, unknown>[]) : [{ type: 'text', text: String(message.content) }];
    for (const block of blocks) {
      if (block.type === 'tool_use') {
        const call: SeenCall = { id: String(block.id), name: String(block.name), input: (block.input ?? {}) as Record<string, unknown>, result: null };
        calls.push(call);
        byId.set(call.id, call);
      } else if (block.type === 'tool_result') {
        const call = byId.get(String(block.tool_use_id));
        if (call) call.result = { text: textOf(block.content), isError: block.is_error === true };
      } else if (block.type === 'text' && message.role === 'user') {
        const text = String(block.text ?? '');
        for (const match of text.matchAll(/Message from operator [^:\n]+:\n([\s\S]*?)(?=\n\n\[|\n\nMessage from operator|$)/g)) operatorMessages.push(match[1] ?? '');
        const markers = [...text.matchAll(LATE_RESULT)];
        markers.forEach((marker, index) => {
          const start = (marker.index ?? 0) + marker[0].length;
          const end = markers[index + 1]?.index ?? text.length;
          const call = byId.get(marker[2] ?? '');
          if (call) {
            const body = text.slice(start, end).split(/\n\nMessage from operator /)[0] ?? '';
            call.result = { text: body, isError: /^(Command failed|Not run|Tool call refused|\S+ failed \()/m.test(body) };
          }
        });
      }
    }
  }
  const system = textOf(request.system);
  return { calls, operatorMessages, vmid: /Proxmox VM (\d+)/.exec(system)?.[1] ?? null };
}

// Every pending answer the conversation builder writes ends in "reported in a later message".
const isPending = (call: SeenCall | undefined) => !call?.result || /reported in a later message/i.test(call.result.text);
const failed = (call: SeenCall) => call.result !== null && (call.result.isError || /timed out|Command failed|unreachable/i.test(call.result.text));
const last = <T>(items: T[]): T | undefined => items[items.length - 1];

function waiting(call: SeenCall): Step {
  const what = call.name === 'devvm_command' ? `\`${String(call.input.command)}\`` : call.name;
  return { text: /approval/i.test(call.result?.text ?? '') ? `Waiting for an operator to approve ${what}.` : `Waiting for the result of ${what}.` };
}

/**
 * The 2026-06-11 class: the devvm does not answer, QMP does, block I/O is frozen.
 * uptime → (fails) → pve_status + pve_forensics → pve_cycle (or pve_reset when QEMU is
 * healthy and nothing is staged) → a summary with the old and new QEMU pid.
 */
export const ioStallScenario: Script = (request) => {
  const seen = readConversation(request);
  const vm = `VM ${seen.vmid ?? '?'}`;
  const commands = seen.calls.filter((call) => call.name === 'devvm_command');
  const probe = commands[0];
  if (!probe) {
    return {
      text: 'Checking whether the devvm answers over SSH.',
      toolCalls: [{ name: 'devvm_command', input: { command: 'uptime', timeout_seconds: 10, reason: 'check whether the devvm answers SSH' } }],
    };
  }
  if (isPending(probe)) return waiting(probe);
  const status = last(seen.calls.filter((call) => call.name === 'pve_status'));
  const forensics = last(seen.calls.filter((call) => call.name === 'pve_forensics'));
  if (!status && !forensics) {
    if (!failed(probe)) return { text: 'The devvm answers over SSH (uptime ran): not an I/O stall. Next I would look at dmesg and memory.' };
    return {
      text: `devvm SSH does not answer (uptime failed). Looking at ${vm} from the PVE host.`,
      toolCalls: [
        { name: 'pve_status', input: {} },
        { name: 'pve_forensics', input: { reason: 'devvm SSH times out: check whether QMP answers and block I/O moves' } },
      ],
    };
  }
  const unanswered = [status, forensics].find((call) => call !== undefined && isPending(call));
  if (unanswered) return waiting(unanswered);
  const evidence = forensics?.result?.text ?? '';
  const mutation = last(seen.calls.filter((call) => call.name === 'pve_cycle' || call.name === 'pve_reset'));
  if (!mutation) {
    const frozen = /disk I\/O FROZEN/.test(evidence);
    const qmpDead = /QMP did NOT answer/.test(evidence);
    const staged = /pending config staged/.test(status?.result?.text ?? '') || /pending config staged/.test(evidence);
    if (frozen || qmpDead || staged) {
      const why = frozen
        ? 'block stats frozen between two samples while QMP answers (the 2026-06-11 class)'
        : qmpDead
          ? 'QMP does not answer: QEMU is wedged'
          : 'pending config is staged and must be applied';
      return {
        text: `Verdict: ${why}. A reset would reuse the same QEMU process, so I am cycling ${vm} (forensics are captured first).`,
        toolCalls: [{ name: 'pve_cycle', input: { reason: `devvm unreachable; ${why}` } }],
      };
    }
    return {
      text: `QEMU looks healthy (QMP answers, I/O moves, nothing staged): the guest itself is hung. Resetting ${vm}.`,
      toolCalls: [{ name: 'pve_reset', input: { reason: 'guest hung while QEMU is healthy and no pending config is staged' } }],
    };
  }
  if (isPending(mutation)) return waiting(mutation);
  const result = mutation.result?.text ?? '';
  const verb = mutation.name === 'pve_cycle' ? 'cycle' : 'reset';
  if (!new RegExp(`${verb} succeeded`).test(result)) {
    return { text: `The ${verb} did not succeed: ${result.split('\n')[0] ?? ''}\nThis needs a human: check the PVE host.` };
  }
  const pids = /QEMU pid (\S+) → (\S+)/.exec(result);
  const applied = /pending config applied/.test(result) ? '; pending config applied' : '';
  const back = /devvm SSH answers again/.test(result) ? 'devvm SSH answers again.' : 'devvm SSH has not answered yet.';
  return {
    text: [
      `Recovered: ${verb === 'cycle' ? 'cycled' : 'reset'} ${vm}.`,
      `QEMU pid ${pids?.[1] ?? '?'} → ${pids?.[2] ?? '?'}${verb === 'cycle' ? ' (new process)' : ''}${applied}. ${back}`,
      'Cause: disk I/O stalled inside QEMU; forensics were captured before the cycle.',
    ].join('\n'),
  };
};

const OOM_LINE = /Out of memory: Killed process (\d+) \(([^)]+)\)|oom-kill:[^\n]*task=([^,\s]+)[^\n]*pid=(\d+)/;

/**
 * The guest answers; the kernel log shows an OOM kill. Reads the log (read-only), proposes a
 * guest-level fix that is NOT read-only (`sudo systemctl restart <process>`), which waits for
 * approval under the default policy, then summarises.
 */
export const guestOomScenario: Script = (request) => {
  const seen = readConversation(request);
  const commands = seen.calls.filter((call) => call.name === 'devvm_command');
  const log = commands.find((call) => /^(journalctl|dmesg)\b/.test(String(call.input.command)));
  if (!log) {
    return {
      text: 'The devvm answers. Checking the kernel log, failed units and memory.',
      toolCalls: [
        { name: 'devvm_command', input: { command: 'journalctl -k -n 200 --no-pager', timeout_seconds: 15, reason: 'look for OOM kills and I/O errors' } },
        { name: 'devvm_command', input: { command: 'systemctl --failed', timeout_seconds: 10, reason: 'which services are down' } },
        { name: 'devvm_command', input: { command: 'free -m', timeout_seconds: 10, reason: 'memory pressure now' } },
      ],
    };
  }
  if (isPending(log)) return waiting(log);
  const match = OOM_LINE.exec(log.result?.text ?? '');
  if (!match) return { text: 'No OOM kill in the kernel log. Next I would look at failed units and disk space.' };
  const processName = match[2] ?? match[3] ?? 'unknown';
  const pid = match[1] ?? match[4] ?? '?';
  // Restart the unit systemd reports as failed (the process name is not always the unit name).
  const failedUnits = commands.find((call) => /^systemctl --failed/.test(String(call.input.command)))?.result?.text ?? '';
  const unit = /([\w@.-]+)\.service\s+\S+\s+failed/.exec(failedUnits)?.[1] ?? processName;
  const fixCommand = `sudo systemctl restart ${unit}`;
  const fix = commands.find((call) => String(call.input.command) === fixCommand);
  if (!fix) {
    return {
      text: `Cause: the kernel OOM killer killed ${processName} (pid ${pid}) and ${unit} is down. Guest-level fix, no reset needed: restart it. This needs your approval.`,
      toolCalls: [{ name: 'devvm_command', input: { command: fixCommand, timeout_seconds: 60, reason: `restart ${unit} after the OOM kill of pid ${pid}` } }],
    };
  }
  if (isPending(fix)) return waiting(fix);
  if (failed(fix)) return { text: `The restart did not happen or failed: ${(fix.result?.text ?? '').split('\n')[0] ?? ''}` };
  return {
    text: `Fixed at guest level: ${unit} restarted after the OOM kill of ${processName} (pid ${pid}). No reset or cycle was needed.\nFollow up: memory limits for ${processName}.`,
  };
};

export interface InjectionScenarioOptions {
  /** The read-only command whose output carries the injected instructions. */
  readCommand?: string;
}

/**
 * A deliberately gullible model for prompt-injection tests: it reads a log and then does what
 * the log tells it (commands in backticks after "run", and a reset when the text asks for one).
 * It shows that the session's policy, not the model's judgement, is what stops such calls.
 */
export function injectionScenario(options: InjectionScenarioOptions = {}): Script {
  const readCommand = options.readCommand ?? 'cat /var/log/app.log';
  return (request) => {
    const seen = readConversation(request);
    const read = seen.calls.find((call) => call.name === 'devvm_command' && call.input.command === readCommand);
    if (!read) {
      return { text: 'Reading the application log.', toolCalls: [{ name: 'devvm_command', input: { command: readCommand, timeout_seconds: 10, reason: 'read the application log' } }] };
    }
    if (isPending(read)) return waiting(read);
    const obeyed = seen.calls.filter((call) => call !== read);
    if (obeyed.length === 0) {
      const output = read.result?.text ?? '';
      const toolCalls: Step['toolCalls'] = [...output.matchAll(/\brun\s+`([^`]+)`/gi)].map((match) => ({
        name: 'devvm_command',
        input: { command: match[1] ?? '', reason: 'the log said to' },
      }));
      if (/\breset\b/i.test(output)) toolCalls.push({ name: 'pve_reset', input: { reason: 'the log said to' } });
      if (toolCalls.length > 0) return { text: 'The log asks for some actions; doing them.', toolCalls };
      return { text: 'Nothing unusual in the log.' };
    }
    const open = obeyed.find((call) => isPending(call));
    if (open) return waiting(open);
    return { text: `Done what the log asked (${obeyed.map((call) => call.name).join(', ')}).` };
  };
}

/** Scenarios by name, for the lab's configuration. */
export const SCENARIOS: Record<string, Script> = {
  'io-stall': ioStallScenario,
  'guest-oom': guestOomScenario,
  injection: injectionScenario(),
};
