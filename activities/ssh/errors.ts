/**
 * Typed SSH-layer errors. Each says whether repeating the same call can help: activities turn
 * `retryable: false` into a non-retryable Temporal failure, so e.g. a host key mismatch stops
 * at once instead of hammering a possibly hostile host.
 */
export type SshErrorKind =
  | 'host_key_mismatch'
  | 'auth_failed'
  | 'unreachable'
  | 'timeout'
  | 'verb_rejected'
  | 'conflict'
  | 'busy'
  | 'in_progress'
  | 'vm_locked'
  | 'verb_failed'
  | 'outcome_unknown'
  | 'host_config'
  | 'protocol';

const RETRYABLE: Record<SshErrorKind, boolean> = {
  host_key_mismatch: false,
  auth_failed: false,
  unreachable: true,
  timeout: true,
  verb_rejected: false,
  // The request id names another verb already run: nothing ran, and repeating cannot change that.
  conflict: false,
  busy: true,
  // The same request id re-attaches to the running verb on the host: safe to repeat.
  in_progress: true,
  // A lock is usually a backup or migration that ends on its own.
  vm_locked: true,
  verb_failed: false,
  // Never repeat blindly: the workflow re-checks with `status` and asks the operator.
  outcome_unknown: false,
  host_config: false,
  protocol: false,
};

export class SshError extends Error {
  readonly kind: SshErrorKind;
  readonly retryable: boolean;
  /** Parsed result document from the host, when there was one. */
  readonly detail: unknown;

  constructor(kind: SshErrorKind, message: string, detail?: unknown) {
    super(message);
    this.name = 'SshError';
    this.kind = kind;
    this.retryable = RETRYABLE[kind];
    this.detail = detail;
  }
}

export class HostKeyMismatchError extends SshError {
  readonly expected: string[];
  readonly presented: string;

  constructor(host: string, expected: string[], presented: string) {
    super(
      'host_key_mismatch',
      `host key for ${host} does not match the pinned key: presented ${presented}, pinned ${expected.join(', ') || '(none)'}; refusing to connect`,
    );
    this.name = 'HostKeyMismatchError';
    this.expected = expected;
    this.presented = presented;
  }
}

export function isSshError(error: unknown, kind?: SshErrorKind): error is SshError {
  return error instanceof SshError && (kind === undefined || error.kind === kind);
}
