/**
 * The devvm allowlist (workflows/allowlist.ts) against an independent model of it written here:
 * for each command, option pieces that keep it read-only and pieces that must make it wait for
 * approval. fast-check combines them; the model's verdict and isReadOnlyCommand's must agree.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { README_PATH, allowlistSection, readmeSection } from '../scripts/allowlist-doc.js';
import { ALLOWLIST } from '../workflows/allowlist.js';
import { classifyCommand } from '../workflows/allowlist-classifier.js';
import { approvalRule, isReadOnlyCommand } from '../workflows/policy.js';
import { DEFAULT_POLICY, type Actor, type WorkItem } from '../workflows/session-types.js';

type Piece = fc.Arbitrary<string[]>;

interface Model {
  /** Option pieces (an option with its value) that keep the command read-only, in any number and order. */
  options: Piece[];
  /** Pieces every read-only invocation carries. */
  always?: string[][];
  /** Operand lists that keep it read-only (they follow the options). */
  operands?: Piece;
  /** Pieces that each make it wait for approval. */
  risky?: Piece[];
  /** Operand lists that make it wait for approval. */
  riskyOperands?: Piece;
}

let checked = 0;
afterAll(() => console.log(`allowlist: ${checked} generated commands checked against the model`));

const just = (...words: string[]): Piece => fc.constant(words);
const flags = (...words: string[]): Piece[] => words.map((word) => just(word));
const number = fc.integer({ min: 0, max: 99_999 }).map(String);
const upTo60 = fc.integer({ min: 1, max: 60 }).map(String);
const over60 = fc.integer({ min: 61, max: 100_000 }).map(String);
const name = fc.stringMatching(/^[a-z][a-z0-9_-]{0,11}$/).filter((word) => !/shadow|sudoers|secret|credstore|private|wireguard|kpage/.test(word));
const unit = fc.oneof(name, name.map((word) => `${word}.service`), fc.constantFrom('ssh', 'ssh.service', 'getty@tty1.service', 'systemd-journald'));
const time = fc.constantFrom('today', 'yesterday', '-1h', '-10min', '2026-06-11', '10:00', '@1781136000');
const pattern = fc.constantFrom('error', 'oom', 'I/O', 'blocked', 'task.+blocked', 'Out-of-memory', 'sda1', 'EXT4-fs');

/** Paths a reader may read: under /proc, /sys, /var/log, /run/log or /etc, and not a secret or a way out. */
const readable = fc.oneof(
  fc.constantFrom('/proc/loadavg', '/proc/meminfo', '/proc/pressure/io', '/proc/pressure/memory', '/proc/mounts', '/proc/self/status', '/proc/thread-self/stat'),
  fc.constantFrom('/var/log/syslog', '/var/log/kern.log', '/var/log/app.log', '/var/log/wtmp', '/run/log/journal', '/etc/hosts', '/etc/fstab', '/etc/passwd', '/etc/os-release', '/etc/ssl/certs'),
  fc.tuple(number, fc.constantFrom('stack', 'status', 'stat', 'wchan', 'io', 'cmdline', 'limits', 'mountinfo', 'fdinfo/3')).map(([pid, file]) => `/proc/${pid}/${file}`),
  fc.tuple(number, number).map(([pid, tid]) => `/proc/${pid}/task/${tid}/stack`),
  name.map((file) => `/var/log/${file}`),
  name.map((file) => `/etc/${file}.conf`),
  name.map((device) => `/sys/block/${device}/stat`),
);

