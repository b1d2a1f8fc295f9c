/**
 * The HTTP API and the console's static files, as a Fastify app factory (no listen here: see
 * server/main.ts). Routes are a stable contract: every body, param and response has a schema,
 * and every error is JSON `{ error, message }` naming the field. The API's own routes are in
 * server/auth-routes.ts and server/session-routes.ts, their shared schemas in server/route-shared.ts.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifyStatic from '@fastify/static';
import fastifySwagger from '@fastify/swagger';
import { Type } from '@sinclair/typebox';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Registry } from 'prom-client';
import { AuthError, type Authenticator } from './auth.js';
import { registerAuthRoutes } from './auth-routes.js';
import { registerCodecRoutes, type CodecServerDeps } from './codec-routes.js';
import type { LiveBus, LiveChunk } from './live-bus.js';
import type { SessionEvents } from './events.js';
import { duplicateKey } from './json-body.js';
import { CSP, HttpError, Loose, schema, type Authenticated } from './route-shared.js';
import { registerSessionRoutes } from './session-routes.js';
import type { Sessions } from './sessions.js';

export interface AgentStatus {
  /** `live`: the real Messages API; `demo`: the local stand-in (scripted); `off`: manual console. */
  mode: 'live' | 'demo' | 'off';
  reason: string;
}

