/** What the bench ran on, printed above the table (ratios only mean something per machine). */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { toolPath } from '../lab/temporal-dev.js';

export interface Machine {
  cpus: number;
  model: string;
  memoryGiB: number;
  node: string;
  kernel: string;
  openssh: string;
  temporalCli: string;
  loadAtStart: number[];
}

function firstMatch(path: string, pattern: RegExp): string | null {
  try {
    return pattern.exec(readFileSync(path, 'utf8'))?.[1]?.trim() ?? null;
  } catch {
    return null;
  }
}

/** First line a tool prints about its version (`ssh -V` prints to stderr). */
function version(command: string, args: string[]): string {
  const run = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000 });
  return `${run.stdout ?? ''}${run.stderr ?? ''}`.trim().split('\n')[0] || '?';
}

export function describeMachine(): Machine {
  const memKiB = Number(firstMatch('/proc/meminfo', /^MemTotal:\s+(\d+)/m) ?? 0);
  return {
    cpus: availableParallelism(),
    model: firstMatch('/proc/cpuinfo', /^model name\s*:\s*(.+)$/m) ?? 'unknown',
    memoryGiB: Math.round((memKiB / 1024 / 1024) * 10) / 10,
    node: process.version,
    kernel: release(),
    openssh: version('ssh', ['-V']),
    temporalCli: version(toolPath('temporal'), ['--version']),
    loadAtStart: loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

export function machineLines(machine: Machine, loadAtEnd: number[]): string[] {
  return [
    `- machine: ${machine.cpus} CPUs (${machine.model}), ${machine.memoryGiB} GiB RAM, Linux ${machine.kernel}`,
    `- software: Node ${machine.node}, ${machine.openssh}, ${machine.temporalCli}`,
    `- load average (1/5/15 min) at start ${machine.loadAtStart.join(' / ')}, at end ${loadAtEnd.map((value) => value.toFixed(2)).join(' / ')}`,
  ];
}
