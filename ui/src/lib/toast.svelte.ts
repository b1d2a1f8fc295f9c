/**
 * The one toast / error path. Anything that fails in the console ends here: `reportError`
 * shows the server's `message` (ApiError) or the error's own text, once, in an aria-live region.
 */
import { ApiError } from './api.js';

export type ToastKind = 'error' | 'info' | 'success';

export interface Toast {
  id: number;
  kind: ToastKind;
  message: string;
}

class Toaster {
  items = $state<Toast[]>([]);
  #nextId = 1;

  push(kind: ToastKind, message: string, timeoutMs = kind === 'error' ? 15_000 : 5_000): number {
    const id = this.#nextId++;
    // The same error twice in a row (a double tap) is shown once.
    const last = this.items[this.items.length - 1];
    if (last && last.kind === kind && last.message === message) return last.id;
    this.items = [...this.items.slice(-4), { id, kind, message }];
    if (timeoutMs > 0) setTimeout(() => this.dismiss(id), timeoutMs);
    return id;
  }

  dismiss(id: number): void {
    this.items = this.items.filter((toast) => toast.id !== id);
  }
}

export const toasts = new Toaster();

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

export function reportError(error: unknown, context?: string): void {
  // 401s switch the console to its login form (see app.svelte); no toast needed on top.
  if (error instanceof ApiError && error.status === 401) return;
  const message = errorMessage(error);
  toasts.push('error', context ? `${context}: ${message}` : message);
}

export function notify(message: string, kind: Exclude<ToastKind, 'error'> = 'info'): void {
  toasts.push(kind, message);
}

/** Runs an action; on failure reports it through the one error path and returns undefined. */
export async function attempt<T>(context: string, action: () => Promise<T>): Promise<T | undefined> {
  try {
    return await action();
  } catch (error) {
    reportError(error, context);
    return undefined;
  }
}
