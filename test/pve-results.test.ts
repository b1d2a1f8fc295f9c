// The PVE host's answers as the product reads and words them: the forensics summary
// (activities/pve/forensics.ts) against section texts as a PVE 8/9 host prints them — when flat
// block counters mean a stall and when they only mean an idle guest — the mapping of the host's
// mutation JSON (activities/pve/verbs.ts), and the postmortem's words for what was verified.
import { describe, expect, it } from 'vitest';
import { FIRST_QMP_SECTION, SECOND_QMP_SECTION, parseQemuProcesses, summarizeForensics, type RawSection } from '../activities/pve/forensics.js';
import { mutationFromHost, vmState, type RawResult, type RawVm } from '../activities/pve/verbs.js';
import { ioVerdictLine, mutationOutcome, pendingLine, survivorsLine, verifiedLine, type ForensicsSummary } from '../workflows/pve-types.js';
import type { SessionState, TranscriptEntry } from '../workflows/session-types.js';
import { postmortem } from '../server/report.js';

const section = (name: string, output: string, over: Partial<RawSection> = {}): RawSection => ({ name, exit: 0, timed_out: false, duration_ms: 35, output, ...over });

interface Drive {
  device: string;
  qdev: string;
  removable?: boolean;
  rd: number;
  wr: number;
}

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, "package": "pve-qemu-kvm_9.2.0-5"}, "capabilities": ["oob"]}}';

function stats(drive: Drive) {
  return {
    device: drive.device,
    qdev: drive.qdev,
    stats: { rd_bytes: drive.rd * 4096, wr_bytes: drive.wr * 4096, rd_operations: drive.rd, wr_operations: drive.wr, flush_operations: 12, idle_time_ns: 1_503_221_004, failed_rd_operations: 0 },
  };
}

/** The two QMP sections: greeting, qmp_capabilities, query-status, query-block, query-blockstats; then greeting, caps, blockstats. */
function qmpSections(first: Drive[], second: Drive[]): RawSection[] {
  const block = first.map((d) => ({ 'io-status': 'ok', device: d.device, qdev: d.qdev, locked: false, removable: d.removable === true, type: 'unknown', ...(d.removable ? { tray_open: false } : { inserted: { ro: false, drv: 'raw', file: '/dev/pve/vm-102-disk-0' } }) }));
  return [
    section(FIRST_QMP_SECTION, [GREETING, '{"return": {}}', '{"return": {"status": "running", "running": true}}', JSON.stringify({ return: block }), JSON.stringify({ return: first.map(stats) })].join('\n')),
    section(SECOND_QMP_SECTION, [GREETING, '{"return": {}}', JSON.stringify({ return: second.map(stats) })].join('\n')),
  ];
}

const scsi = (rd: number, wr: number): Drive => ({ device: 'drive-scsi0', qdev: 'scsi0', rd, wr });
const cdrom = (rd: number): Drive => ({ device: 'drive-ide2', qdev: 'ide2', removable: true, rd, wr: 0 });

const QM_STATUS_8 = ['balloon: 8589934592', 'cpus: 4', 'name: devvm', 'pid: 4242', 'qmpstatus: running', 'running-machine: pc-i440fx-8.1+pve0', 'running-qemu: 8.1.5', 'status: running', 'uptime: 86400', 'vmid: 102'].join('\n');

function qmStatus9(io: { some: number; full: number }): string {
  return [
    'cpus: 4',
    'name: devvm',
    'pid: 4242',
    `pressurecpufull: 0`,
    `pressurecpusome: 0.12`,
    `pressureiofull: ${io.full}`,
    `pressureiosome: ${io.some}`,
    'pressurememoryfull: 0',
    'pressurememorysome: 0',
    'qmpstatus: running',
    'running-machine: pc-i440fx-9.2+pve1',
    'running-qemu: 9.2.0',
    'status: running',
    'uptime: 86400',
  ].join('\n');
}

const config = (agent: string | null) => ['boot: order=scsi0', 'cores: 4', 'memory: 8192', 'name: devvm', 'scsi0: local-lvm:vm-102-disk-0,size=64G', 'scsihw: virtio-scsi-pci', ...(agent === null ? [] : [`agent: ${agent}`])].sort().join('\n');

