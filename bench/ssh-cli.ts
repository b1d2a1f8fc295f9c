/**
 * The raw baselines: the OpenSSH client binary, the same key the product uses, host keys
 * pinned through a known_hosts file (never accept-any). One process per call, as an engineer
 * typing `ssh -i key pve status` would run it.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';

export interface SshEndpoint {
  port: number;
  user: string;
  keyPath: string;
  knownHostsFile: string;
}

export interface SshRun {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

export function sshArgs(endpoint: SshEndpoint, command: string): string[] {
  return [
    '-F', '/dev/null',
    '-i', endpoint.keyPath,
    '-p', String(endpoint.port),
    '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${endpoint.knownHostsFile}`,
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10',
    `${endpoint.user}@127.0.0.1`,
    command,
  ];
}

/** Runs `ssh … command`, timed from spawn to the client's exit; kills it after deadlineMs. */
export function runSsh(endpoint: SshEndpoint, command: string, deadlineMs = 60_000): Promise<SshRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('ssh', sshArgs(endpoint, command), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - started, code, stdout, stderr });
    });
  });
}

/** runSsh that insists on exit 0 (and, for the dispatcher, `"ok":true`). */
export async function runSshOk(endpoint: SshEndpoint, command: string, deadlineMs?: number): Promise<SshRun> {
  const run = await runSsh(endpoint, command, deadlineMs);
  if (run.code !== 0) {
    throw new Error(`ssh ${command}: exit ${run.code}: ${(run.stderr || run.stdout).trim().slice(0, 300)}`);
  }
  return run;
}
