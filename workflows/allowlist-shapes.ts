/**
 * What the words of an allowlisted devvm command may look like: the shapes of option values and
 * operands, and which files a reading command may read. Data plus small pure checks; the
 * commands themselves are in allowlist.ts, the parser in allowlist-classifier.ts.
 */

export interface Shape {
  /** How the README and refusals describe a fitting word. */
  says: string;
  /** What is wrong with `word`, or undefined when it fits. */
  problem(word: string): string | undefined;
}

const pattern = (regex: RegExp, says: string): Shape => ({
  says,
  problem: (word) => (regex.test(word) ? undefined : `"${word}" is not ${says}`),
});

/** A number from 1 (0.1 with `tenths`) to `max`: repeats and intervals, so a command ends on its own. */
const upTo = (max: number, says: string, tenths = false): Shape => ({
  says,
  problem: (word) => {
    const fits = (tenths ? /^\d{1,2}(\.\d)?$/ : /^\d{1,2}$/).test(word) && Number(word) > 0 && Number(word) <= max;
    return fits ? undefined : `"${word}" is not ${says}`;
  },
});

/**
 * Where reading commands may read. The check is on the path as written: only the roots' own
 * symlinks (such as /proc/<pid>/root) lead elsewhere, and the rules below close those.
 */
export const READ_ROOTS: Record<string, string> = {
  '/proc': 'kernel and process state',
  '/sys': 'devices, block queues, cgroups',
  '/var/log': 'logs',
  '/run/log': 'the journal kept in memory',
  '/etc': 'configuration',
};

/**
 * Paths no reading command may read, even under a root. A pattern matches the path and
 * everything below it; `*` matches within one segment, `**` any number of segments, and
 * `<process>` a process directory (`<pid>`, `self` or `thread-self`, optionally with
 * `/task/<tid>`).
 */
export const UNREADABLE_PATHS: { pattern: string; why: string }[] = [
  { pattern: '/dev', why: 'is a device: reading one can block, consume input or dump a disk' },
  { pattern: '/proc/kmsg', why: 'is the kernel log: reading it consumes the messages (use dmesg)' },
  { pattern: '/proc/kcore', why: 'is an image of physical memory' },
  { pattern: '/proc/vmcore', why: 'is an image of physical memory' },
  { pattern: '/proc/kpage*', why: 'describes physical memory page by page' },
  { pattern: '/proc/<process>/mem', why: "is a process's memory" },
  { pattern: '/proc/<process>/pagemap', why: "maps a process's memory to physical pages" },
  { pattern: '/proc/<process>/environ', why: "is a process's environment, where secrets live" },
  { pattern: '/proc/<process>/root', why: 'is a link out of /proc to any file or device' },
  { pattern: '/proc/<process>/cwd', why: 'is a link out of /proc to any file or device' },
  { pattern: '/proc/<process>/exe', why: 'is a link out of /proc to any file or device' },
  { pattern: '/proc/<process>/fd', why: 'is a link out of /proc to any file, device or pipe' },
  { pattern: '/proc/<process>/map_files', why: 'is a link out of /proc to any file or device' },
  { pattern: '/sys/kernel/debug', why: 'is debugfs: some reads consume trace data or block' },
  { pattern: '/sys/kernel/tracing', why: 'is tracefs: some reads consume trace data or block' },
  { pattern: '/sys/kernel/security', why: "is securityfs: the security modules' state" },
  { pattern: '/etc/shadow*', why: 'holds password hashes' },
  { pattern: '/etc/gshadow*', why: 'holds password hashes' },
  { pattern: '/etc/security/opasswd', why: 'holds password hashes' },
  { pattern: '/etc/sudoers*', why: 'holds the sudo rules, readable by root only' },
  { pattern: '/etc/ssh/ssh_host_*_key', why: 'is a private key' },
  { pattern: '/etc/**/private', why: 'holds private keys' },
  { pattern: '/etc/**/*.key', why: 'is a private key' },
  { pattern: '/etc/**/*.pem', why: 'may be a private key' },
  { pattern: '/etc/**/*.p12', why: 'may be a private key' },
  { pattern: '/etc/**/*.pfx', why: 'may be a private key' },
  { pattern: '/etc/**/*.keytab', why: 'holds Kerberos keys' },
  { pattern: '/etc/**/*secret*', why: 'holds secrets' },
  { pattern: '/etc/credstore*', why: 'holds service credentials' },
  { pattern: '/etc/wireguard', why: 'holds private keys' },
  { pattern: '/etc/NetworkManager/system-connections', why: 'holds network passwords' },
];

const PROCESS = /^(\d+|self|thread-self)$/;

