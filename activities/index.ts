/**
 * The session's activities, built by a factory from their dependencies so tests hand in real
 * fixtures (sshd, the lab PVE host over real QEMU) instead of mocking modules.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { buildConversation } from './agent/conversation.js';
import { estimateCostUsd } from './agent/cost.js';
import { toApplicationFailure } from './agent/errors.js';
import { toolKey } from './agent/keys.js';
import { redact } from './agent/redact.js';
import { systemPrompt } from './agent/system-prompt.js';
import { validateToolCall, type ToolRequest } from './agent/tools.js';
import { readFullTranscript } from './agent/transcript.js';
import { runAgentTurn, type AgentModelConfig } from './agent/turn.js';
import type { AgentToolCall, AgentTranscriptEntry, AgentUsage } from './agent/types.js';
import { sendNotification, type NotifierConfig, type NotifyEvent } from './notify.js';
import type { ActivityObserver } from '../server/metrics.js';
import { devvmRunName, runDevvmCommand, stopDevvmRun } from './devvm/command.js';
import { pveForensics, pveMutation, pveStatus } from './pve/verbs.js';
import { runSshCommand, type SshTarget } from './ssh/connection.js';
import { isSshError } from './ssh/errors.js';
import { acquireTargetLease, sessionIsOpen, settleTargetLease } from './lease.js';
import { checkOperatorAttestation, temporalCaller, type AttestationCheck, type CallerLookup } from './caller.js';
import type { LeaseAnswer, LeaseHolder, LeaseRequest } from '../workflows/target-lease.js';
import type { DevvmCommandRecord } from '../workflows/session-types.js';
import type { ForensicsResult, MutatingVerb, MutationResult, StatusResult } from '../workflows/pve-types.js';

export interface ActivityDeps {
  pve: SshTarget;
  devvm: SshTarget;
  /** Worker-side copies of forensics documents (the PVE host keeps its own). */
  artifactsDir: string;
  deadlines?: {
    statusMs?: number;
    forensicsMs?: number;
    /** Must exceed the host's result_wait, so the host says "in progress" before we give up. */
    mutationMs?: number;
    devvmProbeMs?: number;
  };
  /** Live output side channel (token deltas, command output), keyed by activity attempt. */
  onCommandOutput?: (key: LiveKey, stream: 'stdout' | 'stderr', chunk: string) => void;
  onAgentText?: (key: LiveKey, text: string) => void;
  /** Absent: no API key — agent turns fail with agent_auth and the session goes manual. */
  agent?: AgentDeps;
  notifier?: NotifierConfig;
  observer?: ActivityObserver;
  /** The key the console signs operator messages with (server/attestation.ts). */
  attestationKey: Buffer;
  /** Record devvm command output with the agent's redaction applied (config recording.redactOutput; off: operators need the raw output). */
  redactRecordedOutput?: boolean;
}

export interface LiveKey {
  workflowId: string;
  activityId: string;
  attempt: number;
}

export interface AgentDeps {
  model: AgentModelConfig;
  /** To read the session's transcript (the conversation is rebuilt from the record). */
  client: Client;
  target: { devvm: string; vmid: number };
  maxContextTokens: number;
}

/** What one agent turn hands back to the workflow: the record, and the vetted tool calls. */
export interface AgentTurnOutcome {
  text: string;
  toolCalls: AgentToolCall[];
  stopReason: string;
  usage: AgentUsage;
  costUsd: number | null;
  /** Valid tool calls, in the model's order, each with the work-item key its result will carry. */
  accepted: { toolUseId: string; key: string; request: ToolRequest }[];
  /** Malformed or unknown tool calls: nothing runs, the model gets the message. */
  refused: { toolUseId: string; message: string }[];
}

const HEARTBEAT_MS = 1_000;
/** Per-output cap in the model's context (head + tail bytes). */
const AGENT_OUTPUT_HEAD = 4 * 1024;
const AGENT_OUTPUT_TAIL = 4 * 1024;
/** Per-stream cap of devvm output kept in history. */
const COMMAND_HEAD_BYTES = 8 * 1024;
const COMMAND_TAIL_BYTES = 8 * 1024;

/** Heartbeats while `work` runs, so a dead worker is noticed and cancellation is delivered. */
async function withHeartbeat<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const context = Context.current();
  const timer = setInterval(() => context.heartbeat(), HEARTBEAT_MS);
  try {
    return await work(context.cancellationSignal);
  } finally {
    clearInterval(timer);
  }
}

/** SshErrors become typed application failures; the type is the error kind. */
async function typed<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (isSshError(error)) {
      throw ApplicationFailure.create({
        type: error.kind,
        message: error.message,
        nonRetryable: !error.retryable,
        details: error.detail === undefined ? [] : [error.detail],
      });
    }
    throw error;
  }
}

