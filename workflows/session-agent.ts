/**
 * One agent turn of the session: the model reads the transcript (in the activity), and each tool
 * call it makes takes the operator's path — same policy, same queue, same record — keyed by the
 * turn and its place in it.
 */
import { isCancellation, patched } from '@temporalio/workflow';
import { agent, describeFailure } from './session-rules.js';
import type { SessionScope } from './session-scope.js';
import type { Actor } from './session-types.js';

export async function runAgentTurn(s: SessionScope): Promise<void> {
  s.agentState.pending = false;
  s.agentState.turns += 1;
  s.agentThinking = true;
  s.refreshDetails();
  let outcome;
  try {
    outcome = await agent.agentTurn.executeWithOptions({ summary: `agent turn ${s.agentState.turns}` }, [{ workflowId: s.info.workflowId, throughSeq: s.nextSeq - 1 }]);
  } catch (error) {
    if (isCancellation(error)) throw error;
    const failure = describeFailure(error);
    if (failure.kind === 'agent_auth') {
      s.agentState.enabled = false;
      s.agentState.reason = failure.message;
      s.record({ type: 'agent-disabled', reason: failure.message });
    } else {
      s.record({ type: 'agent-error', kind: failure.kind, message: failure.message });
    }
    return;
  } finally {
    s.agentThinking = false;
  }
  // Keys from the session's own state (the turn, the call's place in it), not the model's
  // tool-use ids: a reset that calls the model again gets new ids, but the same turn names
  // the same host requests, so the host journal answers with the first run's result (or
  // refuses another verb under that name) instead of acting twice.
  // (Histories from before keep the activity's key, derived from the tool-use id.)
  const keyed = patched('agent-keys-from-turns');
  const keyOf = new Map<string, string>(keyed ? outcome.toolCalls.map((call, index) => [call.id, `t-${s.agentState.turns}-${index}`]) : []);
  s.record({
    type: 'agent-message',
    turn: `${s.agentState.turns}`,
    text: outcome.text,
    toolCalls: keyed ? outcome.toolCalls.map((call) => ({ ...call, key: keyOf.get(call.id) })) : outcome.toolCalls,
    usage: outcome.usage,
  });
  s.tokens.inputTokens += outcome.usage.inputTokens;
  s.tokens.outputTokens += outcome.usage.outputTokens;
  s.tokens.cacheReadTokens += outcome.usage.cacheReadTokens;
  s.tokens.cacheWriteTokens += outcome.usage.cacheWriteTokens;
  s.costUsd += outcome.costUsd ?? 0;
  for (const refusal of outcome.refused) s.record({ type: 'agent-tool-error', toolUseId: refusal.toolUseId, message: refusal.message });
  let exhausted = false;
  // Every tool call takes the operator's path: same s.policy, same queue, same s.record.
  for (const accepted of outcome.accepted) {
    const call = { ...accepted, key: keyOf.get(accepted.toolUseId) ?? accepted.key };
    if (s.usedKeys.has(call.key)) continue;
    if (s.toolCallsUsed >= s.policy.toolCallsPerMessage) {
      exhausted = true;
      s.record({ type: 'agent-tool-error', toolUseId: call.toolUseId, message: `tool-call budget of ${s.policy.toolCallsPerMessage} per operator message used up: not run; the operator has been asked` });
      continue;
    }
    s.toolCallsUsed += 1;
    s.awaiting.add(call.key);
    const agentActor: Actor = { kind: 'agent' };
    s.admit(
      call.request.kind === 'command'
        ? { kind: 'command', key: call.key, command: call.request.command, timeoutSeconds: call.request.timeoutSeconds, requestedBy: agentActor, approvedBy: [] }
        : { kind: 'verb', key: call.key, verb: call.request.verb, reason: call.request.reason, requestedBy: agentActor, approvedBy: [] },
    );
  }
  if (exhausted) {
    s.pause('system', `the agent used its ${s.policy.toolCallsPerMessage} tool calls for this message: resume to let it continue`);
    s.toolCallsUsed = 0;
  }
  // The model asked for tools: it speaks again once their results are in.
  if (outcome.stopReason === 'tool_use' || outcome.refused.length > 0 || exhausted) s.agentState.pending = true;
  s.refreshDetails();
}
