import { runSshCommand, type SshTarget } from '../ssh/connection.js';
import { SshError } from '../ssh/errors.js';
import { capSections, summarizeForensics, type RawSection } from './forensics.js';
import { survivorsLine } from '../../workflows/pve-types.js';
import type {
  ForensicsRef,
  ForensicsResult,
  MutatingVerb,
  MutationResult,
  PveVerb,
  StatusResult,
  Survivor,
  VerbStep,
  VmState,
} from '../../workflows/pve-types.js';

/** Mirrors host/pve/pve-dispatch's request-id rule, so a bad id fails here, not on the host. */
export const REQUEST_ID_PATTERN = /^[A-Za-z][A-Za-z0-9._-]{7,127}$/;

export interface VerbCallOptions {
  requestId?: string;
  /** Client-side deadline; keep it above the host's result_wait so the host answers first. */
  deadlineMs: number;
  signal?: AbortSignal;
}

/* The host's JSON, snake_case as printed by the dispatcher. */
export interface RawVm {
  status: string;
  qmpstatus: string;
  pid: number | null;
  uptime: number | null;
  lock: string;
  pending: { present: boolean; lines: string[] };
  error?: string;
  qmp?: 'answered' | 'silent' | null;
  ha?: { managed: boolean; state: string } | null;
  scope_pids?: number[];
  warning?: string;
}
interface RawForensicsRef {
  path: string;
  sha256: string;
  duration_ms: number;
}
interface RawThread {
  tid: number;
  state: string;
  wchan: string;
  comm: string;
}
export interface RawResult {
  ok: boolean;
  result: 'ok' | 'failed' | 'rejected' | 'conflict' | 'busy' | 'in_progress' | 'unknown' | 'config_error';
  replayed?: boolean;
  verb?: string;
  request_id?: string;
  vmid?: number;
  reason?: string;
  holder?: { verb: string; request_id: string; since: string } | null;
  at?: string;
  vm?: RawVm;
  started_at?: string;
  finished_at?: string;
  forensics?: RawForensicsRef | null;
  document?: { captured_at: string; blockstats_interval_s?: number; sections: RawSection[] };
  before?: RawVm;
  after?: RawVm;
  steps?: { name: string; exit: number; timed_out: boolean; duration_ms: number; output: string }[];
  old_pid?: number | null;
  new_pid?: number | null;
  pending_applied?: boolean;
  pid_unchanged?: boolean;
  pending_unapplied?: boolean;
  acknowledged?: boolean;
  qmp_after_reset?: 'answers' | 'silent' | null;
  checks?: { check: string; ok: boolean; detail?: string }[];
  ha?: { managed: boolean; requested: string; observed: string; waited_s: number } | null;
  warning?: string;
  qemu_survived?: boolean;
  survivors?: { pid: number; leader_state: string; in_scope: boolean; threads?: RawThread[] }[];
  lock_holder?: { pid: number; task: string | null; cmdline: string } | null;
  overrule_shutdown?: boolean;
  overruled_tasks?: string[];
  failed_at?: string | null;
}

export function vmState(raw: RawVm): VmState {
  return {
    status: raw.status,
    qmpstatus: raw.qmpstatus,
    pid: raw.pid,
    uptimeSeconds: raw.uptime,
    lock: raw.lock,
    pending: raw.pending,
    ...(raw.error ? { error: raw.error } : {}),
    ...(raw.qmp !== undefined ? { qmp: raw.qmp } : {}),
    ...(raw.ha !== undefined ? { ha: raw.ha ? { managed: raw.ha.managed, state: raw.ha.state } : null } : {}),
    ...(raw.scope_pids ? { scopePids: raw.scope_pids } : {}),
    ...(raw.warning ? { warning: raw.warning } : {}),
  };
}

function forensicsRef(raw: RawForensicsRef | null | undefined): ForensicsRef | null {
  return raw ? { path: raw.path, sha256: raw.sha256, durationMs: raw.duration_ms } : null;
}

