// Types for sim-vm.mjs, so TypeScript tests can import the simulator (the repo does not check JS).

export type PendingChange = { key: string; value: string } | { key: string; delete: true };

export interface VmState {
  vmid: number;
  node: string;
  /** Current config, without pending changes. */
  config: Record<string, string>;
  pending: PendingChange[];
  /** Pid of the simulated QEMU recorded by the last start; null once stopped. */
  pid: number | null;
  startedAt: number | null;
  faults: string[];
}

/** VmState plus whether the recorded QEMU process is alive (what `qm status` reports). */
export type Vm = VmState & { running: boolean };

export interface Invocation {
  t: number;
  argv: string[];
  started?: true;
  exit?: number;
}

export declare const PROCESS_FAULTS: readonly string[];
export declare const HOST_FAULTS: readonly string[];
export declare const FAULTS: readonly string[];

export declare function statePath(dir: string): string;
export declare function qmpSocketPath(dir: string): string;
export declare function invocationLogPath(dir: string): string;
export declare function defaultConfig(vmid?: number): Record<string, string>;
export declare function incidentFixPending(vmid?: number): PendingChange[];
export declare function applyPending(config: Record<string, string>, pending: PendingChange[]): Record<string, string>;

export declare function isAlive(pid: number): boolean;
export declare function sleep(ms: number): Promise<void>;
export declare function tryLock(file: string): boolean;
export declare function unlock(file: string): void;

export declare function readState(dir: string): VmState;
export declare function updateState(dir: string, change: (state: VmState) => VmState): VmState;
export declare function readVm(dir: string): Vm;
export declare function setFault(dir: string, name: string, on?: boolean): VmState;
export declare function clearFaults(dir: string): VmState;
export declare function spawnQemu(dir: string): Promise<number>;
export declare function initVm(dir: string, opts?: { vmid?: number; running?: boolean; pending?: PendingChange[] }): Promise<Vm>;
export declare function stopVmProcesses(dir: string): Promise<void>;
export declare function invocations(dir: string): Invocation[];
export declare function writeQmWrapper(dir: string, wrapperPath: string): string;
