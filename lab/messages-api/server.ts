/**
 * A local stand-in for the Anthropic Messages API, for tests and the lab. It speaks the real
 * protocol closely enough for the real SDK (pointed at it through `baseURL`):
 *
 * - `POST /v1/messages`, authenticated by `x-api-key` or `Authorization: Bearer` (SDK 1.x sends
 *   the API key as a bearer token); a wrong key gets the API's 401 body.
 * - Non-streaming JSON messages, and streaming SSE: message_start, ping, content_block_start /
 *   content_block_delta (text_delta, input_json_delta split in several partial chunks) /
 *   content_block_stop, message_delta (stop_reason, usage), message_stop; errors as the API
 *   sends them (status + `{"type":"error","error":{…}}` body, retry-after headers), or as an
 *   `event: error` inside a stream.
 * - Validates requests the way the API does where it matters to us (first message from the
 *   user, non-empty text blocks, every tool_use answered by a tool_result in the next message,
 *   at most 4 cache breakpoints), so a conversation-building bug fails here as it would there.
 * - Emulates prompt-cache accounting: the prefix up to a cache_control breakpoint is "written"
 *   once and "read" by later requests that start with it.
 *
 * What it answers is scripted: `script(request, callIndex)` returns a Step. Every request
 * (valid or not) is recorded in `requests`, with credentials masked.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ScriptedToolCall {
  name: string;
  /** The tool input; serialised and streamed in several input_json_delta chunks. */
  input?: unknown;
  /** Sent verbatim instead of `input` (use it for malformed JSON). */
  rawJson?: string;
  /** Defaults to `toolu_standin_<instance>_<call>_<n>`: unique per stand-in instance and call. */
  id?: string;
}

export interface StepError {
  status: number;
  /** API error type: authentication_error, rate_limit_error, overloaded_error, api_error, … */
  type: string;
  message: string;
  retryAfterSeconds?: number;
  retryAfterMs?: number;
  /** Send it as `event: error` after message_start in a 200 stream, as the API does mid-stream. */
  midStream?: boolean;
}

export interface Step {
  text?: string;
  toolCalls?: ScriptedToolCall[];
  /** Default: tool_use when there are tool calls, else end_turn. */
  stopReason?: string;
  error?: StepError;
  /** Wait this long before answering (for deadline tests). */
  delayMs?: number;
  /** Drop the connection after message_start, as a broken proxy would (streaming only). */
  cutStream?: boolean;
}

export interface ScriptRequest {
  model: string;
  max_tokens: number;
  system: unknown;
  messages: { role: string; content: unknown }[];
  tools: { name: string; [key: string]: unknown }[];
  stream: boolean;
}

export type Script = (request: ScriptRequest, callIndex: number) => Step | Promise<Step>;

export interface RecordedRequest {
  method: string;
  path: string;
  /** Lower-cased; credential values masked. */
  headers: Record<string, string>;
  /** Parsed JSON body (null when it did not parse). */
  body: Record<string, unknown> | null;
  rawBody: string;
  authorized: boolean;
  /** The index passed to the script, or null when the request was refused before it. */
  callIndex: number | null;
  status: number;
  receivedAt: number;
}

export interface MessagesApiOptions {
  /** The valid key(s). */
  apiKey: string | string[];
  script: Script;
  host?: string;
  /** 0 (default): a free port. */
  port?: number;
  /** Pause between streamed events, so live output is visible in the lab (default 0). */
  chunkDelayMs?: number;
}

