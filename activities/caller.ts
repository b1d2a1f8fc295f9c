/**
 * Who sent a session message, from the worker's side: the console's attestation checked with
 * the key only the console and the worker hold (server/attestation.ts), and for a message that
 * has none, the Temporal client identity the server wrote into history when it arrived.
 */
import { Context } from '@temporalio/activity';
import type { Payload } from '@temporalio/common';
import proto from '@temporalio/proto';
import { checkAttestation, type AttestationVerdict } from '../server/attestation.js';

export interface AttestationCheck {
  sessionId: string;
  /** The Update or Signal name. */
  messageName: string;
  message: unknown;
}

export function checkOperatorAttestation(key: Buffer, check: AttestationCheck): AttestationVerdict {
  return checkAttestation(key, check.sessionId, check.messageName, check.message);
}

export interface CallerLookup {
  workflowId: string;
  runId: string;
  /** An Update's id; else the Signal's name and its argument, matched against history. */
  updateId?: string;
  signalName?: string;
  message?: unknown;
}

const EventType = proto.temporal.api.enums.v1.EventType;
const PAGES = 20;

/**
 * The identity a Temporal client gave when it sent this Update or Signal (clients choose it
 * themselves: it says which tool and host sent it, not who a person is). Read newest-first: the
 * message is near the end of the history.
 */
export async function temporalCaller(lookup: CallerLookup): Promise<string> {
  const { client, info } = Context.current();
  const service = client.connection.workflowService;
  const wanted = lookup.signalName !== undefined ? JSON.stringify(lookup.message ?? null) : null;
  // Signal arguments in history went through the sender's codec (encrypted, when it had one).
  const { payloadConverter, payloadCodecs } = client.options.loadedDataConverter;
  const decodeFirst = async (payload: Payload) => {
    let decoded = [payload];
    for (const codec of [...payloadCodecs].reverse()) decoded = await codec.decode(decoded);
    return payloadConverter.fromPayload(decoded[0] as Payload);
  };
  let nextPageToken: Uint8Array | undefined;
  for (let page = 0; page < PAGES; page++) {
    const response = await service.getWorkflowExecutionHistoryReverse({
      namespace: info.workflowNamespace,
      execution: { workflowId: lookup.workflowId, runId: lookup.runId },
      maximumPageSize: 200,
      ...(nextPageToken ? { nextPageToken } : {}),
    });
    for (const event of response.history?.events ?? []) {
      if (lookup.updateId !== undefined && event.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) {
        const meta = event.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.meta;
        if (meta?.updateId === lookup.updateId) return meta.identity || '(none given)';
      }
      if (wanted !== null && event.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) {
        const signaled = event.workflowExecutionSignaledEventAttributes;
        if (signaled?.signalName !== lookup.signalName) continue;
        const [first] = signaled?.input?.payloads ?? [];
        const argument = first ? await decodeFirst(first).catch(() => undefined) : null;
        if (JSON.stringify(argument) === wanted) return signaled?.identity || '(none given)';
      }
    }
    if (!response.nextPageToken?.length) break;
    nextPageToken = response.nextPageToken;
  }
  return '(not found in history)';
}
