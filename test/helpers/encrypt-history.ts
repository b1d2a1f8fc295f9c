/**
 * A recorded history (the JSON of `temporal workflow show --output json`) as it would have been
 * stored with the payload codec on: every payload the SDK passes through its codec (inputs,
 * results, signal and update arguments, summaries) encrypted. Left plain, as Temporal leaves
 * them: search attributes and headers (read by the server and interceptors, never encoded) and
 * markers (written by the SDK's core, whose patch and local-activity metadata skip the codec).
 */
import type { Payload, PayloadCodec } from '@temporalio/common';

const NOT_ENCODED = new Set(['searchAttributes', 'header', 'markerRecordedEventAttributes']);

interface JsonPayload {
  metadata: Record<string, string>;
  data?: string;
}

const isJsonPayload = (node: unknown): node is JsonPayload =>
  !!node && typeof node === 'object' && 'metadata' in node && typeof (node as JsonPayload).metadata?.encoding === 'string';

const fromJson = (payload: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(payload.metadata).map(([key, value]) => [key, Buffer.from(value, 'base64')])),
  data: Buffer.from(payload.data ?? '', 'base64'),
});

const toJson = (payload: Payload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(payload.metadata ?? {}).map(([key, value]) => [key, Buffer.from(value).toString('base64')])),
  data: Buffer.from(payload.data ?? []).toString('base64'),
});

/** A copy of the history with its payloads encoded by `codec`; `count` says how many were. */
export async function encryptHistoryJson<T>(history: T, codec: PayloadCodec): Promise<{ history: T; count: number }> {
  let count = 0;
  const walk = async (node: unknown, key: string): Promise<unknown> => {
    if (NOT_ENCODED.has(key)) return node;
    if (isJsonPayload(node)) {
      count++;
      return toJson((await codec.encode([fromJson(node)]))[0] as Payload);
    }
    if (Array.isArray(node)) return Promise.all(node.map((item) => walk(item, key)));
    if (node && typeof node === 'object') {
      const entries = await Promise.all(Object.entries(node).map(async ([name, value]) => [name, await walk(value, name)] as const));
      return Object.fromEntries(entries);
    }
    return node;
  };
  return { history: (await walk(history, '')) as T, count };
}
