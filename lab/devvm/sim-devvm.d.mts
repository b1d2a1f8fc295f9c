// Types for sim-devvm.mjs, so TypeScript (lab/devvm-host.ts, tests) can use the simulated devvm.
import type { Vm } from '../pve/sim-vm.mjs';

export interface Stall {
  from: number;
  /** null while the stall lasts (or when the boot ended stalled). */
  to: number | null;
}

export interface UnitAction {
  t: number;
  unit: string;
  kind: 'start' | 'stop' | 'reset';
  pid?: number;
}

export interface LogEntry {
  t: number;
  /** syslog priority, 0 (emerg) … 7 (debug) */
  prio: number;
  ident: string;
  pid: number;
  msg: string;
  unit?: string;
  kernel?: boolean;
}

/** One run of the guest kernel: a QEMU pid plus the time it started or was last reset. */
export interface Boot {
  key: string;
  /** The 32-hex boot id journalctl shows. */
  id: string;
  pid: number;
  bootAt: number;
  /** When the guest finished booting (sshd answered); null until then. */
  readyAt: number | null;
  endedAt: number | null;
  config: Record<string, string>;
  /** The previous boot ended without a shutdown (every stop/cycle/reset does). */
  unclean: boolean;
  incident: 'oom' | null;
  stalls: Stall[];
  actions: UnitAction[];
  log: LogEntry[];
  nextPid: number;
  logins: number;
}

/** <vmStateDir>/devvm.json */
export interface DevvmState {
  v: 1;
  scenario: string;
  vmid: number;
  incidentAssigned: boolean;
  boots: Boot[];
}

export interface GuestObservation {
  vm: Vm | null;
  running: boolean;
  /** The VM has a fault (WEDGING_FAULTS) that leaves the guest unable to answer. */
  wedged: boolean;
  boot: Boot | null;
  state: DevvmState | null;
}

export interface AnswerOptions {
  vmDir: string;
  scenario: string;
  /** Answer even while the guest is wedged, as an already-open root console would. */
  inspect?: boolean;
  /** SSH_CLIENT ("ip port localport"), for the journal's login line. */
  sshClient?: string;
  out?: (s: string) => void;
  err?: (s: string) => void;
  signal?: AbortSignal;
}

export declare const SIM_DEVVM_SCRIPT: string;
export declare const SCENARIOS: readonly string[];
export declare const WEDGING_FAULTS: readonly string[];

export declare function devvmStatePath(vmDir: string): string;
export declare function readDevvmState(vmDir: string): DevvmState | null;
export declare function updateDevvmState(vmDir: string, scenario: string, mutate: (st: DevvmState) => boolean): DevvmState;
export declare function resetDevvmState(vmDir: string, scenario: string): DevvmState;
export declare function guestBootAt(vmDir: string, vm: Vm): number | null;
export declare function observeGuest(vmDir: string, scenario: string, now?: number): GuestObservation;
export declare function markGuestReady(vmDir: string, scenario: string, key: string, at: number): void;
/** Answer one SSH command line as the simulated devvm; resolves with the exit status. */
export declare function answer(commandLine: string, opts: AnswerOptions): Promise<number>;
export declare function answerText(commandLine: string, opts: Omit<AnswerOptions, 'out' | 'err'>): Promise<{ code: number; stdout: string; stderr: string }>;