/** Paths no reader may read: devices, destructive or secret files, links out of /proc, the rest of the disk. */
const unreadable = fc.oneof(
  fc.constantFrom('/dev/sda', '/dev/mem', '/dev/kmsg', '/dev/tcp/1.2.3.4/80', '/proc/kmsg', '/proc/kcore', '/proc/vmcore', '/proc/kpageflags'),
  fc
    .tuple(
      fc.oneof(number, fc.constantFrom('self', 'thread-self')),
      fc.option(number, { nil: undefined }),
      fc.constantFrom('root', 'cwd', 'exe', 'fd', 'map_files', 'mem', 'pagemap', 'environ'),
      fc.constantFrom('', '/etc/shadow', '/0', '/dev/sda'),
    )
    .map(([process, task, leak, below]) => `/proc/${process}${task === undefined ? '' : `/task/${task}`}/${leak}${below}`),
  fc.constantFrom('/sys/kernel/debug/tracing/trace_pipe', '/sys/kernel/tracing/trace_pipe', '/sys/kernel/security/ima/ascii_runtime_measurements'),
  fc.constantFrom('/etc/shadow', '/etc/shadow-', '/etc/gshadow', '/etc/sudoers', '/etc/sudoers.d/admins', '/etc/security/opasswd', '/etc/ssh/ssh_host_rsa_key', '/etc/ssh/ssh_host_ed25519_key'),
  fc.constantFrom('/etc/ssl/private/site.pem', '/etc/letsencrypt/live/x/privkey.pem', '/etc/app/tls.key', '/etc/krb5.keytab', '/etc/ipsec.secrets', '/etc/wireguard/wg0.conf', '/etc/credstore/db'),
  name.map((user) => `/home/${user}/.ssh/id_rsa`),
  name.map((file) => `/root/${file}`),
  name.map((file) => `/tmp/${file}`),
  fc.constantFrom('/', '/var', '/var/lib/app/db', '/run/user/0/bus', '/boot/vmlinuz'),
  name,
  name.map((file) => `var/log/${file}`),
  fc.constantFrom('/var/log/../../etc/shadow', '/var/log/./syslog', '/proc/self/../1/root', '/proc//kmsg', '//dev/sda', '/proc/1//environ', '-'),
);
const anyPath = fc.oneof(readable, unreadable.filter((path) => path !== '-'));
const files = fc.array(readable, { minLength: 1, maxLength: 3 });
const unreadableFiles = fc.tuple(fc.array(readable, { maxLength: 2 }), unreadable).map(([good, bad]) => [...good, bad]);
const intervalCount = fc.option(fc.tuple(upTo60, upTo60), { nil: undefined }).map((pair) => pair ?? []);
const unboundedIntervals = fc.oneof(
  upTo60.map((interval) => [interval]),
  fc.tuple(upTo60, over60),
  fc.tuple(over60, upTo60),
  upTo60.map((count) => ['0', count]),
  fc.tuple(upTo60, upTo60, upTo60),
);
const readers = (extra: Piece[]): Model => ({ options: extra, operands: files, riskyOperands: fc.oneof(unreadableFiles, just()) });

