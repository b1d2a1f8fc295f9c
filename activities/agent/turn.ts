/**
 * One model turn: a streamed Messages API call with the breakglass tools.
 *
 * - Streams: text deltas are reported as they arrive; tool input is assembled from the
 *   input_json_delta chunks and parsed once the stream ends (unparseable JSON is returned as
 *   the raw string, which validateToolCall reports back to the model as a tool error).
 * - Prompt caching: cache_control on the system block, on the last tool, and on the last
 *   block of the last message (the rebuilt conversation only grows, so the next turn reads
 *   this turn's prefix from the cache).
 * - Deadline: `timeoutMs` covers the whole call, stream included; `signal` cancels it.
 * - Failures are thrown as AgentError (errors.ts). The SDK's own retries default to 0: the
 *   Temporal activity retry does the backoff (see errors.ts for why).
 */
import Anthropic from '@anthropic-ai/sdk';
import type { ContentBlockParam, MessageParam, TextBlockParam, Tool } from '@anthropic-ai/sdk/resources/messages.js';
import { AgentError, toAgentError } from './errors.js';
import { AGENT_TOOLS } from './tools.js';
import type { AgentToolCall, AgentUsage } from './types.js';

export interface AgentModelConfig {
  apiKey: string;
  /** Default https://api.anthropic.com (never read from the environment here). */
  baseURL?: string;
  model: string;
  maxTokens: number;
  /** Deadline of one call, stream included. */
  timeoutMs: number;
  /** SDK-internal retries; default 0 (Temporal retries the activity instead). */
  maxRetries?: number;
}

export interface AgentTurnRequest {
  system: string;
  messages: MessageParam[];
  /** Called with each piece of text as it streams in (errors thrown by it are ignored). */
  onTextDelta?: (text: string) => void;
  signal?: AbortSignal;
}

export interface AgentTurnResult {
  text: string;
  toolCalls: AgentToolCall[];
  /** end_turn, tool_use, max_tokens, refusal, … ("unknown" when the API sent none). */
  stopReason: string;
  usage: AgentUsage;
  /** The model that answered, and the API's message id. */
  model: string;
  messageId: string;
}

export const DEFAULT_BASE_URL = 'https://api.anthropic.com';
const EPHEMERAL = { type: 'ephemeral' } as const;

/** The tools as sent: a copy, with the cache breakpoint on the last one. */
export function toolsForRequest(tools: readonly Tool[] = AGENT_TOOLS): Tool[] {
  return tools.map((tool, index) => (index === tools.length - 1 ? { ...tool, cache_control: EPHEMERAL } : { ...tool }));
}

/** A copy of `messages` with a cache breakpoint on the last block of the last message. */
export function withConversationBreakpoint(messages: MessageParam[]): MessageParam[] {
  const last = messages[messages.length - 1];
  if (!last || last.role === 'system') return messages;
  const blocks: ContentBlockParam[] = typeof last.content === 'string' ? [{ type: 'text', text: last.content }] : [...last.content];
  const final = blocks[blocks.length - 1];
  if (!final || !('type' in final) || !['text', 'tool_result', 'tool_use'].includes(final.type)) return messages;
  blocks[blocks.length - 1] = { ...final, cache_control: EPHEMERAL } as ContentBlockParam;
  return [...messages.slice(0, -1), { ...last, content: blocks } as MessageParam];
}

interface TextAccumulator {
  kind: 'text';
}
interface ToolAccumulator {
  kind: 'tool';
  id: string;
  name: string;
  json: string;
  initial: unknown;
}

function parseToolInput(tool: ToolAccumulator): unknown {
  if (tool.json.trim() === '') return tool.initial !== null && typeof tool.initial === 'object' ? tool.initial : {};
  try {
    return JSON.parse(tool.json) as unknown;
  } catch {
    // Malformed JSON from the model (or cut off by max_tokens): hand the raw text on.
    return tool.json;
  }
}

