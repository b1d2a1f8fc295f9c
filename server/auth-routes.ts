/** Login, logout and who-am-I: the token-for-cookie exchange and what the console can do. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from './app.js';
import { AuthError, SESSION_COOKIE, isLoopbackHost } from './auth.js';
import { TOKEN_PATTERN } from './config.js';
import { Ok, operatorOf, schema, type Authenticated } from './route-shared.js';

export function registerAuthRoutes(app: FastifyInstance, deps: AppDeps, authenticated: Authenticated): void {
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
}
