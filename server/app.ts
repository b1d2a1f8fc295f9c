/**
 * The HTTP API and the console's static files, as a Fastify app factory (no listen here: see
 * server/main.ts). Routes are a stable contract: every body, param and response has a schema,
 * and every error is JSON `{ error, message }` naming the field.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifyStatic from '@fastify/static';
import fastifySwagger from '@fastify/swagger';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { PVE_VERBS } from '../workflows/pve-types.js';
import { MAX_COMMAND_LENGTH, MAX_COMMAND_TIMEOUT_SECONDS, MAX_MESSAGE_LENGTH, MAX_REASON_LENGTH } from '../workflows/messages.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Registry } from 'prom-client';
import { AuthError, SESSION_COOKIE, isLoopbackHost, type Authenticator } from './auth.js';
import { TOKEN_PATTERN } from './config.js';
import type { LiveBus, LiveChunk } from './live-bus.js';
import type { SessionEvents, SessionEvent } from './events.js';
import { duplicateKey } from './json-body.js';
import { postmortem } from './report.js';
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
  /** Temporal reachable and (when this process runs one) the worker polling. */
  readiness: () => Promise<{ temporal: boolean; worker: boolean | null }>;
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
}

const ErrorBody = Type.Object({ error: Type.String(), message: Type.String() });
const Loose = Type.Object({}, { additionalProperties: true });
const SessionId = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9._-]{1,200}$' }) });
const Accepted = Type.Object({ key: Type.String(), approvalId: Type.Union([Type.String(), Type.Null()]) });
const Ok = Type.Object({ ok: Type.Boolean() });
const Reason = Type.String({ maxLength: MAX_REASON_LENGTH });

const errorResponses = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 429: ErrorBody, 500: ErrorBody };