const MODELS: Record<string, Model & { command?: string }> = {
  uptime: { options: flags('-p', '-s', '--pretty', '--since') },
  uname: { options: flags('-a', '-s', '-n', '-r', '-v', '-m', '-o', '--all', '--kernel-release') },
  id: { options: flags('-u', '-g', '-G', '-n', '-un', '-Gn', '-r'), operands: fc.array(name, { maxLength: 2 }) },
  whoami: { options: [] },
  nproc: { options: [just('--all'), number.map((n) => ['--ignore', n]), number.map((n) => [`--ignore=${n}`])] },
  who: { options: flags('-a', '-b', '-H', '-q', '-r', '-u', '--ips', '-bH'), operands: fc.array(readable, { maxLength: 1 }), riskyOperands: unreadable.map((path) => [path]) },
  w: { options: flags('-h', '-s', '-f', '-i', '-hs'), operands: fc.array(name, { maxLength: 1 }) },
  last: {
    options: [...flags('-x', '-F', '-w', '-i', '-xF'), number.map((n) => ['-n', n]), number.map((n) => [`-n${n}`]), number.map((n) => ['--limit', n]), readable.map((path) => ['-f', path]), time.map((t) => ['-s', t])],
    operands: fc.array(name, { maxLength: 2 }),
    risky: [unreadable.map((path) => ['-f', path]), unreadable.map((path) => [`--file=${path}`])],
  },
  dmesg: {
    options: [
      ...flags('-T', '-k', '-x', '-d', '-t', '-r', '-u', '-P', '-e', '-Tx', '--ctime', '--decode', '--nopager', '--color=never', '-Lnever'),
      fc.constantFrom('err', 'warn', 'err,warn', 'crit,alert,emerg').map((levels) => [`--level=${levels}`]),
      fc.constantFrom('err', 'warn').map((level) => ['-l', level]),
      just('-f', 'kern'),
      readable.map((path) => ['-F', path]),
      time.map((t) => ['--since', t]),
    ],
    risky: [
      ...flags('-C', '-c', '-D', '-E', '-w', '-W', '-H', '--clear', '--read-clear', '--follow', '--human', '--console-off', '-Tw', '-TH', '-xc'),
      just('-n', '1'),
      just('--console-level=1'),
      unreadable.map((path) => ['-F', path]),
    ],
  },
  journalctl: {
    options: [
      ...flags('-k', '-r', '-x', '-a', '-q', '-m', '-b', '-kb', '--no-pager', '--utc', '--no-hostname', '--list-boots', '--disk-usage', '--dmesg'),
      fc.constantFrom('0', '-1', '-2', '1', 'all', '0123456789abcdef0123456789abcdef').map((boot) => ['-b', boot]),
      fc.constantFrom('0', '-1').map((boot) => [`--boot=${boot}`]),
      number.map((n) => ['-n', n]),
      unit.map((u) => ['-u', u]),
      unit.map((u) => [`--unit=${u}`]),
      fc.constantFrom('err', 'warning', '3', 'warning..err').map((level) => ['-p', level]),
      time.map((t) => ['--since', t]),
      time.map((t) => [`--until=${t}`]),
      fc.constantFrom('short-iso', 'cat', 'json').map((format) => ['-o', format]),
      just('-t', 'sshd'),
      pattern.map((p) => ['-g', p]),
      readable.map((path) => ['--file', path]),
      just('-D', '/var/log/journal'),
    ],
    operands: fc.array(fc.oneof(number.map((pid) => `_PID=${pid}`), unit.map((u) => `_SYSTEMD_UNIT=${u}`), fc.constant('+')), { maxLength: 3 }),
    risky: [
      ...flags('-f', '--follow', '-kf', '--setup-keys', '--force', '--update-catalog', '--relinquish-var', '--smart-relinquish-var', '--flush', '--rotate', '--sync', '-e', '--pager-end'),
      ...flags('--vacuum-size=1G', '--vacuum-time=1d', '--vacuum-files=2', '--root=/', '--image=/dev/sda', '--machine=web'),
      just('--vacuum-time', '1d'),
      just('--cursor-file', '/tmp/cursor'),
      just('-M', 'web'),
      unreadable.map((path) => ['--file', path]),
      unreadable.map((path) => ['-D', path]),
    ],
  },
  systemctl: {
    options: [...flags('--no-pager', '-l', '--full', '-a', '--all', '--failed', '--plain', '--no-legend', '-q', '-al'), just('--state', 'failed'), just('--type=service'), number.map((n) => ['-n', n]), just('-o', 'cat'), just('-p', 'ActiveState'), just('--property=MainPID,ActiveState')],
    operands: fc.oneof(
      just(),
      fc.tuple(fc.constantFrom('status', 'is-active', 'is-failed', 'is-enabled', 'list-units', 'list-timers', 'show'), fc.array(unit, { maxLength: 2 })).map(([verb, units]) => [verb, ...units]),
    ),
    risky: [just('-H', 'root@elsewhere'), just('--host=elsewhere'), just('-M', 'web'), just('--machine=web')],
    riskyOperands: fc
      .tuple(fc.constantFrom('restart', 'stop', 'start', 'kill', 'reboot', 'poweroff', 'isolate', 'mask', 'enable', 'disable', 'daemon-reload', 'set-property', 'edit', 'cat'), unit)
      .map(([verb, u]) => [verb, u]),
  },
  ps: {
    options: [
      ...flags('-e', '-A', '-f', '-F', '-l', '-L', '-T', '-H', '-w', 'aux', 'axjf', 'auxww', 'ax', '-ef', '--forest', '--no-headers'),
      fc.constantFrom('pid,stat,wchan:32,comm', 'pid,tid,stat,wchan,comm', 'pid=,comm=', 'pid,%cpu,%mem,rss,args').map((format) => ['-eo', format]),
      fc.constantFrom('pid,comm', 'pid,ppid,stat').map((format) => ['-o', format]),
      just('-eLo', 'pid,tid,stat,wchan,comm'),
      fc.constantFrom('-%cpu', '-rss', 'pid').map((key) => [`--sort=${key}`]),
      number.map((pid) => ['-p', pid]),
      number.map((pid) => ['p', pid]),
      just('-u', 'root'),
    ],
    operands: fc.array(number, { maxLength: 2 }),
    risky: flags('e', 'auxe', 'axe', 'eww'),
  },
  top: {
    always: [['-b'], ['-n', '1']],
    options: [...flags('-H', '-c', '-i', '-s', '-1'), fc.constantFrom('0.5', '1', '3', '60').map((delay) => ['-d', delay]), just('-o', '%CPU'), number.map((pid) => ['-p', pid])],
    risky: [over60.map((n) => ['-n', n]), fc.constantFrom('0', '100', '0.05').map((delay) => ['-d', delay])],
  },
  free: {
    options: [...flags('-m', '-h', '-g', '-w', '-t', '-b', '--si', '--mega', '-mw'), upTo60.map((n) => ['-c', n]), fc.tuple(upTo60, upTo60).map(([seconds, n]) => ['-s', seconds, '-c', n])],
    risky: [over60.map((n) => ['-c', n]), just('-c', '0')],
  },
  vmstat: {
    options: [...flags('-a', '-d', '-D', '-s', '-w', '-t', '-n', '-wt'), just('-S', 'M'), just('-p', 'sda1')],
    operands: intervalCount,
    riskyOperands: unboundedIntervals,
  },
  iostat: {
    options: [...flags('-x', '-z', '-y', '-d', '-c', '-k', '-m', '-N', '-t', '-h', '-xz', '--human'), fc.constantFrom('sda', 'ALL', 'sda,sdb').map((devices) => ['-p', devices]), just('-j', 'UUID')],
    operands: fc.tuple(fc.array(fc.constantFrom('sda', 'vda', 'ALL'), { maxLength: 2 }), intervalCount).map(([devices, numbers]) => [...devices, ...numbers]),
    riskyOperands: unboundedIntervals,
  },
  mpstat: {
    options: [...flags('-A', '-u', '-n', '-T'), fc.constantFrom('ALL', '0', '0,1').map((cpus) => ['-P', cpus]), just('-I', 'SUM'), just('-N', 'ALL')],
    operands: intervalCount,
    riskyOperands: unboundedIntervals,
  },
  pidstat: {
    options: [...flags('-d', '-r', '-u', '-w', '-t', '-h', '-l', '-I', '-R', '-s', '-v', '-dl', '--human', '--dec=1'), fc.constantFrom('ALL', 'SELF', '1,2').map((pids) => ['-p', pids]), just('-T', 'CHILD'), just('-C', 'sshd')],
    operands: intervalCount,
    risky: [just('-e', '/usr/bin/sudo', '-n', '/sbin/reboot'), just('-de', 'sh'), just('-e', 'true')],
    riskyOperands: unboundedIntervals,
  },
  df: { options: [...flags('-h', '-i', '-T', '-l', '-P', '-hT', '--total', '--output'), just('-t', 'ext4'), just('-x', 'tmpfs'), just('--output=source,target,pcent')], operands: fc.array(anyPath, { maxLength: 2 }), risky: flags('--sync') },
  du: {
    options: [...flags('-s', '-h', '-x', '-c', '-a', '-sh', '-shx', '--si'), number.map((n) => ['-d', n]), number.map((n) => [`--max-depth=${n}`])],
    operands: fc.array(anyPath, { maxLength: 2 }),
    risky: [just('--files0-from', '/tmp/names'), just('--files0-from=-')],
  },
  ls: { options: [...flags('-l', '-a', '-la', '-lah', '-R', '-t', '-1', '-d', '-ltr', '--full-time'), just('--sort', 'size'), just('--color=never')], operands: fc.array(anyPath, { maxLength: 2 }) },
  stat: { options: [...flags('-L', '-f', '-t'), just('-c', '%s'), just('--format=%n:%s')], operands: fc.array(anyPath, { minLength: 1, maxLength: 2 }), riskyOperands: just() },
  lsblk: { options: [...flags('-f', '-a', '-b', '-d', '-J', '-l', '-n', '-p', '-t', '-fp'), just('-o', 'NAME,SIZE,MOUNTPOINT')], operands: fc.array(anyPath, { maxLength: 2 }) },
  findmnt: {
    options: [...flags('-l', '-n', '-J', '-D', '-R', '--real'), just('-t', 'ext4'), just('-o', 'TARGET,SOURCE'), just('-T', '/var'), readable.map((path) => ['-F', path])],
    operands: fc.array(anyPath, { maxLength: 2 }),
    risky: [...flags('-p', '--poll', '--poll=mount'), unreadable.map((path) => ['-F', path])],
    riskyOperands: fc.array(anyPath, { minLength: 3, maxLength: 4 }),
  },
  ss: {
    options: [...flags('-t', '-n', '-p', '-a', '-l', '-s', '-u', '-x', '-4', '-6', '-e', '-m', '-i', '-o', '-H', '-tnp', '-tulpn'), just('-f', 'inet'), just('-A', 'tcp')],
    operands: fc.constantFrom([], ['state', 'established'], ['dport', '=', ':22'], ['sport', 'eq', ':ssh'], ['dst', '10.0.0.0/8']),
    risky: [...flags('-K', '--kill', '-tK', '-E', '--events', '--diag=/tmp/x', '--net=ns'), just('-D', '/tmp/x'), just('-N', 'ns'), just('-F', '/etc/filter')],
  },
  lsof: {
    options: [...flags('-n', '-P', '-l', '-b', '-w', '-t', '-nP', '+L1', '+L', '-i', '-iTCP', '-i:22'), just('-i', ':22'), number.map((pid) => ['-p', pid]), just('-u', 'root'), just('-c', 'sshd'), just('+D', '/var/log')],
    operands: fc.array(anyPath, { maxLength: 2 }),
    risky: [...flags('-r', '+r', '-nPr', '+m'), just('-r', '1'), just('-D', 'b')],
  },
  cat: readers(flags('-n', '-A', '-v', '-E', '-s', '-b', '-vET')),
  head: readers([...flags('-q', '-v'), number.map((n) => ['-n', n]), number.map((n) => [`-n${n}`]), number.map((n) => [`--lines=${n}`]), number.map((n) => ['-c', `${n}K`])]),
  tail: {
    ...readers([...flags('-q', '-v'), number.map((n) => ['-n', n]), number.map((n) => ['-n', `+${n}`]), number.map((n) => [`-n${n}`])]),
    risky: [...flags('-f', '-F', '--follow', '--follow=name', '-qf'), just('-f', '-n', '5')],
  },
  grep: {
    options: [...flags('-i', '-v', '-n', '-c', '-l', '-H', '-h', '-w', '-E', '-F', '-o', '-s', '-in', '--color=never'), number.map((n) => ['-m', n]), number.map((n) => ['-A', n]), number.map((n) => ['-C', n])],
    operands: fc.tuple(pattern, files).map(([p, paths]) => [p, ...paths]),
    risky: [...flags('-r', '-R', '--recursive', '-rn', '--directories=recurse', '--devices=read'), just('-d', 'recurse'), just('-D', 'read'), unreadable.map((path) => ['-f', path])],
    riskyOperands: fc.oneof(fc.tuple(pattern, unreadableFiles).map(([p, paths]) => [p, ...paths]), pattern.map((p) => [p])),
  },
  'grep -e': { command: 'grep', always: [['-e', 'error']], options: flags('-i', '-n', '-c'), operands: files, riskyOperands: fc.oneof(unreadableFiles, just()) },
  wc: { ...readers(flags('-l', '-c', '-w', '-m', '-L', '-lw')), risky: [just('--files0-from=/tmp/names'), just('--files0-from', '-')] },
};

