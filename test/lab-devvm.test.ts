// The devvm is a real Debian guest in a real QEMU, reached through the real dispatcher behind a
// real sshd: each verb against it, and the 2026-06-11 stall for real — frozen counters while QMP
// answers, the guest kernel's hung tasks, a reset that is acknowledged and then hangs QEMU, and
// the cycle that recovers it. One booted VM for the whole file (the tests run in order).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runSshCommand, type CommandOutput } from '../activities/ssh/connection.js';
import { summarizeForensics } from '../activities/pve/forensics.js';
import { loadGuestImage } from '../lab/devvm.js';
import { incidentFixPending, readVm } from '../lab/pve/lab-vm.mjs';
import { paths, procState, readPid } from '../lab/pve/pve-node.mjs';
import { applyScenario, OOM_UNIT } from '../lab/scenarios.js';
import type { Devvm } from '../lab/devvm.js';
import { startPveFixture, timed, type PveFixture } from './helpers/fixtures.js';

let fx: PveFixture;
let devvm: Devvm;

const onDevvm = (command: string, deadlineMs = 15_000): Promise<CommandOutput> => runSshCommand(devvm.target(), { command, deadlineMs });
const verb = async (command: string, deadlineMs = 120_000) => {
  const out = await fx.call(command, deadlineMs);
  return { exit: out.exitCode, doc: JSON.parse(out.stdout.text) as Record<string, unknown> & { ok: boolean; result: string } };
};
type Section = { name: string; exit: number; timed_out: boolean; duration_ms: number; output: string };
const sections = (doc: Record<string, unknown>) => ((doc.document ?? doc) as { sections: Section[] }).sections;
const section = (doc: Record<string, unknown>, name: string) => {
  const found = sections(doc).find((s) => s.name === name);
  if (!found) throw new Error(`no forensics section '${name}' (have: ${sections(doc).map((s) => s.name).join(', ')})`);
  return found;
};
/** drive-scsi0's counters from a QMP query-blockstats section. */
function scsi0Stats(output: string): { rd_operations: number; wr_operations: number; idle_time_ns?: number } {
  const reply = output.split('\n').map((line) => { try { return JSON.parse(line) as { return?: unknown }; } catch { return {}; } }).filter((m) => Array.isArray(m.return)).pop();
  const drive = (reply?.return as { device: string; stats: { rd_operations: number; wr_operations: number; idle_time_ns?: number } }[]).find((d) => d.device === 'drive-scsi0');
  if (!drive) throw new Error(`no drive-scsi0 in ${output.slice(0, 300)}`);
  return drive.stats;
}

beforeAll(async () => {
  fx = await startPveFixture('lab-devvm', { vm: { guest: true, pending: incidentFixPending() } });
  devvm = fx.host.devvm as Devvm;
  await devvm.waitForSsh();
}, 120_000);

afterAll(async () => {
  await fx?.stop();
});

