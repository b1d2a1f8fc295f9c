/**
 * Agent turns through the real @anthropic-ai/sdk against the local Messages API stand-in:
 * streaming, tool-input assembly, error classification, prompt caching and the tool surface.
 */
import Anthropic from '@anthropic-ai/sdk';
import type { MessageParam } from '@anthropic-ai/sdk/resources/messages.js';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentError, NON_RETRYABLE_AGENT_FAILURES, parseRetryAfter, toApplicationFailure } from '../activities/agent/errors.js';
import { TOOL_NAMES, validateToolCall } from '../activities/agent/tools.js';
import { runAgentTurn, type AgentModelConfig } from '../activities/agent/turn.js';
import { startMessagesApi, type MessagesApi, type Script, type Step } from '../lab/messages-api/server.js';

const KEY = 'sk-ant-test-standin-key-0001';
const SYSTEM = 'You are a test agent for Proxmox VM 102.';
const HELLO: MessageParam[] = [{ role: 'user', content: [{ type: 'text', text: 'The devvm is down.' }] }];

let api: MessagesApi | null = null;

afterEach(async () => {
  await api?.stop();
  api = null;
});

async function standIn(script: Script | Step[]): Promise<MessagesApi> {
  const steps = Array.isArray(script) ? script : null;
  api = await startMessagesApi({
    apiKey: KEY,
    script: steps ? (_request, index) => steps[Math.min(index, steps.length - 1)] as Step : (script as Script),
  });
  return api;
}

function config(url: string, extra: Partial<AgentModelConfig> = {}): AgentModelConfig {
  return { apiKey: KEY, baseURL: url, model: 'claude-test-standin', maxTokens: 1024, timeoutMs: 5_000, ...extra };
}

async function failureOf(promise: Promise<unknown>): Promise<AgentError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(AgentError);
    return error as AgentError;
  }
  throw new Error('expected the call to fail');
}

