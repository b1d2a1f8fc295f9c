/**
 * The only module that talks HTTP. Every call is same-origin with the session cookie; mutations
 * send JSON (the server checks Origin / Sec-Fetch-Site). Failures become one `ApiError` carrying
 * the server's `message`, which the callers hand to the one toast path (toast.svelte.ts).
 */
import type { ListFilter, Me, PveVerb, SessionAction, SessionPolicy, SessionState, SessionSummary, TranscriptPage } from './types.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const unauthenticatedListeners = new Set<() => void>();

/** Called whenever the server answers 401 (cookie expired, server restarted, logged out). */
export function onUnauthenticated(listener: () => void): () => void {
  unauthenticatedListeners.add(listener);
  return () => unauthenticatedListeners.delete(listener);
}

async function request<T>(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    throw new ApiError(0, 'network', 'cannot reach the breakglass server (network down or server restarting)');
  }
  const text = await response.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const problem = (data ?? {}) as { error?: unknown; message?: unknown };
    const message = typeof problem.message === 'string' && problem.message ? problem.message : `${response.status} ${response.statusText || 'error'}`;
    const code = typeof problem.error === 'string' ? problem.error : `http_${response.status}`;
    if (response.status === 401 && path !== '/api/login') for (const listener of unauthenticatedListeners) listener();
    throw new ApiError(response.status, code, message);
  }
  return data as T;
}

const sessionPath = (id: string) => `/api/sessions/${encodeURIComponent(id)}`;

export const api = {
  me: () => request<Me>('GET', '/api/me'),
  login: (token: string) => request<{ operator: string }>('POST', '/api/login', { token }),
  logout: () => request<{ ok: boolean }>('POST', '/api/logout', {}),

  listSessions: (filter: ListFilter = {}) => {
    const query = new URLSearchParams();
    if (filter.outcome) query.set('outcome', filter.outcome);
    if (filter.operator) query.set('operator', filter.operator);
    if (filter.since) query.set('since', filter.since);
    if (filter.search) query.set('q', filter.search);
    const suffix = query.toString();
    return request<{ sessions: SessionSummary[] }>('GET', `/api/sessions${suffix ? `?${suffix}` : ''}`);
  },
  createSession: (description: string) => request<{ id: string }>('POST', '/api/sessions', { description }),
  session: (id: string) => request<{ state: SessionState; transcript: TranscriptPage }>('GET', sessionPath(id)),
  transcript: (id: string, cursor: number, limit = 100) => request<TranscriptPage>('GET', `${sessionPath(id)}/transcript?cursor=${cursor}&limit=${limit}`),

  message: (id: string, text: string) => request<{ seq: number }>('POST', `${sessionPath(id)}/messages`, { text }),
  verb: (id: string, verb: PveVerb, reason: string, requestKey?: string, takeOver = false) =>
    request<{ key: string; approvalId: string | null }>('POST', `${sessionPath(id)}/verbs`, { verb, reason, ...(requestKey ? { requestKey } : {}), ...(takeOver ? { takeOver } : {}) }),
  command: (id: string, command: string, timeoutSeconds?: number, requestKey?: string) =>
    request<{ key: string; approvalId: string | null }>('POST', `${sessionPath(id)}/commands`, {
      command,
      ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
      ...(requestKey ? { requestKey } : {}),
    }),
  approval: (id: string, approvalId: string, decision: 'approve' | 'deny', reason?: string) =>
    request<{ approvalId: string; decision: string; executed: boolean }>('POST', `${sessionPath(id)}/approvals/${encodeURIComponent(approvalId)}`, {
      decision,
      ...(reason ? { reason } : {}),
    }),
  action: (id: string, action: SessionAction, reason?: string) => request<{ ok: boolean }>('POST', `${sessionPath(id)}/${action}`, reason ? { reason } : {}),
  policy: (id: string, policy: Partial<SessionPolicy>) => request<SessionPolicy>('PUT', `${sessionPath(id)}/policy`, policy),

  /** A plain link (cookie-authenticated GET with content-disposition: attachment). */
  reportUrl: (id: string) => `${sessionPath(id)}/report`,
  eventsUrl: (id: string, fromSeq: number | null) => `${sessionPath(id)}/events${fromSeq !== null && fromSeq >= 1 ? `?from=${fromSeq}` : ''}`,
};

/** A client-chosen request key: retrying the same submission never runs it twice. */
export function newRequestKey(prefix: 'v' | 'c'): string {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return `ui${prefix}-${[...bytes].map((byte) => alphabet[byte % alphabet.length]).join('')}`;
}