export interface MessagesApi {
  /** Base URL for the SDK, e.g. http://127.0.0.1:41234 */
  url: string;
  requests: RecordedRequest[];
  stop(): Promise<void>;
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/;

class RequestError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

function errorBody(type: string, message: string, requestId: string): string {
  return JSON.stringify({ type: 'error', error: { type, message }, request_id: requestId });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function estimateTokens(value: unknown): number {
  const text = typeof value === 'string' ? value : JSON.stringify(value ?? '');
  return Math.max(1, Math.ceil(text.length / 4));
}

/** Checks a /v1/messages body the way the API would; throws RequestError. */
function validateBody(body: unknown): ScriptRequest {
  if (!isObject(body)) throw new RequestError(400, 'invalid_request_error', 'body: expected a JSON object');
  if (typeof body.model !== 'string' || body.model === '') throw new RequestError(400, 'invalid_request_error', 'model: Field required');
  if (typeof body.max_tokens !== 'number' || !Number.isInteger(body.max_tokens) || body.max_tokens < 1) {
    throw new RequestError(400, 'invalid_request_error', 'max_tokens: Field required (a positive integer)');
  }
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw new RequestError(400, 'invalid_request_error', 'messages: at least one message is required');
  let breakpoints = 0;
  const countBreakpoint = (block: unknown) => {
    if (isObject(block) && block.cache_control) breakpoints++;
  };

  const tools = body.tools === undefined ? [] : body.tools;
  if (!Array.isArray(tools)) throw new RequestError(400, 'invalid_request_error', 'tools: expected an array');
  const toolNames = new Set<string>();
  tools.forEach((tool, index) => {
    if (!isObject(tool) || typeof tool.name !== 'string' || !TOOL_NAME.test(tool.name)) {
      throw new RequestError(400, 'invalid_request_error', `tools.${index}.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`);
    }
    if (toolNames.has(tool.name)) throw new RequestError(400, 'invalid_request_error', `tools: Tool names must be unique (${tool.name})`);
    toolNames.add(tool.name);
    if (tool.type === undefined && (!isObject(tool.input_schema) || tool.input_schema.type !== 'object')) {
      throw new RequestError(400, 'invalid_request_error', `tools.${index}.input_schema.type: Input should be 'object'`);
    }
    countBreakpoint(tool);
  });

  if (Array.isArray(body.system)) body.system.forEach(countBreakpoint);
  else if (body.system !== undefined && typeof body.system !== 'string') throw new RequestError(400, 'invalid_request_error', 'system: expected a string or text blocks');

  messages.forEach((message, index) => {
    if (!isObject(message) || (message.role !== 'user' && message.role !== 'assistant')) {
      throw new RequestError(400, 'invalid_request_error', `messages.${index}.role: Input should be 'user' or 'assistant'`);
    }
    if (index === 0 && message.role !== 'user') throw new RequestError(400, 'invalid_request_error', 'messages: first message must use the "user" role');
    const content = message.content;
    if (typeof content === 'string') {
      if (content === '' && index !== messages.length - 1) throw new RequestError(400, 'invalid_request_error', `messages.${index}: content must be non-empty`);
      return;
    }
    if (!Array.isArray(content) || content.length === 0) throw new RequestError(400, 'invalid_request_error', `messages.${index}: content must be a non-empty string or array`);
    content.forEach((block, blockIndex) => {
      countBreakpoint(block);
      if (!isObject(block)) throw new RequestError(400, 'invalid_request_error', `messages.${index}.content.${blockIndex}: expected an object`);
      if (block.type === 'text' && (typeof block.text !== 'string' || block.text === '')) {
        throw new RequestError(400, 'invalid_request_error', `messages.${index}.content.${blockIndex}: text content blocks must be non-empty`);
      }
      if (block.type === 'tool_use') {
        if (message.role !== 'assistant') throw new RequestError(400, 'invalid_request_error', `messages.${index}.content.${blockIndex}: tool_use blocks are only allowed in assistant messages`);
        if (!isObject(block.input)) throw new RequestError(400, 'invalid_request_error', `messages.${index}.content.${blockIndex}.tool_use.input: Input should be a valid dictionary`);
      }
      if (block.type === 'tool_result' && message.role !== 'user') {
        throw new RequestError(400, 'invalid_request_error', `messages.${index}.content.${blockIndex}: tool_result blocks are only allowed in user messages`);
      }
    });
  });

  // Pairing: each assistant tool_use is answered in the very next message, results first.
  messages.forEach((message, index) => {
    const content = (message as { content: unknown }).content;
    if (!Array.isArray(content)) return;
    const results = content.filter((block) => isObject(block) && block.type === 'tool_result') as { tool_use_id?: unknown }[];
    if (results.length > 0) {
      const previous = messages[index - 1] as { role: string; content: unknown } | undefined;
      const uses = new Set(
        Array.isArray(previous?.content) ? (previous.content as unknown[]).filter((b) => isObject(b) && b.type === 'tool_use').map((b) => (b as { id: string }).id) : [],
      );
      const firstOther = content.findIndex((block) => !(isObject(block) && block.type === 'tool_result'));
      const lastResult = content.map((block) => isObject(block) && block.type === 'tool_result').lastIndexOf(true);
      if (firstOther !== -1 && firstOther < lastResult) {
        throw new RequestError(400, 'invalid_request_error', `messages.${index}: tool_result blocks must come first in the content, before any other block`);
      }
      for (const result of results) {
        if (typeof result.tool_use_id !== 'string' || !uses.has(result.tool_use_id)) {
          throw new RequestError(
            400,
            'invalid_request_error',
            `messages.${index}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${String(result.tool_use_id)}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`,
          );
        }
      }
    }
    if ((message as { role: string }).role === 'assistant') {
      const ids = content.filter((block) => isObject(block) && block.type === 'tool_use').map((block) => (block as { id: string }).id);
      if (ids.length === 0) return;
      const next = messages[index + 1] as { role: string; content: unknown } | undefined;
      const answered = new Set(
        next && Array.isArray(next.content) ? (next.content as unknown[]).filter((b) => isObject(b) && b.type === 'tool_result').map((b) => (b as { tool_use_id: string }).tool_use_id) : [],
      );
      const missing = ids.filter((id) => !answered.has(id));
      if (missing.length > 0) {
        throw new RequestError(
          400,
          'invalid_request_error',
          `messages.${index}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`,
        );
      }
    }
  });
  if (breakpoints > 4) throw new RequestError(400, 'invalid_request_error', `A maximum of 4 blocks with cache_control may be provided. Found ${breakpoints}.`);

  return {
    model: body.model,
    max_tokens: body.max_tokens,
    system: body.system,
    messages: messages as ScriptRequest['messages'],
    tools: tools as ScriptRequest['tools'],
    stream: body.stream === true,
  };
}

/** The cacheable prefix, in the API's order (tools, system, messages), one segment per block. */
function segments(request: ScriptRequest): { text: string; breakpoint: boolean }[] {
  const strip = (block: unknown) => {
    if (!isObject(block)) return JSON.stringify(block);
    const { cache_control: _ignored, ...rest } = block;
    return JSON.stringify(rest);
  };
  const out: { text: string; breakpoint: boolean }[] = [];
  for (const tool of request.tools) out.push({ text: strip(tool), breakpoint: Boolean(tool.cache_control) });
  if (typeof request.system === 'string') out.push({ text: JSON.stringify(request.system), breakpoint: false });
  else if (Array.isArray(request.system)) for (const block of request.system) out.push({ text: strip(block), breakpoint: isObject(block) && Boolean(block.cache_control) });
  for (const message of request.messages) {
    if (typeof message.content === 'string') out.push({ text: `${message.role}:${JSON.stringify(message.content)}`, breakpoint: false });
    else for (const block of message.content as unknown[]) out.push({ text: `${message.role}:${strip(block)}`, breakpoint: isObject(block) && Boolean(block.cache_control) });
  }
  return out;
}

/** Prompt-cache accounting over prefixes seen at breakpoints (the API's longest-prefix lookup). */
class PromptCache {
  private readonly stored = new Set<string>();

  account(request: ScriptRequest): { input: number; read: number; write: number } {
    const parts = segments(request);
    const hashes: string[] = [];
    const tokensUpTo: number[] = [];
    let hash = '';
    let chars = 0;
    for (const part of parts) {
      hash = createHash('sha256').update(hash).update(part.text).digest('hex');
      chars += part.text.length;
      hashes.push(hash);
      tokensUpTo.push(Math.ceil(chars / 4));
    }
    const total = Math.max(1, Math.ceil(chars / 4));
    let read = 0;
    for (let i = hashes.length - 1; i >= 0; i--) {
      if (this.stored.has(hashes[i] as string)) {
        read = tokensUpTo[i] as number;
        break;
      }
    }
    let lastBreakpoint = -1;
    parts.forEach((part, index) => {
      if (part.breakpoint) {
        lastBreakpoint = index;
        this.stored.add(hashes[index] as string);
      }
    });
    const write = lastBreakpoint >= 0 ? Math.max(0, (tokensUpTo[lastBreakpoint] as number) - read) : 0;
    return { input: Math.max(0, total - read - write), read, write };
  }
}

function splitText(text: string): string[] {
  const words = text.split(/(?<=\s)/);
  const chunks: string[] = [];
  for (let i = 0; i < words.length; i += 2) chunks.push(words.slice(i, i + 2).join(''));
  return chunks.filter((chunk) => chunk !== '');
}

/** Splits JSON at arbitrary points (mid-token, mid-string), as the API's partial_json does. */
function splitJson(json: string): string[] {
  if (json.length === 0) return [''];
  const pieces = Math.min(json.length, Math.max(3, Math.ceil(json.length / 24)));
  const size = Math.ceil(json.length / pieces);
  const chunks = [''];
  for (let i = 0; i < json.length; i += size) chunks.push(json.slice(i, i + size));
  return chunks;
}

function maskHeaders(headers: IncomingMessage['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const text = Array.isArray(value) ? value.join(', ') : (value ?? '');
    out[name] = name === 'x-api-key' ? '***' : name === 'authorization' ? text.replace(/^(\S+\s+).*$/, '$1***') : text;
  }
  return out;
}

function presentedKey(req: IncomingMessage): string | null {
  const header = req.headers['x-api-key'];
  if (typeof header === 'string' && header !== '') return header;
  const authorization = req.headers.authorization;
  const match = typeof authorization === 'string' ? /^Bearer\s+(.+)$/i.exec(authorization) : null;
  return match?.[1]?.trim() ?? null;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new RequestError(413, 'request_too_large', 'Request exceeds the maximum allowed number of bytes.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function startMessagesApi(options: MessagesApiOptions): Promise<MessagesApi> {
  const validKeys = new Set(Array.isArray(options.apiKey) ? options.apiKey : [options.apiKey]);
  const requests: RecordedRequest[] = [];
  const cache = new PromptCache();
  const chunkDelay = options.chunkDelayMs ?? 0;
  let callIndex = 0;
  let requestNumber = 0;
  // Ids are unique across stand-in restarts too (the session dedupes work items by tool key).
  const instance = randomBytes(4).toString('hex');

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const requestId = `req_standin_${instance}_${String(++requestNumber).padStart(6, '0')}`;
    const record: RecordedRequest = {
      method: req.method ?? '',
      path: (req.url ?? '').split('?')[0] ?? '',
      headers: maskHeaders(req.headers),
      body: null,
      rawBody: '',
      authorized: false,
      callIndex: null,
      status: 0,
      receivedAt: Date.now(),
    };
    requests.push(record);
    const sendError = (status: number, type: string, message: string, headers: Record<string, string> = {}) => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json', 'request-id': requestId, ...headers });
      res.end(errorBody(type, message, requestId));
    };

    try {
      record.rawBody = await readBody(req);
      if (record.method !== 'POST' || record.path !== '/v1/messages') return sendError(404, 'not_found_error', `Not found: ${record.method} ${record.path}`);
      const key = presentedKey(req);
      if (key === null) return sendError(401, 'authentication_error', 'x-api-key header is required');
      if (!validKeys.has(key)) return sendError(401, 'authentication_error', 'invalid x-api-key');
      record.authorized = true;
      if (!req.headers['anthropic-version']) return sendError(400, 'invalid_request_error', 'anthropic-version: header is required');
      let parsed: unknown;
      try {
        parsed = JSON.parse(record.rawBody);
      } catch {
        return sendError(400, 'invalid_request_error', 'There was an error parsing the body of your request: not valid JSON');
      }
      record.body = isObject(parsed) ? parsed : null;
      const request = validateBody(parsed);
      record.callIndex = callIndex;
      const step = await options.script(request, callIndex++);
      if (step.delayMs) await sleep(step.delayMs);
      if (res.destroyed) return;

      const error = step.error;
      if (error && !error.midStream) {
        const headers: Record<string, string> = {};
        if (error.retryAfterSeconds !== undefined) headers['retry-after'] = String(error.retryAfterSeconds);
        if (error.retryAfterMs !== undefined) headers['retry-after-ms'] = String(error.retryAfterMs);
        return sendError(error.status, error.type, error.message, headers);
      }

      const usage = cache.account(request);
      const messageId = `msg_standin_${instance}_${String(record.callIndex).padStart(4, '0')}`;
      const toolCalls = (step.toolCalls ?? []).map((call, index) => ({
        id: call.id ?? `toolu_standin_${instance}_${String(record.callIndex).padStart(4, '0')}_${index}`,
        name: call.name,
        json: call.rawJson ?? JSON.stringify(call.input ?? {}),
      }));
      const text = step.text ?? '';
      const stopReason = step.stopReason ?? (toolCalls.length > 0 ? 'tool_use' : 'end_turn');
      const outputTokens = estimateTokens(text + toolCalls.map((call) => call.json).join(''));
      const usageBody = {
        input_tokens: usage.input,
        cache_creation_input_tokens: usage.write,
        cache_read_input_tokens: usage.read,
        output_tokens: outputTokens,
      };

      if (!request.stream) {
        const content: unknown[] = [];
        if (text) content.push({ type: 'text', text, citations: null });
        for (const call of toolCalls) {
          let input: unknown;
          try {
            input = JSON.parse(call.json);
          } catch {
            input = call.json;
          }
          content.push({ type: 'tool_use', id: call.id, name: call.name, input, caller: { type: 'direct' } });
        }
        record.status = 200;
        res.writeHead(200, { 'content-type': 'application/json', 'request-id': requestId });
        res.end(
          JSON.stringify({ id: messageId, type: 'message', role: 'assistant', model: request.model, content, stop_reason: stopReason, stop_sequence: null, usage: usageBody }),
        );
        return;
      }

      record.status = 200;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'request-id': requestId });
      const send = async (event: string, data: unknown) => {
        if (res.destroyed) return;
        res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        if (chunkDelay > 0) await sleep(chunkDelay);
      };
      await send('message_start', {
        type: 'message_start',
        message: {
          id: messageId,
          type: 'message',
          role: 'assistant',
          model: request.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { ...usageBody, output_tokens: 1 },
        },
      });
      await send('ping', { type: 'ping' });
      if (step.cutStream) {
        res.destroy();
        return;
      }
      if (error?.midStream) {
        await send('error', { type: 'error', error: { type: error.type, message: error.message }, request_id: requestId });
        res.end();
        return;
      }
      let index = 0;
      if (text) {
        await send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '', citations: null } });
        for (const chunk of splitText(text)) await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: chunk } });
        await send('content_block_stop', { type: 'content_block_stop', index });
        index++;
      }
      for (const call of toolCalls) {
        await send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'tool_use', id: call.id, name: call.name, input: {}, caller: { type: 'direct' } } });
        for (const chunk of splitJson(call.json)) {
          await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: chunk } });
        }
        await send('content_block_stop', { type: 'content_block_stop', index });
        index++;
      }
      await send('message_delta', { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage: usageBody });
      await send('message_stop', { type: 'message_stop' });
      res.end();
    } catch (error) {
      if (error instanceof RequestError) return sendError(error.status, error.type, error.message);
      if (!res.headersSent) return sendError(500, 'api_error', 'Internal server error');
      res.end();
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: `http://${host}:${address.port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