function schema<B extends TSchema | undefined, R extends TSchema>(options: {
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

class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const CSP = [
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
  const authenticated = async (request: FastifyRequest) => {
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
  const operatorOf = (request: FastifyRequest) => (request as FastifyRequest & { operator: string }).operator;
  const mutating = {
    preHandler: authenticated,
    config: {
      rateLimit: {
        max: deps.mutationRateLimit ?? 120,
        timeWindow: '1 minute',
        // The limiter runs before the route's preHandler has named the operator: identify here.
        keyGenerator: (request: FastifyRequest) => {
          try {
            return `operator:${deps.auth.identify(request)}`;
          } catch {
            return `address:${request.ip}`;
          }
        },
      },
    },
  };

  // ------------------------------------------------------------------------- routes
  app.get('/healthz', schema({ summary: 'process up', tags: ['health'], response: Type.Object({ ok: Type.Boolean() }) }), async () => ({ ok: true }));

  app.get(
    '/readyz',
    { schema: { summary: 'Temporal reachable and the worker polling', tags: ['health'], response: { 200: Loose, 503: Loose } } },
    async (_request, reply) => {
      const readiness = await deps.readiness();
      const ready = readiness.temporal && readiness.worker !== false;
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

  app.post(
    '/api/login',
    {
      // Guessing tokens is slow: a few attempts per minute and client address.
      config: { rateLimit: { max: deps.loginRateLimit ?? 10, timeWindow: '1 minute', keyGenerator: (request: FastifyRequest) => `login:${request.ip}` } },
      ...schema({ summary: 'exchange a token for a session cookie', tags: ['auth'], body: Type.Object({ token: Type.String({ maxLength: 1024 }) }), response: Type.Object({ operator: Type.String() }) }),
    },
    async (request, reply) => {
      const { token } = request.body as { token: string };
      // Said to a person at the login form, not as a schema path.
      if (!TOKEN_PATTERN.test(token.trim())) throw new AuthError(401, 'token: not valid (a breakglass token is 16 to 256 letters, digits and . _ ~ + / = -; paste it whole)');
      if (deps.auth.mode === 'lab' && !['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(request.socket.remoteAddress ?? '')) throw new AuthError(401, 'lab mode accepts loopback clients only');
      const operator = deps.auth.login(token.trim());
      // Secure unless the console is reached on loopback (the lab): behind a TLS-terminating proxy
      // the request itself is plain HTTP, and the cookie must still never travel unencrypted.
      const secure = request.protocol === 'https' || !isLoopbackHost(request.hostname) ? '; Secure' : '';
      reply.header('set-cookie', `${SESSION_COOKIE}=${deps.auth.issueCookie(operator)}; HttpOnly; SameSite=Strict; Path=/${secure}; Max-Age=43200`);
      return { operator };
    },
  );

  app.post('/api/logout', schema({ summary: 'drop the session cookie (it stops working at once)', tags: ['auth'], response: Ok }), async (request, reply) => {
    deps.auth.revokeCookie(request);
    reply.header('set-cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    return { ok: true };
  });

  app.get(
    '/api/me',
    {
      preHandler: authenticated,
      ...schema({
        summary: 'who am I, and what this console can do',
        tags: ['auth'],
        response: Type.Object({ operator: Type.String(), authMode: Type.String(), temporalUiUrl: Type.Union([Type.String(), Type.Null()]), namespace: Type.String(), agent: Type.Object({ mode: Type.String(), reason: Type.String() }) }),
      }),
    },
    async (request) => ({ operator: operatorOf(request), authMode: deps.auth.mode, temporalUiUrl: deps.temporalUiUrl, namespace: deps.namespace, agent: deps.agent }),
  );

  // Idempotency-Key on every POST that creates work: a client that retries (a timeout, a flaky
  // phone connection) gets the first request's answer, and nothing happens twice. Scoped to the
  // operator and the route, so two clients' keys never meet.
  const Idempotent = Type.Object({
    'idempotency-key': Type.Optional(
      Type.String({ pattern: '^[A-Za-z0-9._:-]{8,128}$', description: 'repeat a request safely: the same key (per operator and route) answers with the first outcome and does nothing again' }),
    ),
  });
  const idempotencyKey = (request: FastifyRequest): string | undefined => {
    const value = request.headers['idempotency-key'];
    return typeof value === 'string' ? value : undefined;
  };
  const once = (request: FastifyRequest) => {
    const key = idempotencyKey(request);
    if (key === undefined) return {};
    return { updateId: `idem-${createHash('sha256').update(`${operatorOf(request)}\0${request.url.split('?')[0]}\0${key}`).digest('hex').slice(0, 40)}` };
  };

  const CreateBody = Type.Object({ description: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_LENGTH }) }, { additionalProperties: false });
  app.post(
    '/api/sessions',
    { ...mutating, ...schema({ summary: 'open a breakglass session', body: CreateBody, headers: Idempotent, response: Type.Object({ id: Type.String() }) }) },
    async (request) => {
      const { description } = request.body as Static<typeof CreateBody>;
      if (description.trim() === '') throw new HttpError(400, 'bad_request', 'body/description must not be blank');
      return { id: await deps.sessions.start(operatorOf(request), description.trim(), idempotencyKey(request)) };
    },
  );

  app.get(
    '/api/sessions',
    { preHandler: authenticated, ...schema({ summary: 'sessions, newest first (Temporal visibility)', response: Type.Object({ sessions: Type.Array(Loose) }) }) },
    async () => ({ sessions: await deps.sessions.list() }),
  );

  app.get(
    '/api/sessions/:id',
    { preHandler: authenticated, ...schema({ summary: 'session state and the first transcript page', params: SessionId, response: Type.Object({ state: Loose, transcript: Loose }) }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const [state, transcript] = await Promise.all([deps.sessions.state(id), deps.sessions.transcript(id, undefined, 200)]);
      return { state, transcript };
    },
  );

  const TranscriptQuery = Type.Object(
    { cursor: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,9}$' })), limit: Type.Optional(Type.String({ pattern: '^([1-9]|[1-9][0-9]|1[0-9][0-9]|200)$' })) },
    { additionalProperties: false },
  );
  app.get(
    '/api/sessions/:id/transcript',
    { preHandler: authenticated, ...schema({ summary: 'a transcript page from cursor (transcript seq)', params: SessionId, querystring: TranscriptQuery, response: Loose }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const query = request.query as Static<typeof TranscriptQuery>;
      return deps.sessions.transcript(id, query.cursor === undefined ? undefined : Number(query.cursor), query.limit === undefined ? 100 : Number(query.limit));
    },
  );

  const MessageBody = Type.Object({ text: Type.String({ minLength: 1, maxLength: MAX_MESSAGE_LENGTH }) }, { additionalProperties: false });
  app.post(
    '/api/sessions/:id/messages',
    { ...mutating, ...schema({ summary: 'a message to the agent (recorded)', params: SessionId, body: MessageBody, headers: Idempotent, response: Type.Object({ seq: Type.Integer() }) }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const { text } = request.body as Static<typeof MessageBody>;
      return deps.sessions.message(id, operatorOf(request), text, once(request));
    },
  );

  const VerbBody = Type.Object(
    {
      verb: Type.Union(PVE_VERBS.map((verb) => Type.Literal(verb))),
      reason: Reason,
      requestKey: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,40}$' })),
      takeOver: Type.Optional(Type.Boolean({ description: "take the VM's lease over from another session's hold (explicit, recorded in both sessions)" })),
    },
    { additionalProperties: false },
  );
  app.post(
    '/api/sessions/:id/verbs',
    { ...mutating, ...schema({ summary: 'request a PVE verb (forensics first, policy, record)', params: SessionId, body: VerbBody, headers: Idempotent, response: Accepted }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const body = request.body as Static<typeof VerbBody>;
      return deps.sessions.verb(id, { ...body, operator: operatorOf(request) }, once(request));
    },
  );

  const CommandBody = Type.Object(
    {
      command: Type.String({ minLength: 1, maxLength: MAX_COMMAND_LENGTH }),
      timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_COMMAND_TIMEOUT_SECONDS })),
      requestKey: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,40}$' })),
    },
    { additionalProperties: false },
  );
  app.post(
    '/api/sessions/:id/commands',
    { ...mutating, ...schema({ summary: 'run an operator-typed command on the devvm', params: SessionId, body: CommandBody, headers: Idempotent, response: Accepted }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const body = request.body as Static<typeof CommandBody>;
      return deps.sessions.command(id, { ...body, operator: operatorOf(request) }, once(request));
    },
  );

  const ApprovalParams = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9._-]{1,200}$' }), approvalId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,60}$' }) });
  const ApprovalBody = Type.Object({ decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')]), reason: Type.Optional(Reason) }, { additionalProperties: false });
  app.post(
    '/api/sessions/:id/approvals/:approvalId',
    { ...mutating, ...schema({ summary: 'approve or deny a pending request', params: ApprovalParams, body: ApprovalBody, headers: Idempotent, response: Loose }) },
    async (request) => {
      const { id, approvalId } = request.params as Static<typeof ApprovalParams>;
      const body = request.body as Static<typeof ApprovalBody>;
      return deps.sessions.approval(id, { approvalId, decision: body.decision, operator: operatorOf(request), ...(body.reason ? { reason: body.reason } : {}) }, once(request));
    },
  );

  const ActionBody = Type.Optional(Type.Object({ reason: Type.Optional(Reason) }, { additionalProperties: false }));
  const action = (path: string, summary: string, run: (id: string, operator: string, reason?: string) => Promise<unknown>) =>
    app.post(path, { ...mutating, ...schema({ summary, params: SessionId, body: ActionBody, response: Ok }) }, async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      const reason = (request.body as { reason?: string } | undefined)?.reason;
      await deps.sessions.state(id); // 404 for an unknown session before signalling
      await run(id, operatorOf(request), reason);
      return { ok: true };
    });
  action('/api/sessions/:id/pause', 'pause the session (nothing new runs)', (id, operator, reason) => deps.sessions.pause(id, operator, reason));
  action('/api/sessions/:id/resume', 'resume a paused session', (id, operator) => deps.sessions.resume(id, operator));
  action('/api/sessions/:id/end', 'end the session (outcome recovered or ended)', (id, operator, reason) => deps.sessions.end(id, operator, reason));
  action('/api/sessions/:id/cancel', 'cancel: stops commands and agent turns, lets an in-flight verb finish', async (id, operator, reason) => {
    app.log.info({ session: id, operator }, 'session cancel requested');
    await deps.sessions.cancel(id, operator, reason);
  });

  const PolicyBody = Type.Object(
    {
      mutatingVerbs: Type.Optional(Type.Union([Type.Literal('autonomous'), Type.Literal('approve'), Type.Literal('two-person')])),
      devvmCommands: Type.Optional(Type.Union([Type.Literal('allowlist'), Type.Literal('autonomous')])),
      toolCallsPerMessage: Type.Optional(Type.Integer({ minimum: 1, maximum: 200 })),
    },
    { additionalProperties: false, minProperties: 1 },
  );
  app.put(
    '/api/sessions/:id/policy',
    { ...mutating, ...schema({ summary: 'change the session policy (recorded)', params: SessionId, body: PolicyBody, response: Loose }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      return deps.sessions.policy(id, operatorOf(request), request.body as Static<typeof PolicyBody>);
    },
  );

  app.get(
    '/api/sessions/:id/report',
    { preHandler: authenticated, schema: { summary: 'the postmortem as Markdown', tags: ['sessions'], params: SessionId, response: { 200: Type.String(), ...errorResponses } } },
    async (request, reply) => {
      const { id } = request.params as Static<typeof SessionId>;
      const [state, entries] = await Promise.all([deps.sessions.state(id), deps.sessions.fullTranscript(id)]);
      reply.header('content-disposition', `attachment; filename="${id}-postmortem.md"`);
      return reply.type('text/markdown; charset=utf-8').send(postmortem(id, state, entries, deps.temporalUiUrl));
    },
  );

  const EventsQuery = Type.Object({ from: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,9}$' })) }, { additionalProperties: false });
  app.get(
    '/api/sessions/:id/events',
    { preHandler: authenticated, schema: { summary: 'Server-Sent Events: entry (id = seq), state, live; resumes from Last-Event-ID', tags: ['sessions'], params: SessionId, querystring: EventsQuery } },
    async (request, reply) => streamEvents(request, reply, deps),
  );

  if (deps.uiDir && existsSync(join(deps.uiDir, 'index.html'))) {
    await app.register(fastifyStatic, { root: deps.uiDir, prefix: '/', index: 'index.html', wildcard: false });
  }

  return app;
}

async function streamEvents(request: FastifyRequest, reply: FastifyReply, deps: AppDeps) {
  const { id } = request.params as { id: string };
  const lastEventId = Number(request.headers['last-event-id']);
  const queryFrom = (request.query as { from?: string }).from;
  const from = Number.isInteger(lastEventId) && lastEventId > 0 ? lastEventId + 1 : queryFrom === undefined ? undefined : Number(queryFrom);
  await deps.sessions.state(id); // a 404 before the stream starts
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
  });
  raw.write('retry: 2000\n\n');
  const send = (event: SessionEvent) => {
    if (raw.writableEnded) return;
    if (event.type === 'entry') raw.write(`id: ${event.entry.seq}\nevent: entry\ndata: ${JSON.stringify(event.entry)}\n\n`);
    else if (event.type === 'state') raw.write(`event: state\ndata: ${JSON.stringify(event.state)}\n\n`);
    else if (event.type === 'live') raw.write(`event: live\ndata: ${JSON.stringify(event.chunk)}\n\n`);
  };
  const heartbeat = setInterval(() => raw.write(`: heartbeat ${Date.now()}\n\n`), deps.heartbeatMs ?? 15_000);
  let unsubscribe: (() => void) | null = null;
  const cleanup = () => {
    clearInterval(heartbeat);
    unsubscribe?.();
  };
  request.raw.on('close', cleanup);
  try {
    unsubscribe = await deps.events.subscribe(id, from, send);
    if (raw.destroyed) cleanup();
  } catch (error) {
    raw.write(`event: error\ndata: ${JSON.stringify({ message: (error as Error).message })}\n\n`);
    cleanup();
    raw.end();
  }
}