/** A command line from `model` and whether the model says it is read-only. */
function invocations(command: string, model: Model): fc.Arbitrary<{ line: string; readOnly: boolean }> {
  const everyRisky = [...(model.risky ?? []), just('--no-such-option')];
  const operands = fc.oneof(
    (model.operands ?? just()).map((words) => ({ words, risky: false })),
    (model.riskyOperands ?? (model.operands ? fc.constant(null) : just('unexpected'))).map((words) => (words ? { words, risky: true } : { words: [], risky: false })),
  );
  return fc
    .record({
      pieces: model.options.length > 0 ? fc.array(fc.oneof(...model.options), { maxLength: 5 }) : fc.constant([]),
      risky: fc.option(fc.oneof(...everyRisky), { nil: undefined, freq: 3 }),
      at: fc.nat(),
      operands,
    })
    .map(({ pieces, risky, at, operands: { words, risky: riskyOperands } }) => {
      const all = [...(model.always ?? []), ...pieces];
      if (risky) all.splice(at % (all.length + 1), 0, risky);
      return { line: [command, ...all.flat(), ...words].join(' '), readOnly: risky === undefined && !riskyOperands };
    });
}

const RUNS_PER_COMMAND = 400;

describe('the devvm allowlist against its model', () => {
  it('when the model covers the allowlist, then it names every command on it and no other', () => {
    const modelled = new Set(Object.entries(MODELS).map(([label, model]) => model.command ?? label));
    expect([...modelled].sort()).toEqual(Object.keys(ALLOWLIST).sort());
  });

  it.each(Object.entries(MODELS))('when %s is combined from safe and risky pieces, then it is read-only exactly when the model says so', (label, model) => {
    fc.assert(
      fc.property(invocations(model.command ?? label, model), ({ line, readOnly }) => {
        checked++;
        expect({ line, readOnly: isReadOnlyCommand(line) }).toEqual({ line, readOnly });
      }),
      { numRuns: RUNS_PER_COMMAND },
    );
  });

  it('when shell syntax is put anywhere into a read-only command, then it waits', () => {
    const safe = fc.oneof(...Object.entries(MODELS).map(([label, model]) => invocations(model.command ?? label, model))).filter((invocation) => invocation.readOnly);
    const syntax = fc.constantFrom(...';&|<>`$(){}\\*?[]!~\'"#\n\r'.split(''), '$(reboot)', '; reboot', ' && reboot', ' | sh', ' > /etc/passwd', '\u00a0', '\t\u0000');
    fc.assert(
      fc.property(safe, syntax, fc.nat(), ({ line }, inserted, at) => {
        checked++;
        const position = at % (line.length + 1);
        expect(isReadOnlyCommand(line.slice(0, position) + inserted + line.slice(position))).toBe(false);
      }),
      { numRuns: 2_000 },
    );
  });

  it('when the first word is not an allowlisted command, then it waits whatever follows', () => {
    const names = new Set(Object.keys(MODELS).map((label) => label.split(' ')[0]));
    const first = fc.oneof(fc.constantFrom('sudo', 'reboot', 'rm', 'sh', 'bash', 'env', 'xargs', 'nice', 'timeout', 'watch', 'less', 'tee', 'dd', 'echo', '/usr/bin/cat', 'FOO=1', 'constructor', '__proto__', 'toString'), name);
    fc.assert(
      fc.property(first.filter((word) => !names.has(word)), fc.array(fc.oneof(name, readable), { maxLength: 4 }), (command, args) => {
        checked++;
        expect(isReadOnlyCommand([command, ...args].join(' '))).toBe(false);
      }),
      { numRuns: 1_000 },
    );
  });

  it('when any string is classified, then the answer comes without throwing and is the same twice', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (command) => {
        checked++;
        expect(classifyCommand(command)).toEqual(classifyCommand(command));
      }),
      { numRuns: 1_000 },
    );
  });
});