function survivor(raw: NonNullable<RawResult['survivors']>[number]): Survivor {
  return {
    pid: raw.pid,
    leaderState: raw.leader_state,
    inScope: raw.in_scope,
    // The host prints "-" or "0" for a thread that sleeps nowhere in particular.
    threads: (raw.threads ?? []).map((t) => ({ tid: t.tid, state: t.state, wchan: t.wchan === '-' || t.wchan === '0' ? '' : t.wchan, comm: t.comm })),
  };
}

const LOCKED = /VM is locked|can't lock file/;

/** Turns a non-ok host answer into the matching typed error. */
function failure(raw: RawResult, verb: PveVerb): SshError {
  const holder = raw.holder ? ` (held by ${raw.holder.verb} ${raw.holder.request_id} since ${raw.holder.since})` : '';
  switch (raw.result) {
    case 'rejected':
      return new SshError('verb_rejected', `PVE host rejected "${verb}": ${raw.reason || 'no reason given'}`, raw);
    case 'conflict':
      return new SshError('conflict', `PVE host refused "${verb}": ${raw.reason || 'its request id was already used for another verb'}; nothing ran`, raw);
    case 'busy':
      return new SshError('busy', `PVE host is busy with another verb${holder}`, raw);
    case 'in_progress':
      return new SshError('in_progress', `${verb} ${raw.request_id} is still running on the PVE host${holder}`, raw);
    case 'unknown':
      return new SshError('outcome_unknown', `${verb} ${raw.request_id}: ${raw.reason || 'outcome unknown'}`, raw);
    case 'config_error':
      return new SshError('host_config', `PVE host install config error: ${raw.reason ?? ''}`, raw);
    default: {
      const failedStep = raw.steps?.find((step) => step.exit !== 0);
      const output = failedStep?.output.trim() ?? '';
      const detail = failedStep
        ? `${failedStep.name} exited ${failedStep.exit}${failedStep.timed_out ? ' (timed out on the host)' : ''}${output ? `: ${output}` : ''}`
        : // The host sends "reason": "" when it has none.
          raw.reason || (raw.qemu_survived ? 'qm stop reported success, but the QEMU process did not go away' : 'failed');
      const parsed = raw.before ? mutationFromHost(raw) : null;
      if (failedStep && LOCKED.test(output)) {
        // Who holds the lock is what the operator needs next (a qm worker that outlived its timeout, a shutdown).
        const h = raw.lock_holder;
        const lock = h ? `; the lock is held by pid ${h.pid}${h.task ? ` (task ${h.task})` : `: ${h.cmdline}`}` : '';
        return new SshError('vm_locked', `${verb} refused: ${output}${lock}`, parsed ?? raw);
      }
      if (raw.qemu_survived) {
        // Both facts matter at 3 a.m.: why the step failed, and that the old QEMU is still there.
        return new SshError('verb_failed', `${verb} failed: ${detail}; ${survivorsLine(parsed?.survivors, parsed?.oldPid ?? null)}`, parsed ?? raw);
      }
      return new SshError('verb_failed', `${verb} failed${raw.failed_at ? ` at ${raw.failed_at}` : ''}: ${detail}`, parsed ?? raw);
    }
  }
}

