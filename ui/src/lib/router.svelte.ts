/**
 * Hash routing keeps the server simple (it only serves index.html): `#/` is the session list,
 * `#/sessions/<id>` a session. The lab's URL carries the login token in the fragment
 * (`#token=…`, also accepted as `#/sessions/<id>?token=…`): it is read once and removed.
 */
export type Route = { name: 'sessions' } | { name: 'session'; id: string } | { name: 'not-found'; path: string };

export interface ParsedHash {
  route: Route;
  path: string;
  token: string | null;
}

export function parseHash(hash: string): ParsedHash {
  let text = hash.startsWith('#') ? hash.slice(1) : hash;
  let token: string | null = null;
  // Pull `token=…` out of wherever it sits: `#token=x`, `#/?token=x`, `#/sessions/a&token=x`.
  const match = /(?:^|[?&])token=([^&]*)/.exec(text);
  if (match) {
    token = decodeURIComponent(match[1] ?? '') || null;
    text = text.replace(match[0], '').replace(/[?&]$/, '');
  }
  const path = (text.split('?')[0] ?? '').replace(/^\/?/, '/');
  const parts = path.split('/').filter(Boolean);
  let route: Route;
  if (parts.length === 0) route = { name: 'sessions' };
  else if (parts[0] === 'sessions' && parts.length === 1) route = { name: 'sessions' };
  else if (parts[0] === 'sessions' && parts.length === 2 && parts[1]) route = { name: 'session', id: decodeURIComponent(parts[1]) };
  else route = { name: 'not-found', path };
  return { route, path, token };
}

class Router {
  route = $state<Route>({ name: 'sessions' });

  /**
   * Reads the current hash and follows its changes. A token found in it (now or later, e.g. the
   * lab URL pasted into an open tab) is removed from the URL and handed to `onToken`.
   */
  start(onToken: (token: string) => void): void {
    const apply = () => {
      const parsed = parseHash(window.location.hash);
      this.route = parsed.route;
      if (parsed.token !== null) {
        // Out of the address bar and history before anything else happens.
        const keep = parsed.path === '/' ? '' : `#${parsed.path}`;
        window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}${keep}`);
      }
      return parsed.token;
    };
    const token = apply();
    window.addEventListener('hashchange', () => {
      const next = apply();
      if (next !== null) onToken(next);
    });
    if (token !== null) onToken(token);
  }

  go(path: string): void {
    window.location.hash = path;
  }
}

export const router = new Router();

export const sessionHref = (id: string) => `#/sessions/${encodeURIComponent(id)}`;