/** A healthy QEMU: every thread sleeping. */
const HEALTHY_PROCESS = `== process 4242 (in scope: yes)
== /proc/4242/status
Name:\tqemu-system-x86
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Threads:\t6
== threads of 4242
4242 S do_sys_poll qemu-system-x86
4243 S futex_wait_queue call_rcu
4247 S kvm_vcpu_block CPU 0/KVM
4248 S kvm_vcpu_block CPU 1/KVM
4251 S futex_wait_queue vnc_worker
4252 S do_sys_poll IO iothread0
`;

/** The 2026-06-11 kind: main loop and an iothread stuck in the block layer, aio workers in D. */
const STALLED_PROCESS = `== process 4242 (in scope: yes)
== /proc/4242/status
Name:\tqemu-system-x86
State:\tS (sleeping)
== threads of 4242
4242 D blk_mq_get_tag qemu-system-x86
4243 S futex_wait_queue call_rcu
4247 S kvm_vcpu_block CPU 0/KVM
4252 D io_schedule IO iothread0
4260 D io_schedule worker
== stack of 4242 (D)
[<0>] blk_mq_get_tag+0x11e/0x2b0
[<0>] __blk_mq_alloc_requests+0x12c/0x350
== stack of 4252 (D)
[<0>] io_schedule+0x42/0x70
`;

const ZOMBIE_PROCESS = `== process 4242 (in scope: yes)
== /proc/4242/status
Name:\tqemu-system-x86
State:\tZ (zombie)
Tgid:\t4242
== threads of 4242
4242 Z - qemu-system-x86
4252 D refrigerator IO iothread0
4253 S 0 call_rcu
== stack of 4252 (D)
[<0>] __refrigerator+0x4c/0x130
== process 5150 (in scope: yes)
== /proc/5150/status
Name:\tqemu-system-x86
State:\tZ (zombie)
== threads of 5150
5150 Z - qemu-system-x86
`;

const scopeSection = (pids: number[], ioFull = 0) =>
  section(
    'vm scope',
    `scope: /sys/fs/cgroup/qemu.slice/102.scope
procs: ${pids.join(' ')}
== io.pressure
some avg10=${(ioFull * 1.5).toFixed(2)} avg60=0.40 avg300=0.10 total=1204433
full avg10=${ioFull.toFixed(2)} avg60=0.30 avg300=0.08 total=1003200
== cpu.pressure
some avg10=0.31 avg60=0.20 avg300=0.05 total=88012
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
== memory.pressure
some avg10=0.00 avg60=0.00 avg300=0.00 total=0
full avg10=0.00 avg60=0.00 avg300=0.00 total=0`,
  );

const CONSOLE_QUIET = `[    9.102331] systemd[1]: Reached target multi-user.target - Multi-User System.
[   12.442910] IPv6: ADDRCONF(NETDEV_CHANGE): ens18: link becomes ready`;

const CONSOLE_HUNG = `${CONSOLE_QUIET}
[  131.551201] INFO: task jbd2/sda1-8:123 blocked for more than 10 seconds.
[  131.552003]       Not tainted 6.1.0-28-amd64 #1 Debian 6.1.119-1
[  131.552880] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
[  131.560114] INFO: task systemd-journal:201 blocked for more than 10 seconds.
[  142.812201] INFO: task sshd:812 blocked for more than 21 seconds.
[  142.813311] INFO: task kworker/u4:2:66 blocked for more than 21 seconds.
[  153.002114] INFO: task code-indexer:930 blocked for more than 32 seconds.
[  153.004021] INFO: task jbd2/sda1-8:123 blocked for more than 32 seconds.`;

const PING_OK = section('guest agent ping', '');
const PING_DOWN = section('guest agent ping', 'QEMU guest agent is not running', { exit: 255 });
const PING_TIMEOUT = section('guest agent ping', '', { exit: 124, timed_out: true, duration_ms: 10_000 });

/** A full capture; `over` replaces or adds sections by name. */
function capture(over: RawSection[], drives: [Drive[], Drive[]] = [[scsi(100, 500), cdrom(3)], [scsi(100, 500), cdrom(3)]]): RawSection[] {
  const base = [
    section('qm status --verbose', QM_STATUS_8),
    section('qm config', config('1')),
    section('qm config --current', config('1')),
    section('qm pending', 'cur scsihw: virtio-scsi-pci'),
    ...qmpSections(drives[0], drives[1]),
    PING_OK,
    section('guest agent info', '{"version": "7.2.15"}'),
    section('qemu process', HEALTHY_PROCESS),
    section('ha resource', 'not HA-managed'),
    section('host dmesg tail', ''),
    section('qm lock file', 'not held'),
    section('guest console tail', CONSOLE_QUIET),
  ];
  const names = new Set(over.map((s) => s.name));
  return [...base.filter((s) => !names.has(s.name)), ...over];
}