/** The host's mutation answer (reset/stop/start/cycle) as the typed result; pure. */
export function mutationFromHost(raw: RawResult): MutationResult {
  const steps: VerbStep[] = (raw.steps ?? []).map((step) => ({
    name: step.name,
    exit: step.exit,
    timedOut: step.timed_out,
    durationMs: step.duration_ms,
    output: step.output,
  }));
  const before = vmState(raw.before as RawVm);
  const after = vmState(raw.after as RawVm);
  return {
    verb: raw.verb as MutatingVerb,
    vmid: raw.vmid ?? 0,
    requestId: raw.request_id ?? '',
    ok: raw.ok,
    replayed: raw.replayed === true,
    startedAt: raw.started_at ?? '',
    finishedAt: raw.finished_at ?? '',
    forensics: forensicsRef(raw.forensics),
    before,
    after,
    steps,
    oldPid: raw.old_pid ?? before.pid,
    newPid: raw.new_pid ?? after.pid,
    ...(raw.pending_applied !== undefined ? { pendingApplied: raw.pending_applied } : {}),
    ...(raw.pid_unchanged !== undefined ? { pidUnchanged: raw.pid_unchanged } : {}),
    ...(raw.pending_unapplied !== undefined ? { pendingUnapplied: raw.pending_unapplied } : {}),
    ...(raw.acknowledged !== undefined ? { acknowledged: raw.acknowledged } : {}),
    ...(raw.qmp_after_reset ? { qmpAfterReset: raw.qmp_after_reset } : {}),
    ...(raw.checks ? { checks: raw.checks.map((c) => ({ check: c.check, ok: c.ok, ...(c.detail ? { detail: c.detail } : {}) })) } : {}),
    ...(raw.ha ? { ha: { managed: raw.ha.managed, requested: raw.ha.requested, observed: raw.ha.observed, waitedS: raw.ha.waited_s } } : {}),
    ...(raw.reason ? { reason: raw.reason } : {}),
    ...(raw.warning ? { warning: raw.warning } : {}),
    ...(raw.qemu_survived !== undefined ? { qemuSurvived: raw.qemu_survived } : {}),
    ...(raw.survivors ? { survivors: raw.survivors.map(survivor) } : {}),
    ...(raw.lock_holder ? { lockHolder: { pid: raw.lock_holder.pid, task: raw.lock_holder.task, cmdline: raw.lock_holder.cmdline } } : {}),
    ...(raw.overrule_shutdown !== undefined ? { overruleShutdown: raw.overrule_shutdown } : {}),
    ...(raw.overruled_tasks?.length ? { overruledTasks: raw.overruled_tasks } : {}),
    ...(raw.failed_at !== undefined ? { failedAt: raw.failed_at } : {}),
  };
}

async function invoke(target: SshTarget, verb: PveVerb, options: VerbCallOptions): Promise<RawResult> {
  if (options.requestId !== undefined && !REQUEST_ID_PATTERN.test(options.requestId)) {
    throw new SshError('verb_rejected', `request id "${options.requestId}" does not match ${REQUEST_ID_PATTERN}`);
  }
  const command = options.requestId ? `${verb} ${options.requestId}` : verb;
  const output = await runSshCommand(target, {
    command,
    deadlineMs: options.deadlineMs,
    // Forensics documents are large but bounded on the host (each section capped there).
    headBytes: 4 * 1024 * 1024,
    tailBytes: 0,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  if (output.stdout.truncated) throw new SshError('protocol', `PVE host answer to "${verb}" exceeded 4 MiB`);
  let raw: RawResult;
  try {
    raw = JSON.parse(output.stdout.text) as RawResult;
  } catch {
    const hint = output.stderr.text.trim() || output.stdout.text.trim().slice(0, 200) || `exit ${output.exitCode}`;
    throw new SshError('protocol', `PVE host did not answer "${verb}" with JSON: ${hint}`);
  }
  if (raw.result !== 'ok') throw failure(raw, verb);
  return raw;
}

export async function pveStatus(target: SshTarget, options: Omit<VerbCallOptions, 'requestId'>): Promise<StatusResult> {
  const raw = await invoke(target, 'status', options);
  return { verb: 'status', vmid: raw.vmid ?? 0, at: raw.at ?? '', vm: vmState(raw.vm as RawVm) };
}

export async function pveForensics(target: SshTarget, options: VerbCallOptions): Promise<ForensicsResult> {
  const raw = await invoke(target, 'forensics', options);
  const sections = raw.document?.sections ?? [];
  return {
    verb: 'forensics',
    vmid: raw.vmid ?? 0,
    requestId: raw.request_id ?? '',
    replayed: raw.replayed === true,
    capturedAt: raw.document?.captured_at ?? '',
    forensics: forensicsRef(raw.forensics) as ForensicsRef,
    summary: summarizeForensics(sections, raw.document?.blockstats_interval_s ? { intervalSeconds: raw.document.blockstats_interval_s } : {}),
    sections: capSections(sections),
  };
}

export async function pveMutation(target: SshTarget, verb: MutatingVerb, options: VerbCallOptions): Promise<MutationResult> {
  return mutationFromHost(await invoke(target, verb, options));
}
