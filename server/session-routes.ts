/**
 * The session routes: open and list sessions, read state and transcript, send messages, verbs
 * and commands, decide approvals, pause/resume/end/cancel, change the policy, download the
 * postmortem, and follow a session live over Server-Sent Events.
 */
import { createHash } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MAX_COMMAND_LENGTH, MAX_COMMAND_TIMEOUT_SECONDS, MAX_MESSAGE_LENGTH } from '../workflows/messages.js';
import { PVE_VERBS } from '../workflows/pve-types.js';
import type { AppDeps } from './app.js';
import type { SessionEvent } from './events.js';
import { postmortem } from './report.js';
import { LIST_OUTCOMES, LIST_SINCE, OPERATOR_FILTER_PATTERN, type ListSince } from './session-search.js';
import { Accepted, CSP, HttpError, Loose, Ok, Reason, SessionId, errorResponses, operatorOf, schema, type Authenticated } from './route-shared.js';

const ListQuery = Type.Object(
  {
    outcome: Type.Optional(Type.Union(LIST_OUTCOMES.map((outcome) => Type.Literal(outcome)), { description: 'open, or how the session ended' })),
    operator: Type.Optional(Type.String({ pattern: OPERATOR_FILTER_PATTERN, description: 'who opened it (exact name)' })),
    since: Type.Optional(Type.Union((Object.keys(LIST_SINCE) as ListSince[]).map((since) => Type.Literal(since)), { description: 'started within the last 1h, 24h, 7d or 30d' })),
    q: Type.Optional(Type.String({ maxLength: 200, description: 'words of the description (all of them), or the start of a session id' })),
  },
  { additionalProperties: false },
);

export function registerSessionRoutes(app: FastifyInstance, deps: AppDeps, authenticated: Authenticated): void {
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
    {
      preHandler: authenticated,
      ...schema({
        summary: 'sessions, open first, then newest first (Temporal visibility), one row per session',
        querystring: ListQuery,
        response: Type.Object({ sessions: Type.Array(Loose) }),
      }),
    },
    async (request) => {
      const { q, ...filter } = request.query as Static<typeof ListQuery>;
      return { sessions: await deps.sessions.list({ ...filter, ...(q ? { search: q } : {}) }) };
    },
  );

  app.get(
    '/api/sessions/:id',
    { preHandler: authenticated, ...schema({ summary: 'session state and the first transcript page', params: SessionId, response: Type.Object({ state: Loose, transcript: Loose }) }) },
    async (request) => {
      const { id } = request.params as Static<typeof SessionId>;
      return deps.sessions.view(id, undefined, 200);
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
    else {
      // The session has ended: nothing more will come, and the browser should not reconnect.
      raw.write('event: closed\ndata: {}\n\n');
      setImmediate(() => {
        cleanup();
        raw.end();
      });
    }
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
