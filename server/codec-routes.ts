/**
 * The codec server: Temporal's remote codec protocol on the console, so the Temporal Web UI and
 * CLI show encrypted history decoded to the people the console lets in, and to nobody else.
 *
 *   POST /codec/decode   { payloads: [{ metadata: { k: base64 }, data: base64 }] } → the same shape
 *   POST /codec/encode   likewise (the Web UI encodes what a person types, e.g. a signal's input)
 *
 * Callers authenticate as for the API (bearer token, the console's login cookie, or the proxy).
 * Browsers may call it only from the console's own origin and the configured Web UI origins
 * (codec.webUiOrigins: CORS with credentials, so the console's cookie rides along); anything else
 * is refused before a byte is decoded. Every call is logged with the operator, the namespace and
 * the key ids involved, never with what the payloads hold.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Payload, PayloadCodec } from '@temporalio/common';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppDeps } from './app.js';
import { KEY_ID_METADATA, PayloadDecryptionError, UnknownCodecKeyError } from './payload-codec.js';
import { HttpError, errorResponses, operatorOf } from './route-shared.js';

export interface CodecServerDeps {
  codec: PayloadCodec;
  /** Origins (scheme://host[:port]) of the Temporal Web UI pages that may call from a browser. */
  webUiOrigins: string[];
  /** Calls per minute per client address (default 600: the Web UI decodes event by event). */
  rateLimit?: number;
}

/** A whole history page of forensics documents fits; a flood does not. */
export const CODEC_BODY_LIMIT_BYTES = 4 * 1024 * 1024;
const MAX_PAYLOADS = 2_000;
/** What one request may decode to in all (a single payload may inflate to the codec's own bound). */
const MAX_RESULT_BYTES = 64 * 1024 * 1024;
const ALLOWED_HEADERS = 'content-type, x-namespace, authorization, authorization-extras';

const Base64 = Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: CODEC_BODY_LIMIT_BYTES });
const JsonPayload = Type.Object(
  {
    metadata: Type.Optional(Type.Record(Type.String(), Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$', maxLength: 4096 }), { maxProperties: 32, propertyNames: { pattern: '^[A-Za-z0-9._/-]{1,100}$' } })),
    data: Type.Optional(Base64),
  },
  { additionalProperties: false },
);
const Payloads = Type.Object({ payloads: Type.Array(JsonPayload, { maxItems: MAX_PAYLOADS }) }, { additionalProperties: false });
type JsonPayloads = Static<typeof Payloads>;

const fromJson = ({ metadata, data }: Static<typeof JsonPayload>): Payload => ({
  metadata: Object.fromEntries(Object.entries(metadata ?? {}).map(([key, value]) => [key, Buffer.from(value, 'base64')])),
  data: Buffer.from(data ?? '', 'base64'),
});
const toJson = (payload: Payload): Static<typeof JsonPayload> => ({
  metadata: Object.fromEntries(Object.entries(payload.metadata ?? {}).map(([key, value]) => [key, Buffer.from(value).toString('base64')])),
  data: Buffer.from(payload.data ?? []).toString('base64'),
});
const keyIdsOf = (payloads: Payload[]) => [...new Set(payloads.map((payload) => Buffer.from(payload.metadata?.[KEY_ID_METADATA] ?? []).toString('utf8')).filter(Boolean))];

export function registerCodecRoutes(app: FastifyInstance, deps: AppDeps, server: CodecServerDeps): void {
  const allowed = new Set(server.webUiOrigins);
  /** The request's Origin when a browser page of another origin may make it; null when no Origin was sent. */
  const checkOrigin = (request: FastifyRequest): string | null => {
    const origin = request.headers.origin;
    if (origin === undefined) return null;
    const host = request.headers.host;
    if (allowed.has(origin) || (host !== undefined && (origin === `http://${host}` || origin === `https://${host}`))) return origin;
    throw new HttpError(403, 'origin_refused', `origin ${origin.slice(0, 200)} may not call the codec server (codec.webUiOrigins: ${[...allowed].join(', ') || 'none'})`);
  };
  const corsHeaders = (reply: FastifyReply, origin: string | null) => {
    reply.header('vary', 'Origin');
    if (origin === null) return;
    reply.header('access-control-allow-origin', origin);
    reply.header('access-control-allow-credentials', 'true');
  };

  // Before the body is read: a refused origin, a missing login or a wrong media type costs nothing.
  const gate = async (request: FastifyRequest, reply: FastifyReply) => {
    const origin = checkOrigin(request);
    corsHeaders(reply, origin);
    (request as FastifyRequest & { operator: string }).operator = deps.auth.identify(request);
    const type = request.headers['content-type'] ?? '';
    if (!/^application\/json\s*(;|$)/i.test(type)) throw new HttpError(415, 'unsupported_media_type', `content-type: must be application/json (got ${JSON.stringify(type.slice(0, 100))})`);
  };

  const route = (direction: 'decode' | 'encode') => {
    const path = `/codec/${direction}`;
    app.options(path, { schema: { hide: true } }, async (request, reply) => {
      const origin = checkOrigin(request);
      corsHeaders(reply, origin);
      reply.header('access-control-allow-methods', 'POST');
      reply.header('access-control-allow-headers', ALLOWED_HEADERS);
      reply.header('access-control-max-age', '600');
      return reply.code(204).send();
    });
    app.post(
      path,
      {
        bodyLimit: CODEC_BODY_LIMIT_BYTES,
        preParsing: gate,
        config: { rateLimit: { max: server.rateLimit ?? 600, timeWindow: '1 minute', keyGenerator: (request: FastifyRequest) => `codec:${request.ip}` } },
        schema: { summary: `Temporal remote codec: ${direction} payloads`, tags: ['codec'], body: Payloads, response: { 200: Payloads, ...errorResponses, 413: errorResponses[400], 415: errorResponses[400] } },
      },
      async (request) => {
        const payloads = (request.body as JsonPayloads).payloads.map(fromJson);
        const result: Payload[] = [];
        // One at a time, with a running total: a small request of payloads that inflate (each
        // within its own bound) must not add up to gigabytes in the console's memory.
        let total = 0;
        for (const payload of payloads) {
          let one: Payload;
          try {
            [one] = (direction === 'decode' ? await server.codec.decode([payload]) : await server.codec.encode([payload])) as [Payload];
          } catch (error) {
            if (error instanceof UnknownCodecKeyError || error instanceof PayloadDecryptionError) {
              request.log.warn({ operator: operatorOf(request), payloads: payloads.length }, `codec ${direction} refused: ${error.message}`);
              throw new HttpError(400, 'bad_payload', error.message);
            }
            throw error;
          }
          total += (one.data?.length ?? 0) + Object.values(one.metadata ?? {}).reduce((sum, value) => sum + (value?.length ?? 0), 0);
          if (total > MAX_RESULT_BYTES) throw new HttpError(413, 'too_large', `the ${direction}d payloads would exceed ${MAX_RESULT_BYTES} bytes: ask for fewer at a time`);
          result.push(one);
        }
        const namespace = request.headers['x-namespace'];
        request.log.info(
          { operator: operatorOf(request), namespace: typeof namespace === 'string' ? namespace.slice(0, 200) : undefined, payloads: payloads.length, keyIds: keyIdsOf(direction === 'decode' ? payloads : result) },
          `codec ${direction}`,
        );
        return { payloads: result.map(toJson) };
      },
    );
  };
  route('decode');
  route('encode');
}
