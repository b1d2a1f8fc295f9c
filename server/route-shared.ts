/**
 * What server/app.ts and the route files share: the TypeBox pieces of the API contract, the
 * `schema()` helper every route uses, the error a route throws, the operator a route acts for,
 * and the content security policy (the event stream writes its own headers).
 */
import { Type, type TSchema } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { MAX_REASON_LENGTH } from '../workflows/messages.js';

export const ErrorBody = Type.Object({ error: Type.String(), message: Type.String() });
export const Loose = Type.Object({}, { additionalProperties: true });
export const SessionId = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9._-]{1,200}$' }) });
export const Accepted = Type.Object({ key: Type.String(), approvalId: Type.Union([Type.String(), Type.Null()]) });
export const Ok = Type.Object({ ok: Type.Boolean() });
export const Reason = Type.String({ maxLength: MAX_REASON_LENGTH });

export const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 429: ErrorBody, 500: ErrorBody };

export function schema<B extends TSchema | undefined, R extends TSchema>(options: {
  body?: B;
  params?: TSchema;
  querystring?: TSchema;
  headers?: TSchema;
  response: R;
  summary: string;
  tags?: string[];
}) {
  return {
    schema: {
      summary: options.summary,
      tags: options.tags ?? ['sessions'],
      ...(options.body ? { body: options.body } : {}),
      ...(options.headers ? { headers: options.headers } : {}),
      ...(options.params ? { params: options.params } : {}),
      ...(options.querystring ? { querystring: options.querystring } : {}),
      response: { 200: options.response, ...errorResponses },
    },
  };
}

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** The preHandler built in buildApp: names the operator and refuses cross-site mutations. */
export type Authenticated = (request: FastifyRequest) => Promise<void>;

export const operatorOf = (request: FastifyRequest) => (request as FastifyRequest & { operator: string }).operator;