describe('forensics summary: is flat I/O a stall?', () => {
  it('when an idle healthy guest leaves every counter unchanged, then the verdict is flat, not frozen', () => {
    const summary = summarizeForensics(capture([section('qm status --verbose', qmStatus9({ some: 0, full: 0 })), scopeSection([4242])]), { intervalSeconds: 2 });
    expect(summary).toMatchObject({ ioVerdict: 'flat', ioFrozen: false, stallSigns: [], qmpAnswered: true, qmpStatus: 'running', guestAgentAnswered: true, guestAgentEnabled: true });
    expect(summary.ioEvidence).toEqual(['no block counter moved in 2 s, and nothing else points at a stall: an idle guest looks the same']);
    expect(ioVerdictLine(summary)).toBe('counters flat, no sign of a stall');
  });

  it('when only the CD-ROM moves or stays flat, then it is ignored: flat disks with a moving CD are still flat, and a VM with only a CD-ROM is unknown', () => {
    const cdMoves = summarizeForensics(capture([], [[scsi(100, 500), cdrom(3)], [scsi(100, 500), cdrom(9)]]));
    expect(cdMoves.ioVerdict).toBe('flat');
    expect(cdMoves.blockDeltas.map((d) => d.device)).toEqual(['drive-scsi0']);

    const cdOnly = summarizeForensics(capture([], [[cdrom(3)], [cdrom(3)]]));
    expect(cdOnly).toMatchObject({ ioVerdict: 'unknown', ioFrozen: null, blockDeltas: [] });
    expect(cdOnly.ioEvidence?.[0]).toMatch(/no disk to compare/);
  });

  it('when drives are started with -blockdev (device "", PVE 9), then they are matched between samples by qdev, in any order', () => {
    const disk = (wr: number): Drive => ({ device: '', qdev: 'scsi0', rd: 10, wr });
    const cd: Drive = { device: '', qdev: 'ide2', removable: true, rd: 1, wr: 0 };
    const summary = summarizeForensics(capture([], [[cd, disk(500)], [disk(520), cd]]), { intervalSeconds: 2 });
    expect(summary.ioVerdict).toBe('moving');
    expect(summary.ioFrozen).toBe(false);
    expect(summary.blockDeltas).toEqual([{ device: 'scsi0', readBytes: 0, writeBytes: 20 * 4096, readOps: 0, writeOps: 20, frozen: false }]);
    expect(summary.ioEvidence?.[0]).toBe('block counters moved in 2 s on scsi0 (+0 reads, +20 writes)');
  });

  it('when counters are flat and QEMU threads are in D state, then the verdict is frozen with the threads as evidence', () => {
    const summary = summarizeForensics(capture([section('qemu process', STALLED_PROCESS), PING_DOWN]));
    expect(summary).toMatchObject({ ioVerdict: 'frozen', ioFrozen: true, dStateThreads: 3, qemuProcessState: 'S (sleeping)', zombieLeader: null });
    expect(summary.stallSigns).toHaveLength(2);
    expect(summary.stallSigns?.[0]).toBe('3 QEMU threads in D state (waiting uninterruptibly in the kernel): 4242 qemu-system-x86 in blk_mq_get_tag, 4252 IO iothread0 in io_schedule, 4260 worker in io_schedule');
    expect(summary.stallSigns?.[1]).toBe('the guest agent is enabled in the VM config, yet its ping failed: QEMU guest agent is not running');
    expect(summary.ioEvidence?.[0]).toBe('no block counter moved between the two samples on drive-scsi0');
    expect(summary.threads).toContainEqual({ pid: 4242, tid: 4252, state: 'D', wchan: 'io_schedule', comm: 'IO iothread0' });
    expect(ioVerdictLine(summary)).toBe('I/O frozen (2 signs)');
  });

  it('when counters are flat and the guest console shows hung tasks, then the verdict is frozen and the newest five lines are kept', () => {
    const summary = summarizeForensics(capture([section('guest console tail', CONSOLE_HUNG)]));
    expect(summary.ioVerdict).toBe('frozen');
    expect(summary.hungTaskLines).toHaveLength(5);
    expect(summary.hungTaskLines?.[0]).toBe('[  131.560114] INFO: task systemd-journal:201 blocked for more than 10 seconds.');
    expect(summary.hungTaskLines?.[4]).toBe('[  153.004021] INFO: task jbd2/sda1-8:123 blocked for more than 32 seconds.');
    expect(summary.stallSigns).toEqual([expect.stringMatching(/^the guest kernel reports hung tasks: .*jbd2\/sda1-8:123 blocked for more than 32 seconds\. \(and 4 more\)$/)]);
  });

  it('when the guest agent is configured off (agent: 0) or not configured and its ping fails, then that is no evidence; enabled=1 with a timed-out ping is', () => {
    for (const agent of ['0', 'enabled=0,fstrim_cloned_disks=1', null]) {
      const summary = summarizeForensics(capture([section('qm config', config(agent)), PING_DOWN]));
      expect(summary, String(agent)).toMatchObject({ ioVerdict: 'flat', guestAgentEnabled: false, guestAgentAnswered: false, stallSigns: [] });
    }
    const enabled = summarizeForensics(capture([section('qm config', config('enabled=1,fstrim_cloned_disks=1')), PING_TIMEOUT]));
    expect(enabled).toMatchObject({ ioVerdict: 'frozen', guestAgentEnabled: true, guestAgentAnswered: false });
    expect(enabled.stallSigns).toEqual(['the guest agent is enabled in the VM config, yet its ping timed out after 10 s']);
  });

  it('when QMP is silent (only the greeting, then the section timed out), then the verdict is unknown, and signs are still listed', () => {
    const silent = [
      section(FIRST_QMP_SECTION, GREETING, { exit: 124, timed_out: true, duration_ms: 5_000 }),
      section(SECOND_QMP_SECTION, GREETING, { exit: 124, timed_out: true, duration_ms: 5_000 }),
    ];
    const summary = summarizeForensics(capture([...silent, section('qemu process', STALLED_PROCESS)]));
    expect(summary).toMatchObject({ qmpAnswered: false, qmpStatus: null, ioVerdict: 'unknown', ioFrozen: null, blockDeltas: [], timedOutSections: [FIRST_QMP_SECTION, SECOND_QMP_SECTION] });
    expect(summary.ioEvidence?.[0]).toBe('QMP did not answer: no block counters to compare');
    expect(summary.ioEvidence).toHaveLength(2);
    expect(ioVerdictLine(summary)).toBe('I/O unknown (no two block-stat samples), 1 sign of a stall');
  });

  it('when the main thread is a zombie while another thread lives, then that process is the zombie leader; an all-zombie process is not', () => {
    const processes = parseQemuProcesses(ZOMBIE_PROCESS);
    expect(processes.map((p) => [p.pid, p.inScope, p.state, p.threads.length])).toEqual([
      [4242, true, 'Z (zombie)', 3],
      [5150, true, 'Z (zombie)', 1],
    ]);
    const summary = summarizeForensics(capture([section('qemu process', ZOMBIE_PROCESS), scopeSection([4242, 5150])]));
    expect(summary.zombieLeader).toEqual({ pid: 4242, liveThreads: 2 });
    expect(summary.dStateThreads).toBe(1);
    // "-" and "0" mean the thread waits nowhere in particular.
    expect(summary.threads?.find((t) => t.tid === 4253)).toEqual({ pid: 4242, tid: 4253, state: 'S', wchan: '', comm: 'call_rcu' });
    expect(summary.scopePids).toEqual([4242, 5150]);
  });

  it('when the capture is from an older host (only /proc/PID/status), then the process state still reads and a D-state process is a sign', () => {
    const old = `== /proc/4242/status\nName:\tqemu-system-x86\nState:\tD (disk sleep)\n\n== /proc/4242/wchan\nio_schedule\n== /proc/4242/stack\n[<0>] io_schedule+0x42/0x70\n`;
    const summary = summarizeForensics(capture([section('qemu process', old)]));
    expect(summary).toMatchObject({ qemuProcessState: 'D (disk sleep)', threads: [], dStateThreads: 0, ioVerdict: 'frozen' });
    expect(summary.stallSigns).toEqual(['the QEMU process 4242 is in D state (D (disk sleep))']);
  });

  it('when PVE 9 reports I/O pressure in qm status, then it is read from there and full > 0 is a sign; otherwise the scope\'s io.pressure is used', () => {
    const fromQm = summarizeForensics(capture([section('qm status --verbose', qmStatus9({ some: 41.2, full: 38.05 })), scopeSection([4242], 0)]));
    expect(fromQm.pressure).toEqual({ source: 'qm status', ioSome: 41.2, ioFull: 38.05, cpuSome: 0.12, cpuFull: 0, memorySome: 0, memoryFull: 0 });
    expect(fromQm).toMatchObject({ ioVerdict: 'frozen', runningQemu: '9.2.0' });
    expect(fromQm.stallSigns).toEqual([expect.stringMatching(/^PVE reports I\/O pressure: full avg10 38\.05 %/)]);

    const fromScope = summarizeForensics(capture([scopeSection([4242], 12.5)]));
    expect(fromScope.pressure).toEqual({ source: 'scope', ioSome: 18.75, ioFull: 12.5, cpuSome: 0.31, cpuFull: 0, memorySome: 0, memoryFull: 0 });
    expect(fromScope).toMatchObject({ ioVerdict: 'frozen', runningQemu: '8.1.5', scope: { path: '/sys/fs/cgroup/qemu.slice/102.scope', present: true } });
    expect(fromScope.stallSigns).toEqual([expect.stringMatching(/^the VM scope's io\.pressure: full avg10 12\.5 %/)]);

    const none = summarizeForensics(capture([]));
    expect(none).toMatchObject({ pressure: null, scope: null, scopePids: [] });
  });

  it('when the scope is absent and the VM is HA-managed, then both are reported', () => {
    const summary = summarizeForensics(
      capture([section('vm scope', 'scope: /sys/fs/cgroup/qemu.slice/102.scope (absent)'), section('ha resource', 'vm: 102\n\tstate started\n\tmax_restart 1\n\tmax_relocate 1')]),
    );
    expect(summary).toMatchObject({ scope: { path: '/sys/fs/cgroup/qemu.slice/102.scope', present: false }, scopePids: [], haManaged: true, haState: 'started' });
    expect(summarizeForensics(capture([])).haManaged).toBe(false);
    expect(summarizeForensics(capture([]).filter((s) => s.name !== 'ha resource')).haManaged).toBeNull();
  });

  it('when a summary was recorded before the verdict existed, then its words come from ioFrozen', () => {
    const legacy: ForensicsSummary = { qmpAnswered: true, qmpStatus: 'running', ioFrozen: true, blockDeltas: [], guestAgentAnswered: false, qemuProcessState: 'S', timedOutSections: [], failedSections: [] };
    expect(ioVerdictLine(legacy)).toBe('I/O frozen (block counters did not move)');
    expect(ioVerdictLine({ ...legacy, ioFrozen: null })).toMatch(/^I\/O unknown/);
  });
});

const vm = (over: Partial<RawVm> = {}): RawVm => ({ status: 'running', qmpstatus: 'running', pid: 4242, uptime: 86_400, lock: '', pending: { present: false, lines: [] }, ...over });

function raw(over: Partial<RawResult>): RawResult {
  return { ok: true, result: 'ok', verb: 'stop', request_id: 'req-stop-0001', vmid: 102, started_at: '2026-06-11T03:00:00Z', finished_at: '2026-06-11T03:00:09Z', forensics: null, before: vm(), after: vm(), steps: [], ...over };
}

describe('the host mutation JSON, typed', () => {
  it('when the host reports checks, HA, survivors, the lock holder and an overruled shutdown, then each is mapped to its camelCase field', () => {
    const result = mutationFromHost(
      raw({
        ok: false,
        result: 'failed',
        before: vm({ qmp: 'silent', ha: { managed: true, state: 'started' }, scope_pids: [4242] }),
        after: vm({ status: 'stopped', qmpstatus: 'stopped', pid: null, uptime: null, qmp: null, ha: null, scope_pids: [4242], warning: "qm says stopped, but QEMU processes remain in the VM's scope: 4242" }),
        checks: [
          { check: 'HA manager brought the VM to stopped', ok: true, detail: 'after 3 s' },
          { check: 'no QEMU process left', ok: false, detail: 'pid 4242: leader Z, 1 thread in D' },
        ],
        ha: { managed: true, requested: 'stopped', observed: 'stopped', waited_s: 3 },
        qemu_survived: true,
        survivors: [{ pid: 4242, leader_state: 'Z (zombie)', in_scope: true, threads: [{ tid: 4242, state: 'Z', wchan: '-', comm: 'qemu-system-x86' }, { tid: 4252, state: 'D', wchan: 'refrigerator', comm: 'IO iothread0' }] }],
        lock_holder: { pid: 7001, task: 'UPID:pve1:00001B59:0A1B2C3D:6848F2A0:qmshutdown:102:root@pam:', cmdline: 'task UPID:pve1:00001B59:0A1B2C3D:6848F2A0:qmshutdown:102:root@pam:' },
        overrule_shutdown: true,
        pending_applied: true,
        failed_at: 'ha-wait',
      }),
    );
    expect(result).toMatchObject({
      verb: 'stop',
      ok: false,
      oldPid: 4242,
      newPid: null,
      checks: [
        { check: 'HA manager brought the VM to stopped', ok: true, detail: 'after 3 s' },
        { check: 'no QEMU process left', ok: false, detail: 'pid 4242: leader Z, 1 thread in D' },
      ],
      ha: { managed: true, requested: 'stopped', observed: 'stopped', waitedS: 3 },
      qemuSurvived: true,
      survivors: [{ pid: 4242, leaderState: 'Z (zombie)', inScope: true, threads: [{ tid: 4242, state: 'Z', wchan: '', comm: 'qemu-system-x86' }, { tid: 4252, state: 'D', wchan: 'refrigerator', comm: 'IO iothread0' }] }],
      lockHolder: { pid: 7001, task: 'UPID:pve1:00001B59:0A1B2C3D:6848F2A0:qmshutdown:102:root@pam:' },
      overruleShutdown: true,
      pendingApplied: true,
      failedAt: 'ha-wait',
    });
    expect(result.before).toMatchObject({ qmp: 'silent', ha: { managed: true, state: 'started' }, scopePids: [4242] });
    expect(result.after).toMatchObject({ qmp: null, ha: null, scopePids: [4242], warning: expect.stringContaining('QEMU processes remain') });
    expect(survivorsLine(result.survivors)).toBe('the QEMU process 4242 survived (leader Z (zombie), in the VM scope; live threads: 4252 D in refrigerator)');
    expect(verifiedLine(result)).toBe('stop requested from the HA manager; verified: HA manager brought the VM to stopped (after 3 s); NOT verified: no QEMU process left (pid 4242: leader Z, 1 thread in D)');
    expect(pendingLine(result)).toBe("pending config applied by qm stop's cleanup, although a later step failed");
  });

  it('when an older host answers without the new fields, then none of them appear', () => {
    const result = mutationFromHost(raw({ verb: 'cycle', new_pid: 5151, after: vm({ pid: 5151 }), pending_applied: true, qemu_survived: false, failed_at: null }));
    for (const key of ['checks', 'ha', 'survivors', 'lockHolder', 'overruleShutdown', 'acknowledged']) expect(result, key).not.toHaveProperty(key);
    expect(vmState(vm())).toEqual({ status: 'running', qmpstatus: 'running', pid: 4242, uptimeSeconds: 86_400, lock: '', pending: { present: false, lines: [] } });
    expect(mutationOutcome(result)).toBe('done');
    expect(pendingLine(result)).toBe('pending config applied (staged before, gone after)');
  });

  it('when a reset is only acknowledged, then it reads "acknowledged" until a check confirms it', () => {
    const acked = mutationFromHost(raw({ verb: 'reset', acknowledged: true, checks: [{ check: 'QEMU acknowledged system_reset', ok: true }] }));
    expect(mutationOutcome(acked)).toBe('acknowledged');
    // qm exiting 0 confirms nothing either.
    const exited = mutationFromHost(raw({ verb: 'reset', checks: [{ check: 'qm reset exited 0', ok: true }, { check: 'QEMU acknowledged system_reset', ok: true }] }));
    expect(mutationOutcome(exited)).toBe('acknowledged');
    const confirmed = mutationFromHost(raw({ verb: 'reset', acknowledged: true, checks: [{ check: 'QEMU acknowledged system_reset', ok: true }, { check: 'QMP answers after the reset', ok: true }] }));
    expect(mutationOutcome(confirmed)).toBe('done');
    expect(verifiedLine(confirmed)).toBe('verified: QEMU acknowledged system_reset, QMP answers after the reset');
    // A host that reports only acknowledged + qmp_after_reset.
    const legacy = mutationFromHost(raw({ verb: 'reset', acknowledged: true, qmp_after_reset: 'answers' }));
    expect(mutationOutcome(legacy)).toBe('done');
    expect(verifiedLine(legacy)).toBe('reset acknowledged by QEMU; QMP answered afterwards');
    const silent = mutationFromHost(raw({ verb: 'reset', ok: false, result: 'failed', acknowledged: true, qmp_after_reset: 'silent', reason: 'QMP silent after the reset: cycle' }));
    expect(mutationOutcome(silent)).toBe('failed');
    expect(verifiedLine(silent)).toBe('reset acknowledged by QEMU; QMP went silent afterwards');
  });

  it('when the HA manager has not reached the requested state and no checks are given, then the line says so', () => {
    const result = mutationFromHost(raw({ ok: false, result: 'failed', ha: { managed: true, requested: 'stopped', observed: 'started', waited_s: 90 } }));
    expect(verifiedLine(result)).toBe('stop requested from the HA manager; VM still started after 90 s');
  });
});

describe('the postmortem says what was verified', () => {
  const state = { target: { devvm: 'devvm', vmid: 102 }, operator: 'ana', startedAt: 0, outcome: null, description: 'devvm hangs' } as unknown as SessionState;
  const at = Date.parse('2026-06-11T03:00:00Z');
  const reset = mutationFromHost(
    raw({ verb: 'reset', acknowledged: true, qmp_after_reset: 'answers', checks: [{ check: 'QEMU acknowledged system_reset', ok: true }, { check: 'QMP answers after the reset', ok: true }] }),
  );
  const timeline = (entries: TranscriptEntry[]) => postmortem('s-1', state, entries, null).split('\n').filter((l) => l.includes('**reset**'));

  it('when a reset was acknowledged and the devvm then answered, then it reads as confirmed by the devvm', () => {
    const [line] = timeline([
      { type: 'verb-result', key: 'k1', at, result: reset },
      { type: 'devvm-wait', key: 'k1', at: at + 12_000, reachable: true, waitedMs: 12_300, attempts: 4 },
    ] as TranscriptEntry[]);
    expect(line).toContain('**reset** succeeded');
    expect(line).toContain('confirmed: the devvm answered SSH after 12.3 s');
  });

  it('when the devvm did not answer after the reset, or has not yet, then it never reads as succeeded', () => {
    const [silent] = timeline([
      { type: 'verb-result', key: 'k1', at, result: reset },
      { type: 'devvm-wait', key: 'k1', at: at + 180_000, reachable: false, waitedMs: 180_000, attempts: 40 },
    ] as TranscriptEntry[]);
    expect(silent).toContain('**reset** done on the host, devvm silent');
    expect(silent).toContain('NOT confirmed: the devvm did not answer SSH within 180 s');
    const [pending] = timeline([{ type: 'verb-result', key: 'k1', at, result: reset }] as TranscriptEntry[]);
    expect(pending).toContain('**reset** acknowledged by QEMU, not confirmed');
    expect(pending).not.toContain('succeeded');
  });

  it('when a stop went through the HA manager and QEMU survived, then both are in the line', () => {
    const stop = mutationFromHost(
      raw({
        ok: false,
        result: 'failed',
        ha: { managed: true, requested: 'stopped', observed: 'stopped', waited_s: 3 },
        qemu_survived: true,
        survivors: [{ pid: 4242, leader_state: 'Z (zombie)', in_scope: true, threads: [{ tid: 4252, state: 'D', wchan: 'refrigerator', comm: 'IO iothread0' }] }],
        reason: 'QEMU survived the stop',
      }),
    );
    const text = postmortem('s-1', state, [{ type: 'verb-result', key: 'k2', at, result: stop }] as TranscriptEntry[], null);
    expect(text).toContain('**stop** FAILED');
    expect(text).toContain('stop requested from the HA manager');
    expect(text).toContain('**the QEMU process 4242 survived (leader Z (zombie), in the VM scope; live threads: 4252 D in refrigerator)**');
  });
});