/** Reads the raw SSE events of one streamed request (to see the protocol itself). */
async function rawEvents(url: string, body: unknown): Promise<{ event: string; data: Record<string, unknown> }[]> {
  const response = await fetch(`${url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': KEY, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify(body),
  });
  expect(response.headers.get('content-type')).toMatch(/text\/event-stream/);
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((chunk) => chunk.trim() !== '')
    .map((chunk) => {
      const event = /^event: (.*)$/m.exec(chunk)?.[1] ?? '';
      const data = JSON.parse(/^data: (.*)$/m.exec(chunk)?.[1] ?? '{}') as Record<string, unknown>;
      return { event, data };
    });
}

describe('agent turn: streaming', () => {
  it('when the model streams text, then the deltas arrive in order and join to the final text', async () => {
    const text = 'Checking the devvm. It does not answer SSH, so next I will look at the VM from the PVE host.';
    const { url } = await standIn([{ text }]);
    const deltas: string[] = [];
    const result = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO, onTextDelta: (piece) => deltas.push(piece) });
    expect(deltas.length).toBeGreaterThan(5);
    expect(deltas.join('')).toBe(text);
    expect(result.text).toBe(text);
    expect(result.stopReason).toBe('end_turn');
    expect(result.toolCalls).toEqual([]);
    expect(result.messageId).toMatch(/^msg_/);
    expect(result.usage.outputTokens).toBeGreaterThan(0);
  });

  it('when tool input is streamed in several input_json_delta chunks, then each call is assembled whole', async () => {
    const command = `journalctl -k -n 200 --no-pager # "quoted" ünïcode \\ backslash`;
    const { url } = await standIn([
      {
        text: 'Two checks at once.',
        toolCalls: [
          { name: 'devvm_command', input: { command, timeout_seconds: 15, reason: 'look for OOM kills and I/O errors in the kernel log' } },
          { name: 'pve_status', input: {} },
        ],
      },
    ]);
    // The protocol really splits the JSON: several partial chunks per tool block.
    const events = await rawEvents(url, { model: 'm', max_tokens: 10, stream: true, messages: HELLO });
    const partials = events.filter((e) => e.event === 'content_block_delta' && (e.data.delta as { type: string }).type === 'input_json_delta');
    const firstTool = partials.filter((e) => e.data.index === 1);
    expect(firstTool.length).toBeGreaterThan(3);
    expect(() => JSON.parse(String((firstTool[1]?.data.delta as { partial_json: string }).partial_json))).toThrow();
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['message_start', 'ping', 'content_block_start', 'content_block_stop', 'message_delta', 'message_stop']));

    const result = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    expect(result.stopReason).toBe('tool_use');
    expect(result.toolCalls.map((call) => call.name)).toEqual(['devvm_command', 'pve_status']);
    expect(result.toolCalls[0]?.input).toEqual({ command, timeout_seconds: 15, reason: 'look for OOM kills and I/O errors in the kernel log' });
    expect(result.toolCalls[1]?.input).toEqual({});
    expect(result.toolCalls[0]?.id).not.toBe(result.toolCalls[1]?.id);
    const validated = validateToolCall('devvm_command', result.toolCalls[0]?.input);
    expect(validated).toEqual({ ok: true, request: { kind: 'command', command, timeoutSeconds: 15, reason: 'look for OOM kills and I/O errors in the kernel log' } });
  });

  it('when the model sends malformed tool JSON, then the raw text comes back and validation names the input', async () => {
    const { url } = await standIn([{ toolCalls: [{ name: 'devvm_command', rawJson: '{"command": "uptime", "reason": ' }] }]);
    const result = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    expect(result.toolCalls).toHaveLength(1);
    expect(result.toolCalls[0]?.input).toBe('{"command": "uptime", "reason": ');
    const validated = validateToolCall('devvm_command', result.toolCalls[0]?.input);
    expect(validated.ok).toBe(false);
    expect(!validated.ok && validated.error).toMatch(/^input: not valid JSON/);
  });

  it('when the model sends schema-invalid input, then validation names the field', async () => {
    const { url } = await standIn([{ toolCalls: [{ name: 'devvm_command', input: { command: 'uptime', reason: 'probe', timeout_seconds: 9000 } }] }]);
    const result = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    const validated = validateToolCall(result.toolCalls[0]?.name ?? '', result.toolCalls[0]?.input);
    expect(!validated.ok && validated.error).toMatch(/^timeout_seconds: /);
  });

  it('when the call outlives its deadline, then it fails as a retryable timeout', async () => {
    const { url } = await standIn([{ text: 'late', delayMs: 2_000 }]);
    const started = Date.now();
    const error = await failureOf(runAgentTurn(config(url, { timeoutMs: 300 }), { system: SYSTEM, messages: HELLO }));
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(error.kind).toBe('timeout');
    expect(error.retryable).toBe(true);
  });

  it('when the caller aborts, then the call ends as cancelled (not retryable)', async () => {
    const { url } = await standIn([{ text: 'late', delayMs: 2_000 }]);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO, signal: controller.signal }));
    expect(error.kind).toBe('cancelled');
    expect(error.retryable).toBe(false);
  });
});

