/**
 * Who is logged in. The lab's URL carries a token in its fragment: it is exchanged once for an
 * HttpOnly cookie (POST /api/login) and then forgotten; every later call uses the cookie.
 */
import { ApiError, api, onUnauthenticated } from './api.js';
import { errorMessage, reportError } from './toast.svelte.js';
import type { AgentMode, Me } from './types.js';

export type AuthStatus = 'checking' | 'login' | 'ready' | 'unreachable';

class Auth {
  me = $state.raw<Me | null>(null);
  status = $state<AuthStatus>('checking');
  problem = $state<string | null>(null);

  constructor() {
    onUnauthenticated(() => {
      this.me = null;
      this.status = 'login';
    });
  }

  async bootstrap(token: string | null): Promise<void> {
    if (token !== null && !(await this.login(token))) {
      // A stale token in the URL: an existing cookie may still be good.
      const problem = this.problem;
      await this.refresh();
      if (this.status === 'ready' && problem) reportError(new Error(`the token in the URL was not accepted (${problem}); still logged in with the session cookie`));
      else if (this.status === 'login') this.problem = problem;
      return;
    }
    await this.refresh();
  }

  async refresh(): Promise<void> {
    try {
      this.me = await api.me();
      this.status = 'ready';
      this.problem = null;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        this.status = 'login';
        this.problem = null;
      } else {
        this.status = 'unreachable';
        this.problem = errorMessage(error);
      }
    }
  }

  /** Returns true when the token was accepted; otherwise shows the login form with the reason. */
  async login(token: string): Promise<boolean> {
    try {
      await api.login(token.trim());
      this.problem = null;
      return true;
    } catch (error) {
      this.status = 'login';
      this.problem = errorMessage(error);
      return false;
    }
  }

  async logout(): Promise<void> {
    await api.logout().catch(() => undefined);
    this.me = null;
    this.status = 'login';
  }
}

export const auth = new Auth();

/** How the agent is named wherever its text appears. */
export function agentName(mode: AgentMode | undefined): string {
  return mode === 'demo' ? 'Agent · DEMO (scripted stand-in)' : 'Agent';
}