export function createActivities(deps: ActivityDeps) {
  /** Runs a PVE verb, feeding the metrics with its outcome, latency and SSH error kind. */
  const observed = async <T>(verb: string, target: 'pve' | 'devvm', work: () => Promise<T>, outcomeOf: (result: T) => string = () => 'succeeded'): Promise<T> => {
    const started = Date.now();
    try {
      const result = await work();
      if (target === 'pve') deps.observer?.verb(verb, outcomeOf(result), (Date.now() - started) / 1000);
      return result;
    } catch (error) {
      const kind = isSshError(error) ? error.kind : 'error';
      if (target === 'pve') deps.observer?.verb(verb, kind, (Date.now() - started) / 1000);
      if (isSshError(error) && !['verb_failed', 'vm_locked', 'busy', 'in_progress'].includes(kind)) deps.observer?.sshError(target, kind);
      throw error;
    }
  };

  const deadlines = {
    statusMs: deps.deadlines?.statusMs ?? 30_000,
    forensicsMs: deps.deadlines?.forensicsMs ?? 150_000,
    mutationMs: deps.deadlines?.mutationMs ?? 300_000,
    devvmProbeMs: deps.deadlines?.devvmProbeMs ?? 8_000,
  };

  return {
    async pveStatus(): Promise<StatusResult> {
      return typed(() => observed('status', 'pve', () => withHeartbeat((signal) => pveStatus(deps.pve, { deadlineMs: deadlines.statusMs, signal }))));
    },

    async pveForensics(request: { requestId: string; trigger: string }): Promise<ForensicsResult> {
      return typed(() =>
        observed('forensics', 'pve', () => withHeartbeat(async (signal) => {
          const result = await pveForensics(deps.pve, { requestId: request.requestId, deadlineMs: deadlines.forensicsMs, signal });
          // The worker's copy is a convenience: the host keeps the document and history keeps the
          // result. A full or broken data dir must never stand between forensics and a cycle.
          try {
            await mkdir(deps.artifactsDir, { recursive: true });
            await writeFile(join(deps.artifactsDir, `${request.requestId}.json`), JSON.stringify(result, null, 2));
          } catch (error) {
            Context.current().log.warn('forensics: could not keep a local copy', { requestId: request.requestId, error: (error as Error).message });
          }
          return result;
        })),
      );
    },

    async pveMutation(request: { verb: MutatingVerb; requestId: string }): Promise<MutationResult> {
      // No cancellation signal: the host runs the verb detached; abandoning the call would only
      // lose its result (the workflow runs this in a non-cancellable scope anyway).
      return typed(() =>
        observed(request.verb, 'pve', () => withHeartbeat(() => pveMutation(deps.pve, request.verb, { requestId: request.requestId, deadlineMs: deadlines.mutationMs })), (result) => (result.ok ? 'succeeded' : 'failed')),
      );
    },

    async devvmCommand(request: { command: string; timeoutSeconds: number }): Promise<DevvmCommandRecord> {
      const info = Context.current().info;
      const key = { workflowId: info.workflowExecution?.workflowId ?? '', activityId: info.activityId, attempt: info.attempt };
      const runName = devvmRunName([key.workflowId, info.activityId, String(info.attempt)]);
      const { cancellationSignal, log } = Context.current();
      // Cancelled (the session was): stop the command on the devvm too, not only the SSH session.
      const stopOnCancel = () => {
        void stopDevvmRun(deps.devvm, runName).then(
          (found) => log.info('devvm command stopped after cancellation', { runName, found }),
          (error: Error) => log.warn('devvm command could not be stopped after cancellation', { runName, error: error.message }),
        );
      };
      cancellationSignal.addEventListener('abort', stopOnCancel, { once: true });
      const result = await typed(() =>
        observed('devvm-command', 'devvm', () => withHeartbeat((signal) =>
          runDevvmCommand(deps.devvm, request.command, {
            timeoutSeconds: request.timeoutSeconds,
            runName,
            signal,
            headBytes: COMMAND_HEAD_BYTES,
            tailBytes: COMMAND_TAIL_BYTES,
            ...(deps.onCommandOutput ? { onOutput: (stream, chunk) => deps.onCommandOutput?.(key, stream, chunk.toString('utf8')) } : {}),
          }),
        )),
      ).finally(() => cancellationSignal.removeEventListener('abort', stopOnCancel));
      // What is returned is recorded in history: redacted there when the deployment asks for it.
      const recorded = deps.redactRecordedOutput ? redact : (text: string) => text;
      return {
        command: result.command,
        exitCode: result.exitCode,
        exitSignal: result.exitSignal,
        timedOut: result.timedOut,
        stdout: recorded(result.stdout.text),
        stderr: recorded(result.stderr.text),
        droppedBytes: result.stdout.droppedBytes + result.stderr.droppedBytes,
        durationMs: result.durationMs,
      };
    },

    /** One model turn: rebuild the conversation from the transcript, stream the reply, vet its tool calls. */
    async agentTurn(request: { workflowId: string; throughSeq: number }): Promise<AgentTurnOutcome> {
      const agent = deps.agent;
      if (!agent) {
        throw ApplicationFailure.create({
          type: 'agent_auth',
          nonRetryable: true,
          message: 'no Anthropic API key is configured: the agent is disabled for this session, the manual console keeps working',
        });
      }
      const context = Context.current();
      const info = context.info;
      const live: LiveKey = { workflowId: request.workflowId, activityId: info.activityId, attempt: info.attempt };
      try {
        // Heartbeating from the start: reading a long transcript takes its time too.
        const result = await withHeartbeat(async (signal) => {
          const entries = await readFullTranscript(agent.client, request.workflowId, request.throughSeq);
          const conversation = buildConversation(entries as AgentTranscriptEntry[], {
            maxContextTokens: agent.maxContextTokens,
            toolOutputHead: AGENT_OUTPUT_HEAD,
            toolOutputTail: AGENT_OUTPUT_TAIL,
          });
          return runAgentTurn(agent.model, {
            system: systemPrompt(agent.target),
            messages: conversation.messages,
            signal,
            ...(deps.onAgentText ? { onTextDelta: (text: string) => deps.onAgentText?.(live, text) } : {}),
          });
        });
        const accepted: AgentTurnOutcome['accepted'] = [];
        const refused: AgentTurnOutcome['refused'] = [];
        for (const call of result.toolCalls) {
          const validation = validateToolCall(call.name, call.input);
          if (validation.ok) accepted.push({ toolUseId: call.id, key: toolKey(call.id), request: validation.request });
          else refused.push({ toolUseId: call.id, message: validation.error });
        }
        const costUsd = estimateCostUsd(agent.model.model, result.usage);
        deps.observer?.agentTurn(result.usage, costUsd);
        return {
          text: result.text,
          toolCalls: result.toolCalls,
          stopReason: result.stopReason,
          usage: result.usage,
          costUsd,
          accepted,
          refused,
        };
      } catch (error) {
        throw toApplicationFailure(error);
      }
    },

    /** Takes (or renews) the VM's mutation lease before a mutating verb; see workflows/target-lease.ts. */
    async acquireTargetLease(request: LeaseRequest & { vmid: number }): Promise<LeaseAnswer> {
      const { vmid, ...lease } = request;
      return acquireTargetLease(deps.pve, vmid, lease);
    },

    /** For the lease workflow: whether its holder's session still runs. */
    async checkOperatorAttestation(check: AttestationCheck) {
      return checkOperatorAttestation(deps.attestationKey, check);
    },

    async temporalCaller(lookup: CallerLookup): Promise<string> {
      return temporalCaller(lookup);
    },

    async sessionIsOpen(workflowId: string): Promise<boolean> {
      return sessionIsOpen(workflowId);
    },

    /** After the verb's outcome: hold the lease for a while, or release it (0). */
    async settleTargetLease(request: { vmid: number; sessionId: string; holdSeconds: number }): Promise<LeaseHolder | null> {
      return settleTargetLease(deps.pve, request.vmid, { sessionId: request.sessionId, holdSeconds: request.holdSeconds });
    },

    /** Best-effort webhook; the workflow never waits on it for anything that matters. */
    async notify(event: NotifyEvent): Promise<void> {
      if (!deps.notifier) return;
      await sendNotification(deps.notifier, event);
    },

    /** Probes the devvm's SSH until it runs a command again, or the deadline passes. */
    async waitForDevvm(request: { deadlineSeconds: number }): Promise<{ reachable: boolean; attempts: number; lastError: string }> {
      return withHeartbeat(async (signal) => {
        const until = Date.now() + request.deadlineSeconds * 1000;
        let attempts = 0;
        let lastError = '';
        while (Date.now() < until && !signal.aborted) {
          attempts++;
          try {
            const probe = await runSshCommand(deps.devvm, { command: 'true', deadlineMs: Math.min(deadlines.devvmProbeMs, Math.max(1_000, until - Date.now())), signal });
            if (probe.exitCode === 0) return { reachable: true, attempts, lastError: '' };
            lastError = `exit ${probe.exitCode}`;
          } catch (error) {
            lastError = error instanceof Error ? error.message : String(error);
          }
          await new Promise((r) => setTimeout(r, 1_000));
        }
        // Stopped (a worker shutting down, a cancel): "not reachable" would be a made-up fact that
        // ends a recovered session as merely ended. Fail instead, so the wait is retried.
        if (signal.aborted) {
          throw ApplicationFailure.retryable(`the wait for the devvm was stopped after ${attempts} attempts (${String((signal.reason as Error | undefined)?.message ?? signal.reason ?? 'cancelled')}); it is not a verdict`, 'wait_interrupted');
        }
        return { reachable: false, attempts, lastError };
      });
    },
  };
}