describe('agent turn: API errors', () => {
  it('when the API answers 429 with retry-after, then the error is rate_limited with retryAfterMs, and the next call succeeds', async () => {
    const { url, requests } = await standIn([
      { error: { status: 429, type: 'rate_limit_error', message: 'Number of request tokens has exceeded your per-minute rate limit', retryAfterSeconds: 2 } },
      { text: 'Back in business.' },
    ]);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('rate_limited');
    expect(error.retryable).toBe(true);
    expect(error.retryAfterMs).toBe(2_000);
    expect(error.status).toBe(429);
    expect(error.requestId).toMatch(/^req_/);
    // One request only: the SDK did not retry behind our back (Temporal does the backoff).
    expect(requests).toHaveLength(1);

    const failure = toApplicationFailure(error);
    expect(failure.type).toBe('agent_rate_limited');
    expect(failure.nonRetryable).toBe(false);
    expect(failure.nextRetryDelay).toBe(2_000);

    const result = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    expect(result.text).toBe('Back in business.');
  });

  it('when the API is overloaded (529), then the error is overloaded and retryable', async () => {
    const { url } = await standIn([{ error: { status: 529, type: 'overloaded_error', message: 'Overloaded' } }]);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('overloaded');
    expect(error.retryable).toBe(true);
    expect(error.retryAfterMs).toBeNull();
    const failure = toApplicationFailure(error);
    expect(failure.nonRetryable).toBe(false);
    expect(failure.nextRetryDelay).toBeUndefined();
  });

  it('when the stream carries an overloaded error event, then the error is overloaded and retryable', async () => {
    const { url } = await standIn([{ error: { status: 529, type: 'overloaded_error', message: 'Overloaded', midStream: true } }]);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('overloaded');
    expect(error.retryable).toBe(true);
  });

  it('when the API fails with 500, then the error is server and retryable, honouring retry-after-ms', async () => {
    const { url } = await standIn([{ error: { status: 500, type: 'api_error', message: 'Internal server error', retryAfterMs: 750 } }]);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('server');
    expect(error.retryable).toBe(true);
    expect(error.retryAfterMs).toBe(750);
  });

  it('when the key is invalid (401), then the error is auth, non-retryable, and names no key', async () => {
    const { url, requests } = await standIn([{ text: 'never' }]);
    const error = await failureOf(runAgentTurn(config(url, { apiKey: 'sk-ant-api03-wrong-key-ABCDEFGHIJKL' }), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('auth');
    expect(error.retryable).toBe(false);
    expect(error.status).toBe(401);
    expect(error.message).toMatch(/invalid x-api-key/);
    expect(error.message).toMatch(/manual console keeps working/);
    expect(error.message).not.toContain('wrong-key');
    expect(requests[0]?.authorized).toBe(false);
    expect(requests[0]?.headers.authorization ?? requests[0]?.headers['x-api-key']).not.toContain('wrong-key');
    const failure = toApplicationFailure(error);
    expect(failure.type).toBe('agent_auth');
    expect(failure.nonRetryable).toBe(true);
    expect(NON_RETRYABLE_AGENT_FAILURES).toContain('agent_auth');
  });

  it('when the stand-in is called without a key or with a wrong x-api-key, then it answers with the API error body', async () => {
    const { url } = await standIn([{ text: 'never' }]);
    const wrong = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'nope', 'anthropic-version': '2023-06-01' },
      body: '{}',
    });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
    const missing = await fetch(`${url}/v1/messages`, { method: 'POST', body: '{}' });
    expect(missing.status).toBe(401);
  });

  it('when a conversation leaves a tool_use unanswered, then the stand-in refuses it as the API would (bad_request, not retryable)', async () => {
    const { url } = await standIn([{ text: 'never' }]);
    const messages: MessageParam[] = [
      ...HELLO,
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_x', name: 'pve_status', input: {} }] },
      { role: 'user', content: [{ type: 'text', text: 'and?' }] },
    ];
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages }));
    expect(error.kind).toBe('bad_request');
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/tool_use` ids were found without `tool_result`/);
  });

  it('when the API cannot be reached, then the error is network and retryable', async () => {
    const { url } = await standIn([{ text: 'never' }]);
    await api?.stop();
    api = null;
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('network');
    expect(error.retryable).toBe(true);
  });

  it('when the stream is cut before message_stop, then the turn fails as network (retryable) instead of returning half a reply', async () => {
    const { url } = await standIn([{ text: 'this never arrives', cutStream: true }]);
    const error = await failureOf(runAgentTurn(config(url), { system: SYSTEM, messages: HELLO }));
    expect(error.kind).toBe('network');
    expect(error.retryable).toBe(true);
  });

  it('when retry-after is an HTTP date or junk, then it is parsed or ignored', () => {
    const now = Date.parse('2026-06-11T03:00:00Z');
    expect(parseRetryAfter(new Headers({ 'retry-after': 'Thu, 11 Jun 2026 03:00:05 GMT' }), now)).toBe(5_000);
    expect(parseRetryAfter(new Headers({ 'retry-after': 'soon' }), now)).toBeNull();
    expect(parseRetryAfter(new Headers({ 'retry-after': '-3' }), now)).toBeNull();
    expect(parseRetryAfter(new Headers({ 'retry-after-ms': '120.5', 'retry-after': '9' }), now)).toBe(121);
    expect(parseRetryAfter(null)).toBeNull();
  });
});

describe('agent turn: what is sent', () => {
  it('when a turn is sent, then it carries cache_control on the system prompt, the last tool and the last message, and only the 7 breakglass tools', async () => {
    const { url, requests } = await standIn([{ text: 'ok' }]);
    await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    const body = requests[0]?.body as {
      system: { type: string; text: string; cache_control?: unknown }[];
      tools: { name: string; type?: string; cache_control?: unknown; input_schema: { additionalProperties?: boolean } }[];
      messages: { content: { cache_control?: unknown }[] }[];
      stream: boolean;
      model: string;
      max_tokens: number;
    };
    expect(body.stream).toBe(true);
    expect(body.model).toBe('claude-test-standin');
    expect(body.max_tokens).toBe(1024);
    expect(body.system).toEqual([{ type: 'text', text: SYSTEM, cache_control: { type: 'ephemeral' } }]);
    expect(body.tools.map((tool) => tool.name)).toEqual([...TOOL_NAMES]);
    expect(body.tools).toHaveLength(7);
    // No server tools (web search/fetch, code execution, …): those carry a `type`.
    expect(body.tools.filter((tool) => tool.type !== undefined)).toEqual([]);
    expect(body.tools.map((tool) => tool.name).join(' ')).not.toMatch(/web|fetch|browser|file|upload/i);
    expect(body.tools.every((tool) => tool.input_schema.additionalProperties === false)).toBe(true);
    expect(body.tools.filter((tool) => tool.cache_control).map((tool) => tool.name)).toEqual(['pve_cycle']);
    expect(body.tools[6]?.cache_control).toEqual({ type: 'ephemeral' });
    expect(body.messages[0]?.content[0]?.cache_control).toEqual({ type: 'ephemeral' });
    // The caller's messages were not mutated.
    expect((HELLO[0]?.content as { cache_control?: unknown }[])[0]?.cache_control).toBeUndefined();
  });

  it('when the same prefix is sent twice, then the second turn reads it from the prompt cache', async () => {
    const { url } = await standIn([{ text: 'one' }, { text: 'two' }]);
    const first = await runAgentTurn(config(url), { system: SYSTEM, messages: HELLO });
    const second = await runAgentTurn(config(url), {
      system: SYSTEM,
      messages: [...HELLO, { role: 'assistant', content: [{ type: 'text', text: 'one' }] }, { role: 'user', content: [{ type: 'text', text: 'go on' }] }],
    });
    expect(first.usage.cacheWriteTokens).toBeGreaterThan(0);
    expect(first.usage.cacheReadTokens).toBe(0);
    expect(second.usage.cacheReadTokens).toBeGreaterThanOrEqual(first.usage.cacheWriteTokens);
  });

  it('when the stand-in is asked without streaming, then it answers with a whole message the SDK parses', async () => {
    const { url } = await standIn([{ text: 'Non-streamed.', toolCalls: [{ name: 'pve_forensics', input: { reason: 'look' } }] }]);
    const client = new Anthropic({ apiKey: KEY, baseURL: url, maxRetries: 0, logLevel: 'off', openTelemetry: false });
    const message = await client.messages.create({ model: 'claude-test-standin', max_tokens: 100, messages: HELLO });
    expect(message.stop_reason).toBe('tool_use');
    expect(message.content.map((block) => block.type)).toEqual(['text', 'tool_use']);
    expect(message.content[1]).toMatchObject({ type: 'tool_use', name: 'pve_forensics', input: { reason: 'look' } });
  });
});