export interface AppDeps {
  sessions: Sessions;
  events: SessionEvents;
  auth: Authenticator;
  /** Temporal reachable and (when this process runs one) the worker polling; what the codec does with history. */
  /** `searchAttributes`: null when registered, else what is missing and how to register it. */
  readiness: () => Promise<{ temporal: boolean; worker: boolean | null; codec?: string; version?: string; searchAttributes?: string | null }>;
  temporalUiUrl: string | null;
  namespace: string;
  agent: AgentStatus;
  uiDir?: string;
  logger?: boolean | object;
  /** Requests per minute per operator on mutating routes. */
  mutationRateLimit?: number;
  /** Bearer token a metrics scraper presents for /metrics (config metrics.tokenFile). */
  metricsToken?: string | null;
  /** Login attempts per minute and client address (default 10). */
  loginRateLimit?: number;
  heartbeatMs?: number;
  /** Prometheus registry served at /metrics. */
  metrics?: Registry;
  /** Live chunks pushed by a worker in another process (shared token), into this bus. */
  livePush?: { token: string; bus: LiveBus };
  /** The codec server (POST /codec/decode, /codec/encode) for the Temporal Web UI and CLI; absent without a codec. */
  codecServer?: CodecServerDeps;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger ?? false,
    bodyLimit: 64 * 1024,
    // ajv: report every problem with its path; coerce query strings (cursor) to numbers.
    // No type coercion: `{"verb":["cycle"]}` or `{"timeoutSeconds":true}` is a bad request, not a
    // cycle or a one-second timeout. Numbers in query strings are declared as digit strings.
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
  });

  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'Breakglass console API', version: '1', description: 'Sessions, verbs, commands, approvals and live events of the breakglass console.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(fastifyRateLimit, { global: false });

  // Fastify's own JSON parser (prototype poisoning refused), plus: no key given twice.
  const defaultJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    defaultJson(request, body as string, (error, parsed) => {
      if (error) return done(error, undefined);
      const repeated = duplicateKey(body as string);
      if (repeated !== null) return done(new HttpError(400, 'bad_request', `body: the key "${repeated}" is given twice`), undefined);
      done(null, parsed);
    });
  });

  app.decorateRequest('operator', '');

  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('permissions-policy', 'camera=(), microphone=(), geolocation=()');
    reply.header('cross-origin-opener-policy', 'same-origin');
    reply.header('cross-origin-resource-policy', 'same-origin');
    return payload;
  });

  // One JSON line per API call with who did what to which session (pino, via Fastify's logger).
  app.addHook('onResponse', async (request, reply) => {
    if (!request.url.startsWith('/api/sessions')) return;
    const session = (request.params as { id?: string } | undefined)?.id;
    request.log.info(
      { session, operator: (request as FastifyRequest & { operator?: string }).operator || undefined, method: request.method, route: request.routeOptions.url, status: reply.statusCode },
      'api',
    );
  });

  app.setErrorHandler((error: Error & { validation?: unknown; statusCode?: number; code?: string }, request, reply) => {
    if (error instanceof AuthError) return reply.code(error.statusCode).send({ error: error.statusCode === 401 ? 'unauthenticated' : 'forbidden', message: error.message });
    if (error instanceof HttpError) return reply.code(error.statusCode).send({ error: error.code, message: error.message });
    if (error.validation) return reply.code(400).send({ error: 'bad_request', message: error.message });
    if (error instanceof WorkflowNotFoundError) return reply.code(404).send({ error: 'not_found', message: 'no such session (or it has ended)' });
    if (error instanceof WorkflowUpdateFailedError) {
      const cause = error.cause as Error | undefined;
      return reply.code(422).send({ error: 'rejected', message: cause?.message ?? error.message });
    }
    if (error.statusCode === 429) return reply.code(429).send({ error: 'rate_limited', message: 'too many requests: slow down' });
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(error.statusCode).send({ error: error.code?.toLowerCase() ?? 'bad_request', message: error.message });
    }
    if (/already completed|workflow execution already completed/i.test(error.message)) {
      return reply.code(409).send({ error: 'session_closed', message: 'the session has ended' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: 'internal', message: 'internal error (see the server log)' });
  });

  app.setNotFoundHandler((request, reply) => {
    // The console routes by URL fragment: only the bare page falls back to index.html, so a
    // missing asset is a 404 rather than HTML served under a script's name.
    if (request.url.startsWith('/api/') || request.method !== 'GET' || !deps.uiDir || /\.[a-z0-9]+(\?|$)/i.test(request.url)) {
      return reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` });
    }
    return reply.type('text/html').sendFile('index.html');
  });

  // ---------------------------------------------------------------- authentication + CSRF
  const authenticated: Authenticated = async (request: FastifyRequest) => {
    const operator = deps.auth.identify(request);
    (request as FastifyRequest & { operator: string }).operator = operator;
    // A bearer token exempts a mutation (browsers never attach one by themselves); in proxy mode
    // an Authorization header is not our credential (the proxy's Basic auth is ambient) and does not.
    if (request.method !== 'GET' && request.method !== 'HEAD' && !(deps.auth.mode !== 'proxy' && request.headers.authorization)) {
      // Cookie- or proxy-authenticated mutation: it must come from our own pages.
      const site = request.headers['sec-fetch-site'];
      const origin = request.headers.origin;
      const host = request.headers.host;
      const sameOrigin = origin !== undefined && host !== undefined && (origin === `http://${host}` || origin === `https://${host}`);
      if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new HttpError(403, 'csrf', `cross-site request refused (sec-fetch-site: ${site})`);
      if (!sameOrigin) throw new HttpError(403, 'csrf', 'origin: cross-site or missing Origin header on a cookie-authenticated request');
    }
  };

  // ------------------------------------------------------------------------- routes
  app.get('/healthz', schema({ summary: 'process up', tags: ['health'], response: Type.Object({ ok: Type.Boolean() }) }), async () => ({ ok: true }));

  app.get(
    '/readyz',
    { schema: { summary: 'Temporal reachable and the worker polling', tags: ['health'], response: { 200: Loose, 503: Loose } } },
    async (_request, reply) => {
      const readiness = await deps.readiness();
      const ready = readiness.temporal && readiness.worker !== false && !readiness.searchAttributes;
      return reply.code(ready ? 200 : 503).send({ ready, ...readiness });
    },
  );

  // What the API offers is for those who may use it.
  app.get('/api/docs', { preHandler: authenticated, schema: { hide: true } }, async () => app.swagger());

  if (deps.metrics) {
    const registry = deps.metrics;
    // Who runs what, how often it fails, how much the agent costs: for a scraper holding the
    // metrics token, or a logged-in operator — not for anyone who can reach the port.
    const scraper = deps.metricsToken ? createHash('sha256').update(deps.metricsToken).digest() : null;
    const scraperOrOperator = async (request: FastifyRequest) => {
      const given = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
      if (scraper && given !== undefined && timingSafeEqual(createHash('sha256').update(given).digest(), scraper)) return;
      await authenticated(request);
    };
    app.get('/metrics', { preHandler: scraperOrOperator, schema: { hide: true } }, async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  }

  if (deps.livePush) {
    const { token, bus } = deps.livePush;
    const expected = createHash('sha256').update(token).digest();
    const LiveBody = Type.Object(
      {
        chunks: Type.Array(
          Type.Object({ sessionId: Type.String({ maxLength: 200 }), stream: Type.String({ maxLength: 200 }), kind: Type.Union([Type.Literal('text'), Type.Literal('stdout'), Type.Literal('stderr')]), text: Type.String({ maxLength: 65_536 }) }, { additionalProperties: false }),
          { maxItems: 500 },
        ),
      },
      { additionalProperties: false },
    );
    app.post('/internal/live', { bodyLimit: 1024 * 1024, schema: { hide: true, body: LiveBody } }, async (request, reply) => {
      const given = createHash('sha256').update(/^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? '').digest();
      if (!timingSafeEqual(given, expected)) return reply.code(401).send({ error: 'unauthenticated', message: 'authorization: not the live-push token' });
      for (const chunk of (request.body as { chunks: LiveChunk[] }).chunks) bus.publish(chunk);
      return { ok: true };
    });
  }

  registerAuthRoutes(app, deps, authenticated);
  registerSessionRoutes(app, deps, authenticated);
  if (deps.codecServer) registerCodecRoutes(app, deps, deps.codecServer);

  if (deps.uiDir && existsSync(join(deps.uiDir, 'index.html'))) {
    await app.register(fastifyStatic, { root: deps.uiDir, prefix: '/', index: 'index.html', wildcard: false });
  }

  return app;
}