describe('a real devvm', () => {
  test('when booted, its sshd answers with the pinned host key and a wrong pin is refused', async () => {
    const image = loadGuestImage();
    expect(devvm.knownHostsLine).toBe(`[127.0.0.1]:${devvm.port} ${image.hostPublicKey}`);
    const ok = await onDevvm('id -un; uname -r; systemctl is-system-running --wait || true');
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout.text).toContain('breakglass\n');
    const otherKey = readFileSync(`${image.dir}/breakglass_ed25519.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    await expect(runSshCommand(devvm.target({ pins: { knownHosts: `[127.0.0.1]:${devvm.port} ${otherKey}` } }), { command: 'true', deadlineMs: 10_000 })).rejects.toThrow(/host key/i);
  });

  test('the breakglass account has the sudo rule host/devvm/install.sh installs and the everyday diagnostics', async () => {
    const out = await onDevvm('sudo -n true && echo sudo-ok; for c in uptime dmesg ps top free df vmstat journalctl systemctl ss ip; do command -v $c >/dev/null || echo missing:$c; done; cat /proc/loadavg >/dev/null && echo proc-ok');
    expect(out.stdout.text).toContain('sudo-ok');
    expect(out.stdout.text).toContain('proc-ok');
    expect(out.stdout.text).not.toContain('missing:');
    expect(readFileSync('host/devvm/install.sh', 'utf8')).toContain('NOPASSWD');
  });

  test('the guest agent is real: qm guest cmd ping answers through virtio-serial', async () => {
    const forensics = await verb('forensics');
    expect(section(forensics.doc, 'guest agent ping')).toMatchObject({ exit: 0, timed_out: false });
    expect(section(forensics.doc, 'guest agent info').output).toContain('guest-ping');
  });

  test('an idle healthy guest is not called frozen, whatever its counters did', async () => {
    // Let the boot's I/O settle, so the two samples may well be identical.
    await new Promise((r) => setTimeout(r, 3_000));
    const summary = summarizeForensics(sections((await verb('forensics')).doc));
    expect(summary).toMatchObject({ qmpAnswered: true, guestAgentAnswered: true, dStateThreads: 0, ioFrozen: false });
    expect(['flat', 'moving']).toContain(summary.ioVerdict);
    expect(summary.hungTaskLines).toEqual([]);
  });
});

describe('verbs through the real dispatcher', () => {
  test('a reset keeps the QEMU pid, leaves pending staged, and the guest reboots and answers again', async () => {
    const bootBefore = (await onDevvm('cat /proc/sys/kernel/random/boot_id')).stdout.text.trim();
    const before = readVm(fx.host.nodeRoot);
    const { exit, doc } = await verb('reset bg-lab-devvm-reset-1');
    expect(doc).toMatchObject({ ok: true, acknowledged: true, qmp_after_reset: 'answers', pid_unchanged: true, pending_unapplied: true });
    expect(exit).toBe(0);
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ pid: before.pid, pending: incidentFixPending() });
    await devvm.waitForSsh(60_000);
    expect((await onDevvm('cat /proc/sys/kernel/random/boot_id')).stdout.text.trim()).not.toBe(bootBefore);
  });

  test('stop leaves no QEMU and no sshd; start boots a new QEMU whose guest answers', async () => {
    const old = readVm(fx.host.nodeRoot).pid as number;
    const stop = await verb('stop bg-lab-devvm-stop-1');
    expect(stop.doc).toMatchObject({ ok: true, qemu_survived: false });
    expect(stop.exit).toBe(0);
    expect(procState(old) ?? 'gone').toMatch(/gone|Z/);
    await expect(onDevvm('true', 5_000)).rejects.toThrow();
    // The stop's cleanup applied the staged fix: stage it again for the stall below.
    expect(readVm(fx.host.nodeRoot).pending).toEqual({});

    const start = await verb('start bg-lab-devvm-start-1');
    expect(start.exit).toBe(0);
    expect(start.doc.new_pid).not.toBe(old);
    await devvm.waitForSsh(60_000);
    expect((await onDevvm('echo up')).stdout.text).toBe('up\n');
  });
});

describe('the 2026-06-11 stall, for real', () => {
  test('with the disk frozen under load, logins hang while QMP still says running', async () => {
    // Put the VM back on the stalling path with the fix staged, as it was on the day.
    await fx.resetVm({ pending: incidentFixPending() });
    await devvm.waitForSsh(60_000);
    await applyScenario('io-stall', fx.host.nodeRoot, devvm);
    const login = await timed(() => onDevvm('uptime', 8_000));
    expect(login.error).toBeDefined();
    expect(login.ms).toBeGreaterThanOrEqual(7_500);
    const status = await verb('status');
    expect(status.doc).toMatchObject({ ok: true, vm: { status: 'running', qmpstatus: 'running' } });
  }, 120_000);

  test('forensics shows the frozen counters and the guest kernel\'s hung tasks', async () => {
    // The guest reports a task blocked for 10 s (its hung_task_timeout_secs in the lab).
    const until = Date.now() + 60_000;
    while (!readFileSync(paths(fx.host.nodeRoot).serialLog, 'utf8').includes('blocked for more than') && Date.now() < until) await new Promise((r) => setTimeout(r, 500));
    const { doc } = await verb('forensics');
    const first = scsi0Stats(section(doc, 'qmp query-status query-block query-blockstats').output);
    const second = scsi0Stats(section(doc, 'qmp query-blockstats (second sample)').output);
    expect(first.rd_operations + first.wr_operations).toBeGreaterThan(0); // the drive had work
    expect(second).toMatchObject({ rd_operations: first.rd_operations, wr_operations: first.wr_operations });
    expect(section(doc, 'qmp query-status query-block query-blockstats').output).toContain('"status": "running"');
    expect(section(doc, 'guest agent ping').exit).not.toBe(0);
    expect(section(doc, 'guest console tail').output).toMatch(/INFO: task \S+:\d+ blocked for more than \d+ seconds/);
    // The verdict: flat counters, corroborated by the silent agent and the hung tasks.
    const summary = summarizeForensics(sections(doc));
    expect(summary).toMatchObject({ ioVerdict: 'frozen', ioFrozen: true, qmpAnswered: true });
    expect(summary.ioEvidence?.join(' ')).toMatch(/agent/i);
    expect(summary.ioEvidence?.join(' ')).toMatch(/hung task|blocked/i);
  }, 90_000);

  test('a reset is not reported as success: QEMU stops answering and the devvm stays down', async () => {
    const pid = readVm(fx.host.nodeRoot).pid;
    const { exit, doc } = await verb('reset bg-lab-devvm-reset-stalled');
    expect(exit).toBe(1);
    expect(doc.ok).toBe(false);
    // Either QEMU acknowledged and then hung, or the acknowledgement itself never came.
    if (doc.acknowledged) expect(doc).toMatchObject({ qmp_after_reset: 'silent', reason: expect.stringContaining('cycle') });
    else expect(JSON.stringify(doc.steps)).toContain("qmp command 'system_reset' failed - got timeout");
    expect(readVm(fx.host.nodeRoot).pid).toBe(pid);
    await expect(onDevvm('true', 8_000)).rejects.toThrow();
  }, 90_000);

  test('a cycle recovers it: new QEMU, pending applied, the devvm answers again', async () => {
    const old = readVm(fx.host.nodeRoot).pid as number;
    const storage = readPid(paths(fx.host.nodeRoot).storagePidFile) as number;
    const { exit, doc } = await verb('cycle bg-lab-devvm-cycle-1', 180_000);
    expect(doc).toMatchObject({ ok: true, old_pid: old, pending_applied: true, qemu_survived: false });
    expect(exit).toBe(0);
    expect(doc.new_pid).not.toBe(old);
    expect(procState(storage) ?? 'gone').toMatch(/gone|Z/);
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ pending: {}, config: { scsihw: 'virtio-scsi-single' } });
    const boot = await devvm.waitForSsh(60_000);
    expect(boot).toBeLessThan(60_000);
    expect((await onDevvm('echo recovered')).stdout.text).toBe('recovered\n');
  }, 240_000);
});

test('oom: the guest kernel kills the memory eater and systemd leaves its unit failed', async () => {
  await applyScenario('oom', fx.host.nodeRoot, devvm);
  const log = await onDevvm('journalctl -k --no-pager | grep -i "out of memory"', 20_000);
  expect(log.stdout.text).toMatch(/Out of memory: Killed process \d+ \(code-indexer\)/);
  const failed = await onDevvm('systemctl --failed --no-legend', 10_000);
  expect(failed.stdout.text).toContain(OOM_UNIT);
  expect((await onDevvm(`systemctl show -p Result ${OOM_UNIT}`)).stdout.text.trim()).toBe('Result=oom-kill');
}, 120_000);
