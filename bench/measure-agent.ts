/**
 * 3. Agent orchestration overhead per step. A step is one model turn that asks for one
 * read-only devvm command (`uname -s`) plus that command's run, up to the next model request.
 * The Messages API stand-in answers at once, so what remains is orchestration.
 *
 * - through the workflow: the product process (demo agent pointed at the stand-in) runs the
 *   session: agent-turn activity (transcript read back through queries, conversation rebuilt,
 *   streamed call), the tool call admitted under policy, the devvm-command activity, the next
 *   turn;
 * - in-process: the same loop without Temporal: runAgentTurn, runDevvmCommand, and the same
 *   conversation builder over a transcript kept in memory.
 *
 * Per-step latency is taken in both cases from the stand-in's own clock: the gap between two
 * consecutive model requests of one conversation.
 */
import { buildConversation } from '../activities/agent/conversation.js';
import { toolKey } from '../activities/agent/keys.js';
import { systemPrompt } from '../activities/agent/system-prompt.js';
import { validateToolCall } from '../activities/agent/tools.js';
import { runAgentTurn, type AgentModelConfig } from '../activities/agent/turn.js';
import type { AgentTranscriptEntry } from '../activities/agent/types.js';
import { runDevvmCommand } from '../activities/devvm/command.js';
import type { MessagesApi, Script } from '../lab/messages-api/server.js';
import { transcriptQuery } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import type { ConsoleApi } from './api.js';
import type { BenchLab } from './lab.js';

export const STEP_COMMAND = 'uname -s';
const TARGET = { devvm: 'devvm', vmid: 102 };
// As the agent-turn activity builds it (activities/index.ts).
const CONVERSATION = { maxContextTokens: 150_000, toolOutputHead: 4 * 1024, toolOutputTail: 4 * 1024 };
const COMMAND_CAP = 8 * 1024;

/** The scripted model: one `devvm_command` per turn until `steps` have been asked, then done. */
export function loopScript(steps: () => number): Script {
  return (request) => {
    const asked = request.messages
      .filter((message) => message.role === 'assistant' && Array.isArray(message.content))
      .flatMap((message) => message.content as { type: string }[])
      .filter((block) => block.type === 'tool_use').length;
    if (asked >= steps()) return { text: 'The devvm answers; nothing more to check.' };
    return { text: `Step ${asked + 1}: checking the kernel.`, toolCalls: [{ name: 'devvm_command', input: { command: STEP_COMMAND, reason: 'bench step' } }] };
  };
}

function gaps(times: number[]): number[] {
  return times.slice(1).map((time, index) => time - (times[index] as number));
}

/** Model requests recorded by the stand-in since `mark` (received time, ms). */
function requestTimes(api: MessagesApi, mark: number): number[] {
  return api.requests.slice(mark).filter((request) => request.path === '/v1/messages' && request.authorized).map((request) => request.receivedAt);
}

async function transcriptOf(lab: BenchLab, id: string): Promise<TranscriptEntry[]> {
  const entries: TranscriptEntry[] = [];
  let cursor: number | undefined;
  for (;;) {
    const page = await lab.client.workflow.getHandle(id).query(transcriptQuery, { ...(cursor !== undefined ? { cursor } : {}), limit: 200 });
    entries.push(...page.entries);
    if (!page.more) return entries;
    cursor = page.nextCursor ?? undefined;
  }
}

export async function workflowLoop(lab: BenchLab, api: ConsoleApi, stand: MessagesApi, steps: number): Promise<number[]> {
  const id = await api.createSession('bench: agent loop');
  try {
    const mark = stand.requests.length;
    await api.message(id, 'bench: check the devvm step by step');
    const until = Date.now() + 60_000 + steps * 5_000;
    for (;;) {
      const entries = await transcriptOf(lab, id).catch(() => [] as TranscriptEntry[]);
      const agentMessages = entries.filter((entry) => entry.type === 'agent-message');
      const failed = entries.find((entry) => ['agent-error', 'agent-disabled', 'command-failed', 'approval-needed', 'paused'].includes(entry.type));
      if (failed) throw new Error(`agent loop: ${JSON.stringify(failed).slice(0, 300)}`);
      const last = agentMessages.at(-1);
      if (agentMessages.length === steps + 1 && last?.type === 'agent-message' && last.toolCalls.length === 0) {
        const results = entries.filter((entry) => entry.type === 'command-result');
        if (results.length !== steps || results.some((entry) => entry.type === 'command-result' && entry.result.exitCode !== 0)) {
          throw new Error(`agent loop: expected ${steps} successful commands, got ${results.length}`);
        }
        break;
      }
      if (Date.now() > until) throw new Error(`agent loop: ${agentMessages.length}/${steps + 1} turns after the deadline`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const times = requestTimes(stand, mark);
    if (times.length !== steps + 1) throw new Error(`agent loop: the stand-in saw ${times.length} requests, expected ${steps + 1}`);
    return gaps(times);
  } finally {
    await api.end(id);
  }
}

export async function inProcessLoop(lab: BenchLab, model: AgentModelConfig, stand: MessagesApi, steps: number): Promise<number[]> {
  const mark = stand.requests.length;
  let seq = 0;
  const now = () => Date.now();
  const transcript: AgentTranscriptEntry[] = [
    { seq: ++seq, at: now(), type: 'session-started', operator: 'bench-1', description: 'bench: agent loop', target: TARGET },
    { seq: ++seq, at: now(), type: 'operator-message', operator: 'bench-1', text: 'bench: check the devvm step by step' },
  ];
  for (let turn = 1; turn <= steps + 1; turn++) {
    const conversation = buildConversation(transcript, CONVERSATION);
    const result = await runAgentTurn(model, { system: systemPrompt(TARGET), messages: conversation.messages });
    transcript.push({ seq: ++seq, at: now(), type: 'agent-message', turn: String(turn), text: result.text, toolCalls: result.toolCalls, usage: result.usage });
    if (result.toolCalls.length === 0) break;
    for (const call of result.toolCalls) {
      const validation = validateToolCall(call.name, call.input);
      if (!validation.ok || validation.request.kind !== 'command') throw new Error(`in-process loop: unexpected tool call ${call.name}`);
      const key = toolKey(call.id);
      const { command, timeoutSeconds } = validation.request;
      transcript.push({ seq: ++seq, at: now(), type: 'request', item: { kind: 'command', key, command, timeoutSeconds, requestedBy: { kind: 'agent' } } });
      const output = await runDevvmCommand(lab.devvmTarget, command, { timeoutSeconds, headBytes: COMMAND_CAP, tailBytes: COMMAND_CAP });
      if (output.exitCode !== 0) throw new Error(`in-process loop: ${command} exited ${output.exitCode}`);
      transcript.push({
        seq: ++seq,
        at: now(),
        type: 'command-result',
        key,
        result: {
          command,
          exitCode: output.exitCode,
          exitSignal: output.exitSignal,
          timedOut: output.timedOut,
          stdout: output.stdout.text,
          stderr: output.stderr.text,
          droppedBytes: output.stdout.droppedBytes + output.stderr.droppedBytes,
          durationMs: output.durationMs,
        },
      });
    }
  }
  const times = requestTimes(stand, mark);
  if (times.length !== steps + 1) throw new Error(`in-process loop: the stand-in saw ${times.length} requests, expected ${steps + 1}`);
  return gaps(times);
}