const agentAsks = (command: string): WorkItem => ({ kind: 'command', key: 'k', command, timeoutSeconds: 10, requestedBy: { kind: 'agent' } as Actor, approvedBy: [] });

describe('the everyday diagnostics and the known escapes', () => {
  it.each([
    'uptime', 'dmesg', 'dmesg -T', 'dmesg -T --level=err,warn', 'journalctl -b', 'journalctl -b -1 -n 200 --no-pager', 'journalctl -k -b -p err',
    'journalctl -u ssh.service --since today --no-pager', 'journalctl -k -n 200 --no-pager', 'ps -eo pid,stat,wchan:32,comm', 'ps aux', 'ps -eLo pid,tid,stat,wchan,comm',
    'cat /proc/pressure/io', 'cat /proc/loadavg', 'cat /proc/123/stack', 'cat /proc/meminfo', 'cat /var/log/app.log', 'systemctl --failed', 'systemctl status ssh', 'systemctl status',
    'df -h', 'df -i', 'free -m', 'vmstat 1 5', 'iostat -x 1 3', 'lsblk', 'lsblk -f', 'ss -tnp', 'ss -s', 'uname -a', 'uname -s', 'top -b -n 1', 'head -n 50 /var/log/syslog',
    'tail -n 100 /var/log/kern.log', 'grep -i error /var/log/syslog', 'who', 'w', 'last -n 10', 'id', 'whoami', 'nproc', 'findmnt', 'lsof -nP +L1', 'mpstat -P ALL 1 2',
    'pidstat -d 1 2', 'stat /var/lib/x', 'du -sh /var/log', 'ls -la /tmp', 'ls', 'wc -l /var/log/syslog', 'ps aux --sort -rss', 'journalctl _PID=123 + _SYSTEMD_UNIT=ssh.service',
  ])('when the agent runs `%s`, then it runs without approval', (command) => {
    expect(classifyCommand(command)).toEqual({ readOnly: true });
    expect(approvalRule(agentAsks(command), DEFAULT_POLICY)).toEqual({ required: 0, why: 'read-only command on the allowlist' });
  });

  it.each([
    ['pidstat -e /usr/bin/sudo -n /sbin/reboot', 'pidstat: option -e runs a program'],
    ['ss -K dst 10.0.0.1', 'ss: option -K kills the sockets it lists'],
    ['ss -tnK', 'ss: option -K kills the sockets it lists'],
    ['journalctl --setup-keys', 'journalctl: option --setup-keys creates new sealing keys'],
    ['journalctl --update-catalog', 'journalctl: option --update-catalog rewrites the message catalog'],
    ['journalctl --relinquish-var', 'journalctl: option --relinquish-var moves logging off the disk'],
    ['journalctl --vacuum-size=100M', 'journalctl: option --vacuum-size deletes journal files'],
    ['journalctl --flush', 'journalctl: option --flush administers the journal files'],
    ['journalctl -f', 'journalctl: option -f follows new output until the timeout'],
    ['dmesg -H', 'dmesg: option -H starts a pager (a program)'],
    ['dmesg -c', 'dmesg: option -c clears the kernel log after reading it'],
    ['cat /dev/sda', 'cat: /dev/sda is a device'],
    ['head -c 512 /dev/nvme0n1', 'head: /dev/nvme0n1 is a device'],
    ['cat /proc/kmsg', 'cat: /proc/kmsg is the kernel log: reading it consumes the messages'],
    ['cat /proc/kcore', 'cat: /proc/kcore is an image of physical memory'],
    ['cat /proc/self/root/etc/shadow', 'cat: /proc/self/root/etc/shadow is a link out of /proc'],
    ['cat /proc/1/task/1/fd/0', 'cat: /proc/1/task/1/fd/0 is a link out of /proc'],
    ['cat /proc/1/environ', "cat: /proc/1/environ is a process's environment, where secrets live"],
    ['cat /proc/1/mem', "cat: /proc/1/mem is a process's memory"],
    ['cat /etc/shadow', 'cat: /etc/shadow holds password hashes'],
    ['grep root /etc/sudoers', 'grep: /etc/sudoers holds the sudo rules'],
    ['cat /etc/ssh/ssh_host_ed25519_key', 'cat: /etc/ssh/ssh_host_ed25519_key is a private key'],
    ['cat /home/dev/.ssh/id_rsa', 'cat: /home/dev/.ssh/id_rsa is outside /proc, /sys, /var/log, /run/log, /etc'],
    ['cat /var/log/../../etc/shadow', 'cat: /var/log/../../etc/shadow has a . or .. segment'],
    ['cat', 'cat: needs a readable path'],
    ['tail -f /var/log/syslog', 'tail: option -f follows new output until the timeout'],
    ['tail -F /var/log/syslog', 'tail: option -F follows new output until the timeout'],
    ['top', 'top: without -b top is interactive'],
    ['top -b', 'top: without -n top repeats until the timeout'],
    ['top -n 1', 'top: without -b top is interactive'],
    ['free -s 1', 'free: -s without -c repeats until the timeout'],
    ['vmstat 1', 'vmstat: 1 is an interval without a count'],
    ['iostat -x 1', 'iostat: 1 is an interval without a count'],
    ['mpstat 1 1000', 'mpstat: "1000" is not a number of repeats from 1 to 60'],
    ['findmnt -p', 'findmnt: option -p watches the mount table until the timeout'],
    ['ss -E', 'ss: option -E follows new output until the timeout'],
    ['lsof -r 1', 'lsof: option -r repeats until the timeout'],
    ['grep -D read x /var/log/syslog', 'grep: option -D decides whether devices and FIFOs are opened'],
    ['grep -r password /etc', 'grep: option -r reads every file below a directory'],
    ['wc --files0-from=/tmp/list', 'wc: option --files0-from reads the names to read from a file'],
    ['ps auxe', "ps: option e shows each process's environment"],
    ['systemctl restart ssh', 'systemctl: restart is not a read-only verb'],
    ['systemctl -H root@other status', 'systemctl: option -H runs the query on another machine'],
    ['df --sync', 'df: option --sync syncs every file system first'],
    ['ps; reboot', '";" is shell syntax'],
    ['sudo reboot', 'sudo is not on the allowlist'],
    ['ls --no-such-option', 'ls: option --no-such-option is not on the allowlist'],
    // A value never swallows an option word, whatever the program's own parser would do with it.
    ['lsof -p -r', 'lsof: option -p: "-r" is not a comma-separated list of names'],
  ])('when the agent runs `%s`, then it waits for approval and the rule says why (%s)', (command, why) => {
    const verdict = classifyCommand(command);
    expect(verdict.readOnly).toBe(false);
    expect(verdict.readOnly ? '' : verdict.why).toContain(why);
    const rule = approvalRule(agentAsks(command), DEFAULT_POLICY);
    expect(rule.required).toBe(1);
    expect(rule.why).toContain(`the agent wants to run a command outside the read-only allowlist (${why}`);
  });

  it('when a session recorded before the patch replays, then the first-word rule decides as it did then', () => {
    // Escapes the old rule let through: replay must keep running them at once, or history diverges.
    for (const command of ['pidstat -e /usr/bin/sudo -n /sbin/reboot', 'cat /proc/kmsg', 'top', 'ss -K']) {
      expect(approvalRule(agentAsks(command), DEFAULT_POLICY, { argumentAllowlist: false })).toEqual({ required: 0, why: 'read-only command on the allowlist' });
      expect(approvalRule(agentAsks(command), DEFAULT_POLICY).required).toBe(1);
    }
    expect(approvalRule(agentAsks('sudo reboot'), DEFAULT_POLICY, { argumentAllowlist: false })).toEqual({ required: 1, why: 'the agent wants to run a command outside the read-only allowlist' });
  });

  it('when an operator types the command or the policy is autonomous, then the allowlist does not apply', () => {
    const typed = { ...agentAsks('cat /proc/kmsg'), requestedBy: { kind: 'operator', name: 'alice' } as Actor };
    expect(approvalRule(typed, DEFAULT_POLICY).required).toBe(0);
    expect(approvalRule(agentAsks('cat /proc/kmsg'), { ...DEFAULT_POLICY, devvmCommands: 'autonomous' }).required).toBe(0);
  });
});

describe('the allowlist data and its README section', () => {
  it('when an option is left out on purpose, then no command also allows it', () => {
    for (const [command, spec] of Object.entries(ALLOWLIST)) {
      const allowed = new Set(spec.options.flatMap((option) => option.split(' ').filter((word) => !/^[<[]/.test(word))));
      const both = Object.keys(spec.excluded ?? {}).flatMap((spellings) => spellings.split(' ')).filter((spelling) => allowed.has(spelling));
      expect(both, command).toEqual([]);
    }
  });

  it('when the README is read, then its allowlist section is what scripts/allowlist-doc.ts generates (run it to update)', () => {
    expect(readmeSection(readFileSync(README_PATH, 'utf8'))).toBe(allowlistSection());
  });
});
