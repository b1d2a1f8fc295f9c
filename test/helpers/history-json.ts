/**
 * Loads a history in the standard JSON form (`temporal workflow show --output json`) as the
 * History object `Worker.runReplayHistories` replays.
 *
 * Why not the SDK's own `historyFromJSON`: in this install @temporalio/common and
 * @temporalio/proto each carry their own copy of protobufjs (the root has an older one), and
 * protobufjs' JSON reader rejects a message type from the other copy ("type must be a Type").
 * So the reader is taken from the copy @temporalio/proto itself uses.
 */
import { createRequire } from 'node:module';
import type { temporal } from '@temporalio/proto';

const require = createRequire(import.meta.url);
const protoPath = require.resolve('@temporalio/proto');
const proto = require(protoPath) as Record<string, unknown>;
const { patchProtobufRoot } = require('@temporalio/proto/lib/patch-protobuf-root') as { patchProtobufRoot<T>(root: T): T };
const protojson = createRequire(protoPath)('protobufjs/ext/protojson') as {
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
};
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType('temporal.api.history.v1.History');

export function historyFromShowJson(json: unknown): temporal.api.history.v1.IHistory {
  if (!json || typeof json !== 'object' || !Array.isArray((json as { events?: unknown }).events)) throw new TypeError('expected { events: [...] }');
  const history = protojson.fromJson(historyType, json, { ignoreUnknownFields: true });
  if (!history) throw new TypeError('not a history');
  return history as temporal.api.history.v1.IHistory;
}
