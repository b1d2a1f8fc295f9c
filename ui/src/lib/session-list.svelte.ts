/** The session list (Temporal visibility, through GET /api/sessions) and opening a session. */
import { api } from './api.js';
import { attempt } from './toast.svelte.js';
import type { ListFilter, SessionSummary } from './types.js';

export class SessionListStore {
  sessions = $state.raw<SessionSummary[]>([]);
  loading = $state(false);
  loaded = $state(false);
  /** What the list is narrowed to (Temporal visibility does the narrowing). */
  filter = $state<ListFilter>({});
  #timer: ReturnType<typeof setInterval> | null = null;

  async refresh(): Promise<void> {
    if (this.loading) return;
    this.loading = true;
    const asked = $state.snapshot(this.filter);
    const result = await attempt('could not list sessions', () => api.listSessions(asked));
    // A filter changed while this was in flight: its own refresh follows.
    if (result && JSON.stringify(asked) === JSON.stringify($state.snapshot(this.filter))) {
      this.sessions = result.sessions;
      this.loaded = true;
    }
    this.loading = false;
    if (JSON.stringify(asked) !== JSON.stringify($state.snapshot(this.filter))) void this.refresh();
  }

  setFilter(next: ListFilter): void {
    this.filter = Object.fromEntries(Object.entries(next).filter(([, value]) => value !== undefined && value !== '')) as ListFilter;
    void this.refresh();
  }

  /** Refreshes now and every `everyMs` while the tab is visible. */
  watch(everyMs = 10_000): () => void {
    void this.refresh();
    this.#timer = setInterval(() => {
      if (document.visibilityState === 'visible') void this.refresh();
    }, everyMs);
    return () => {
      if (this.#timer) clearInterval(this.#timer);
      this.#timer = null;
    };
  }

  /** Opens a session; returns its id, or null (the error went to the toast path). */
  async create(description: string): Promise<string | null> {
    const result = await attempt('session not opened', () => api.createSession(description));
    return result?.id ?? null;
  }
}