export async function runAgentTurn(config: AgentModelConfig, request: AgentTurnRequest): Promise<AgentTurnResult> {
  const client = new Anthropic({
    apiKey: config.apiKey,
    baseURL: config.baseURL ?? DEFAULT_BASE_URL,
    maxRetries: config.maxRetries ?? 0,
    timeout: config.timeoutMs,
    // No env-driven tracing or logging: request bodies hold devvm output.
    openTelemetry: false,
    logLevel: 'off',
  });

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, config.timeoutMs);
  const onAbort = () => controller.abort();
  if (request.signal?.aborted) controller.abort();
  request.signal?.addEventListener('abort', onAbort, { once: true });

  const system: TextBlockParam[] = [{ type: 'text', text: request.system, cache_control: EPHEMERAL }];
  const blocks = new Map<number, TextAccumulator | ToolAccumulator>();
  const toolOrder: ToolAccumulator[] = [];
  let text = '';
  let stopReason: string | null = null;
  let model = config.model;
  let messageId = '';
  let stopped = false;
  const usage: AgentUsage = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 };

  const emit = (piece: string) => {
    text += piece;
    if (!request.onTextDelta || piece === '') return;
    try {
      request.onTextDelta(piece);
    } catch {
      // A broken live-output listener must not cost the turn.
    }
  };

  try {
    const stream = await client.messages.create(
      {
        model: config.model,
        max_tokens: config.maxTokens,
        system,
        tools: toolsForRequest(),
        messages: withConversationBreakpoint(request.messages),
        stream: true,
      },
      { signal: controller.signal },
    );
    for await (const event of stream) {
      switch (event.type) {
        case 'message_start': {
          messageId = event.message.id;
          model = event.message.model || model;
          const u = event.message.usage;
          usage.inputTokens = u.input_tokens ?? 0;
          usage.outputTokens = u.output_tokens ?? 0;
          usage.cacheReadTokens = u.cache_read_input_tokens ?? 0;
          usage.cacheWriteTokens = u.cache_creation_input_tokens ?? 0;
          break;
        }
        case 'content_block_start': {
          const block = event.content_block;
          if (block.type === 'text') {
            blocks.set(event.index, { kind: 'text' });
            if (text !== '') emit('\n\n');
            emit(block.text ?? '');
          } else if (block.type === 'tool_use') {
            const tool: ToolAccumulator = { kind: 'tool', id: block.id, name: block.name, json: '', initial: block.input };
            blocks.set(event.index, tool);
            toolOrder.push(tool);
          }
          break;
        }
        case 'content_block_delta': {
          const block = blocks.get(event.index);
          if (event.delta.type === 'text_delta' && block?.kind === 'text') emit(event.delta.text);
          else if (event.delta.type === 'input_json_delta' && block?.kind === 'tool') block.json += event.delta.partial_json;
          break;
        }
        case 'message_delta': {
          stopReason = event.delta.stop_reason ?? stopReason;
          const u = event.usage;
          if (u.output_tokens !== null && u.output_tokens !== undefined) usage.outputTokens = u.output_tokens;
          if (u.input_tokens !== null && u.input_tokens !== undefined) usage.inputTokens = u.input_tokens;
          if (u.cache_read_input_tokens !== null && u.cache_read_input_tokens !== undefined) usage.cacheReadTokens = u.cache_read_input_tokens;
          if (u.cache_creation_input_tokens !== null && u.cache_creation_input_tokens !== undefined) usage.cacheWriteTokens = u.cache_creation_input_tokens;
          break;
        }
        case 'message_stop':
          stopped = true;
          break;
        default:
          break;
      }
    }
    // The SDK ends the iteration quietly when aborted: tell a deadline from a cancellation.
    if (controller.signal.aborted) throw toAgentError(null, timedOut ? { timedOut: true } : { cancelled: true });
    if (!stopped) throw new AgentError('network', 'the model stream ended before message_stop');
  } catch (error) {
    throw toAgentError(error, { timedOut, cancelled: !timedOut && request.signal?.aborted === true });
  } finally {
    clearTimeout(timer);
    request.signal?.removeEventListener('abort', onAbort);
  }

  return {
    text,
    toolCalls: toolOrder.map((tool) => ({ id: tool.id, name: tool.name, input: parseToolInput(tool) })),
    stopReason: stopReason ?? 'unknown',
    usage,
    model,
    messageId,
  };
}