/** Whether `pattern` (split into segments) matches `path` or a directory above it. */
function matchesFrom(pattern: string[], path: string[]): boolean {
  const [head, ...rest] = pattern;
  if (head === undefined) return true;
  if (head === '**') return path.some((_, skip) => matchesFrom(rest, path.slice(skip)));
  const [segment, ...below] = path;
  if (segment === undefined) return false;
  if (head === '<process>') {
    if (!PROCESS.test(segment)) return false;
    const inTask = below[0] === 'task' && below[1] !== undefined && /^\d+$/.test(below[1]);
    return matchesFrom(rest, below) || (inTask && matchesFrom(rest, below.slice(2)));
  }
  const glob = new RegExp(`^${head.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
  return glob.test(segment) && matchesFrom(rest, below);
}

const segmentsOf = (path: string) => path.split('/').filter((segment) => segment !== '');

/** What keeps a reading command from reading `path`, or undefined when it may. */
export function unreadable(path: string): string | undefined {
  if (!path.startsWith('/')) return `${path} is not an absolute path`;
  const segments = segmentsOf(path);
  if (segments.some((segment) => segment === '.' || segment === '..')) return `${path} has a . or .. segment`;
  const rule = UNREADABLE_PATHS.find((candidate) => matchesFrom(segmentsOf(candidate.pattern), segments));
  if (rule) return `${path} ${rule.why}`;
  const underRoot = Object.keys(READ_ROOTS).some((root) => matchesFrom(segmentsOf(root), segments));
  return underRoot ? undefined : `${path} is outside ${Object.keys(READ_ROOTS).join(', ')}`;
}

export const SHAPES = {
  number: pattern(/^\d{1,9}$/, 'a whole number'),
  count: pattern(/^([+-]?\d{1,12}[A-Za-z]{0,3}|all)$/, 'a count (50, +10, -5, 10K or all)'),
  lines: pattern(/^(\+?\d{1,9}|all)$/, 'a number of entries (200, +10 from the start, or all)'),
  repeats: upTo(60, 'a number of repeats from 1 to 60'),
  interval: upTo(60, 'an interval from 1 to 60 seconds'),
  seconds: upTo(60, 'a delay from 0.1 to 60 seconds', true),
  boot: pattern(/^([+-]?\d{1,6}|[0-9a-fA-F]{32}([+-]\d{1,6})?|all)$/, 'a boot (0, -1 or a boot id)'),
  time: pattern(/^[A-Za-z0-9:.+@-]{1,64}$/, 'a time (today, -1h, 2026-06-11, 10:00 or @epoch)'),
  // Names, lists, units and paths never start with a dash, so no value can swallow an option.
  name: pattern(/^[A-Za-z0-9_.:@%+][A-Za-z0-9_.:@%+-]{0,255}$/, 'a name or word'),
  list: pattern(/^[A-Za-z0-9_.:@%+=][A-Za-z0-9_.:@%+=-]{0,255}(,[A-Za-z0-9_.:@%+=-]{1,256})*$/, 'a comma-separated list of names'),
  sort: pattern(/^[+-]?[A-Za-z0-9_.:%]{1,64}(,[+-]?[A-Za-z0-9_.:%]{1,64})*$/, 'sort keys (-%cpu,+pid)'),
  unit: pattern(/^[A-Za-z0-9:_.@][A-Za-z0-9:_.@-]{0,255}$/, 'a unit name (ssh, ssh.service, getty@tty1.service)'),
  // iostat -p takes the next word only when it is not a number (that is the interval) or an option.
  devices: pattern(/^(?!\d+$)[A-Za-z0-9_.:][A-Za-z0-9_.:,-]{0,255}$/, 'a device list (sda,sdb or ALL)'),
  address: pattern(/^[46]?([A-Za-z]{3,4})?(@[A-Za-z0-9.:-]{1,256})?(:[A-Za-z0-9,-]{1,64})?$/, 'an lsof address (TCP, :22, 4TCP@10.0.0.1:22)'),
  pattern: pattern(/^\S{1,512}$/, 'a search pattern'),
  match: pattern(/^([A-Z0-9_]{1,64}=\S*|\+)$/, 'a journal match (_PID=123, _SYSTEMD_UNIT=ssh.service or +)'),
  filter: pattern(/^[A-Za-z0-9_.:%/=-]{1,256}$/, 'a word of an ss filter (state established, dport = :22)'),
  path: pattern(/^[^\s-]\S{0,4095}$/, 'any path: the command reads metadata only'),
  readable: { says: `a readable path (under ${Object.keys(READ_ROOTS).join(', ')} and not unreadable)`, problem: unreadable },
} satisfies Record<string, Shape>;

export type ShapeName = keyof typeof SHAPES;
