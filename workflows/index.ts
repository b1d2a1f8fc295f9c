// The worker's workflow bundle entry point: every workflow type this worker runs.
export { breakglassSession } from './session.js';
export { targetLease } from './target-lease.js';
