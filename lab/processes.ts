import { readdirSync, readFileSync } from 'node:fs';

/**
 * Pids of live processes (this one and zombies excluded) whose argv satisfies `match`. The lab's
 * detached runners, hung `qm` calls and forced commands outlive their sshd by design, so the
 * lab and the tests find them this way to clean up and to check nothing is left behind.
 */
export function livePids(match: (argv: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // "pid (comm) state …": comm may contain spaces, so read the state after the last ')'.
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (match(readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0'))) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

/** Pids of live processes with an argument containing `text`. */
export function pidsWithArg(text: string): number[] {
  return livePids((argv) => argv.some((arg) => arg.includes(text)));
}

export function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
