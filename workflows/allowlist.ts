/**
 * The devvm commands the agent may run without an operator's approval, as data: each command
 * with the options and operands it may take, and the options left out on purpose. Anything not
 * written here waits for approval. allowlist-classifier.ts reads a command against this;
 * scripts/allowlist-doc.ts turns it into the README's table.
 */
import type { ShapeName } from './allowlist-shapes.js';

export interface CommandSpec {
  /** Why the command is on the list. */
  why: string;
  /**
   * The options it may take, written as in a man page: `-n --lines <count>` is an option with
   * two spellings taking a value of shape `count` (attached, `-n50` / `--lines=50`, or as the
   * next word); `-b --boot [boot]` takes an optional value, the next word only when it fits;
   * `--color [=name]` an optional value that must be attached. Without a value: a flag.
   */
  options: string[];
  /** Options left out on purpose, by spelling, with the reason a refusal names. */
  excluded?: Record<string, string>;
  operands: Operands;
  /** An option that must be present (when `when` is), or the command would not end on its own. */
  requires?: { when?: string; needs: string; why: string }[];
  /** ps: a word without a dash is a bundle of BSD options (`ps aux`). */
  bsdOptions?: true;
  /** lsof: options may also start with + (`+L1`). */
  plusOptions?: true;
}

export type Operands =
  | { kind: 'none' }
  /** Each operand has `shape`; `min` says how many must be given (a reader without files would wait on stdin). */
  | { kind: 'each'; shape: ShapeName; min?: number; max?: number }
  /** grep: a pattern, then files; only files when one of `patternOptions` gave the pattern. */
  | { kind: 'pattern-then-files'; patternOptions: string[] }
  /** `[interval count]` after optional names: both or neither, so the command ends on its own. */
  | { kind: 'interval-count'; leading?: ShapeName }
  /** systemctl: an optional first operand names the verb (none: list-units); its operands follow. */
  | { kind: 'verb'; verbs: Record<string, { why: string; operands: ShapeName }> };

const STATISTICS = 'bounded statistics: an interval needs a count, both at most 60';
const FOLLOWS = 'follows new output until the timeout';

export const ALLOWLIST: Record<string, CommandSpec> = {
  uptime: { why: 'load averages and how long since the last boot', options: ['-p --pretty', '-s --since'], operands: { kind: 'none' } },
  uname: {
    why: 'kernel version and machine',
    options: ['-a --all', '-s --kernel-name', '-n --nodename', '-r --kernel-release', '-v --kernel-version', '-m --machine', '-p --processor', '-i --hardware-platform', '-o --operating-system'],
    operands: { kind: 'none' },
  },
  id: { why: 'who the session runs as', options: ['-a', '-Z --context', '-g --group', '-G --groups', '-n --name', '-r --real', '-u --user', '-z --zero'], operands: { kind: 'each', shape: 'name' } },
  whoami: { why: 'who the session runs as', options: [], operands: { kind: 'none' } },
  nproc: { why: 'CPUs available', options: ['--all', '--ignore <number>'], operands: { kind: 'none' } },
  who: {
    why: 'who is logged in, and the last boot',
    options: ['-a --all', '-b --boot', '-d --dead', '-H --heading', '--ips', '-l --login', '--lookup', '-m', '-p --process', '-q --count', '-r --runlevel', '-s --short', '-t --time', '-T -w --mesg --message --writable', '-u --users'],
    operands: { kind: 'each', shape: 'readable', max: 1 },
  },
  w: { why: 'who is logged in and what they run', options: ['-h --no-header', '-u --no-current', '-s --short', '-f --from', '-o --old-style', '-i --ip-addr'], operands: { kind: 'each', shape: 'name', max: 1 } },
  last: {
    why: 'recent logins, reboots and shutdowns',
    options: ['-a --hostlast', '-d --dns', '-f --file <readable>', '-F --fulltimes', '-i --ip', '-n --limit <number>', '-R --nohostname', '-s --since <time>', '-t --until <time>', '-p --present <time>', '-w --fullnames', '-x --system', '--time-format <name>'],
    operands: { kind: 'each', shape: 'name' },
  },
  dmesg: {
    why: 'the kernel log: hung tasks, I/O errors, OOM kills',
    options: [
      '-F --file <readable>', '-f --facility <list>', '-J --json', '-k --kernel', '-L --color [=name]', '-l --level <list>', '-P --nopager', '-p --force-prefix', '-r --raw', '--noescape',
      '-S --syslog', '-s --buffer-size <number>', '-u --userspace', '-x --decode', '-d --show-delta', '-e --reltime', '-T --ctime', '-t --notime', '--time-format <name>', '--since <time>', '--until <time>',
    ],
    excluded: {
      '-C --clear': 'clears the kernel log',
      '-c --read-clear': 'clears the kernel log after reading it',
      '-D --console-off': 'changes which kernel messages reach the console',
      '-E --console-on': 'changes which kernel messages reach the console',
      '-n --console-level': 'changes which kernel messages reach the console',
      '-w --follow': FOLLOWS,
      '-W --follow-new': FOLLOWS,
      '-H --human': 'starts a pager (a program)',
    },
    operands: { kind: 'none' },
  },
  journalctl: {
    why: 'the systemd journal: what happened before and during the hang',
    options: [
      '-b --boot [boot]', '-k --dmesg', '-u --unit <unit>', '-t --identifier <name>', '-p --priority <name>', '--facility <list>', '-g --grep <pattern>', '--case-sensitive [=name]',
      '-S --since <time>', '-U --until <time>', '-n --lines [lines]', '-r --reverse', '-o --output <name>', '--output-fields <list>', '-x --catalog', '-a --all', '-q --quiet',
      '--no-pager', '--no-hostname', '--no-full', '--utc', '--show-cursor', '--system', '-m --merge', '--namespace <name>', '--file <readable>', '-D --directory <readable>',
      '--list-boots', '--disk-usage', '-N --fields', '-F --field <name>', '--header',
    ],
    excluded: {
      '-f --follow': FOLLOWS,
      '-e --pager-end': 'is meant for a pager (use -n)',
      '--setup-keys': 'creates new sealing keys',
      '--force': 'overwrites sealing keys',
      '--update-catalog': 'rewrites the message catalog',
      '--relinquish-var': 'moves logging off the disk',
      '--smart-relinquish-var': 'moves logging off the disk',
      '--flush': 'administers the journal files',
      '--rotate': 'administers the journal files',
      '--sync': 'administers the journal files',
      '--vacuum-size': 'deletes journal files',
      '--vacuum-files': 'deletes journal files',
      '--vacuum-time': 'deletes journal files',
      '--cursor-file': 'writes a file',
      '-M --machine': "reads a container's journal",
      '--root': 'reads journals under another root',
      '--image': 'opens a disk image or device',
    },
    operands: { kind: 'each', shape: 'match' },
  },
  systemctl: {
    why: 'which units failed, and their state',
    options: [
      '--no-pager', '-l --full', '-a --all', '--state <list>', '-t --type <list>', '-n --lines <number>', '-o --output <name>', '-p --property <list>', '-P <name>', '--value', '--plain',
      '--no-legend', '-q --quiet', '--failed', '--system', '--reverse', '--after', '--before', '--with-dependencies', '--timestamp <name>', '--no-ask-password',
    ],
    excluded: { '-H --host': 'runs the query on another machine', '-M --machine': 'runs the query in a container' },
    operands: {
      kind: 'verb',
      verbs: {
        status: { why: 'state and recent log of units or pids', operands: 'unit' },
        'is-active': { why: 'whether units run', operands: 'unit' },
        'is-failed': { why: 'whether units failed', operands: 'unit' },
        'is-enabled': { why: 'whether units start at boot', operands: 'unit' },
        'list-units': { why: 'units and their state', operands: 'unit' },
        'list-timers': { why: 'timers and when they fire', operands: 'unit' },
        show: { why: "units' properties", operands: 'unit' },
      },
    },
  },
  ps: {
    why: 'processes: state, wait channel, CPU and memory',
    bsdOptions: true,
    options: [
      '-A -e', '-a', '-d', '-N --deselect', '-C <list>', '-G --Group <list>', '-g --group <list>', '-p --pid <list>', '--ppid <list>', '-q --quick-pid <list>', '-s --sid <list>',
      '-t --tty <list>', '-u --user <list>', '-U --User <list>', '-F', '-f', '-H', '-j', '-l', '-M', '-O <list>', '-o --format <list>', '-P', '-y', '-L', '-m', '-T', '-c', '-w',
      '--forest', '--headers', '--no-headers', '--cols --columns --width <number>', '--rows --lines <number>', '--sort <sort>', '--cumulative', '--context',
      // BSD style, without a dash:
      'a', 'x', 'u', 'f', 'j', 'l', 's', 'v', 'r', 'T', 'H', 'm', 'c', 'n', 'S', 'w', 'X', 'Z', 'L', 'o <list>', 'O <list>', 'k <sort>', 'p <list>', 'q <list>', 't <list>', 'U <list>',
    ],
    excluded: { e: "shows each process's environment, where secrets live" },
    operands: { kind: 'each', shape: 'number' },
  },
  top: {
    why: 'CPU and memory per process, one batch snapshot',
    options: [
      '-b --batch-mode', '-n --iterations <repeats>', '-d --delay <seconds>', '-c --cmdline-toggle', '-H --threads-show', '-i --idle-toggle', '-S --accum-time-toggle', '-s --secure-mode',
      '-1 --single-cpu-toggle', '-E --scale-summary-mem <name>', '-e --scale-task-mem <name>', '-o --sort-override <name>', '-O --list-fields', '-p --pid <list>',
      '-U --filter-any-user <name>', '-u --filter-only-euser <name>', '-w --width [=number]',
    ],
    requires: [
      { needs: '-b', why: 'without -b top is interactive and runs until the timeout' },
      { needs: '-n', why: 'without -n top repeats until the timeout' },
    ],
    operands: { kind: 'none' },
  },
  free: {
    why: 'memory and swap',
    options: [
      '-b --bytes', '--kilo', '--mega', '--giga', '--tera', '--peta', '-k --kibi', '-m --mebi', '-g --gibi', '--tebi', '--pebi', '-h --human', '--si', '-l --lohi', '-t --total',
      '-v --committed', '-w --wide', '-s --seconds <seconds>', '-c --count <repeats>',
    ],
    requires: [{ when: '-s', needs: '-c', why: '-s without -c repeats until the timeout' }],
    operands: { kind: 'none' },
  },
  vmstat: {
    why: STATISTICS,
    options: ['-a --active', '-f --forks', '-m --slabs', '-n --one-header', '-s --stats', '-d --disk', '-D --disk-sum', '-p --partition <path>', '-S --unit <name>', '-w --wide', '-t --timestamp', '-y --no-first'],
    operands: { kind: 'interval-count' },
  },
  iostat: {
    why: STATISTICS,
    options: ['-c', '-d', '-h', '-k', '-m', '-N', '-s', '-t', '-x', '-y', '-z', '-H', '--compact', '--human', '--pretty', '-g <name>', '-j <name>', '-o <name>', '--dec [=number]', '-p [devices]'],
    operands: { kind: 'interval-count', leading: 'name' },
  },
  mpstat: {
    why: STATISTICS,
    options: ['-A', '-H', '-n', '-T', '-u', '-I <list>', '-N <list>', '-P <list>', '-o <name>', '--dec [=number]'],
    operands: { kind: 'interval-count' },
  },
  pidstat: {
    why: STATISTICS,
    options: ['-d', '-H', '-h', '-I', '-l', '-R', '-r', '-s', '-t', '-U', '-u', '-v', '-w', '-C <pattern>', '-G <pattern>', '-p <list>', '-T <name>', '-o <name>', '--dec [=number]', '--human'],
    excluded: { '-e': 'runs a program' },
    operands: { kind: 'interval-count' },
  },
  df: {
    why: 'free space and inodes per file system',
    options: [
      '-a --all', '-B --block-size <name>', '-h --human-readable', '-H --si', '-i --inodes', '-k', '-l --local', '--no-sync', '--output [=list]', '-P --portability', '--total',
      '-t --type <name>', '-T --print-type', '-x --exclude-type <name>', '-v',
    ],
    excluded: { '--sync': 'syncs every file system first, which hangs on a wedged disk' },
    operands: { kind: 'each', shape: 'path' },
  },
  du: {
    why: 'what fills a file system',
    options: [
      '-0 --null', '-a --all', '--apparent-size', '-B --block-size <name>', '-b --bytes', '-c --total', '-D -H --dereference-args', '-d --max-depth <number>', '-h --human-readable',
      '--inodes', '-k', '-L --dereference', '-l --count-links', '-m', '-P --no-dereference', '-S --separate-dirs', '--si', '-s --summarize', '-t --threshold <count>',
      '--time [=name]', '--time-style <name>', '-x --one-file-system',
    ],
    excluded: { '--files0-from': 'reads the names to measure from a file' },
    operands: { kind: 'each', shape: 'path' },
  },
  ls: {
    why: 'what a directory holds',
    options: [
      '-a --all', '-A --almost-all', '--author', '-b --escape', '--block-size <name>', '-B --ignore-backups', '-c', '-C', '--color [=name]', '-d --directory', '-f', '-F --classify [=name]',
      '--file-type', '--format <name>', '--full-time', '-g', '--group-directories-first', '-G --no-group', '-h --human-readable', '--si', '-H --dereference-command-line', '-i --inode',
      '-k --kibibytes', '-l', '-L --dereference', '-m', '-n --numeric-uid-gid', '-N --literal', '-o', '-p', '-q --hide-control-chars', '-Q --quote-name', '--quoting-style <name>',
      '-r --reverse', '-R --recursive', '-s --size', '-S', '--sort <name>', '--time <name>', '--time-style <name>', '-t', '-u', '-U', '-v', '-w --width <number>', '-x', '-X', '-Z --context', '-1',
    ],
    operands: { kind: 'each', shape: 'path' },
  },
  stat: {
    why: "a file's size, owner and times",
    options: ['-L --dereference', '-f --file-system', '--cached <name>', '-c --format <pattern>', '--printf <pattern>', '-t --terse'],
    operands: { kind: 'each', shape: 'path', min: 1 },
  },
  lsblk: {
    why: 'block devices, partitions and their file systems',
    options: [
      '-A --noempty', '-D --discard', '-E --dedup <name>', '-I --include <list>', '-J --json', '-M --merge', '-O --output-all', '-P --pairs', '-S --scsi', '-T --tree [=name]', '-a --all',
      '-b --bytes', '-d --nodeps', '-e --exclude <list>', '-f --fs', '-i --ascii', '-l --list', '-m --perms', '-n --noheadings', '-o --output <list>', '-p --paths', '-r --raw',
      '-s --inverse', '-t --topology', '-w --width <number>', '-x --sort <name>', '-y --shell', '-z --zoned',
    ],
    operands: { kind: 'each', shape: 'path' },
  },
  findmnt: {
    why: 'what is mounted where, with which options',
    options: [
      '-s --fstab', '-m --mtab', '-k --kernel', '-A --all', '-a --ascii', '-b --bytes', '-C --nocanonicalize', '-c --canonicalize', '-D --df', '-d --direction <name>', '-e --evaluate',
      '-F --tab-file <readable>', '-f --first-only', '-i --invert', '-J --json', '-l --list', '-N --task <number>', '-n --noheadings', '-O --options <list>', '-o --output <list>',
      '--output-all', '-P --pairs', '--pseudo', '--shadowed', '-R --submounts', '-r --raw', '--real', '-S --source <path>', '-T --target <path>', '-M --mountpoint <path>',
      '-t --types <list>', '-U --uniq', '-u --notruncate', '-v --nofsroot', '-y --shell', '--tree', '--verbose', '--vfs-all',
    ],
    excluded: { '-p --poll': 'watches the mount table until the timeout' },
    operands: { kind: 'each', shape: 'path', max: 2 },
  },
  ss: {
    why: 'sockets and the processes holding them',
    options: [
      '-n --numeric', '-r --resolve', '-a --all', '-l --listening', '-o --options', '-e --extended', '-m --memory', '-p --processes', '-T --threads', '-i --info', '--tipcinfo',
      '-s --summary', '--tos', '--cgroup', '-b --bpf', '-Z --context', '-z --contexts', '-4 --ipv4', '-6 --ipv6', '-0 --packet', '-t --tcp', '-M --mptcp', '-S --sctp', '-u --udp',
      '-d --dccp', '-w --raw', '-x --unix', '--tipc', '--vsock', '--xdp', '-f --family <name>', '-A --query --socket <list>', '-H --no-header', '-O --oneline', '--inet-sockopt',
    ],
    excluded: {
      '-K --kill': 'kills the sockets it lists',
      '-D --diag': 'writes a dump to a file',
      '-F --filter': 'reads the filter from a file',
      '-N --net': 'switches network namespace',
      '-E --events': FOLLOWS,
    },
    operands: { kind: 'each', shape: 'filter' },
  },
  lsof: {
    why: 'open files: deleted-but-open files, who holds a mount or a port',
    plusOptions: true,
    options: [
      '-n', '-P', '-l', '-b', '-w', '-t', '-a', '-U', '-R', '-O', '-V', '-i [address]', '-p <list>', '-u <list>', '-c <name>', '-d <list>', '+L [=number]', '-L', '+c <number>',
      '+D <path>', '+d <path>',
    ],
    excluded: {
      '-r': 'repeats until the timeout',
      '+r': 'repeats until no file is open, usually until the timeout',
      '-D': 'can write a device cache file',
      '+m': 'writes a mount supplement file',
    },
    operands: { kind: 'each', shape: 'path' },
  },
  cat: {
    why: 'reads files under the readable roots',
    options: ['-A --show-all', '-b --number-nonblank', '-e', '-E --show-ends', '-n --number', '-s --squeeze-blank', '-t', '-T --show-tabs', '-u', '-v --show-nonprinting'],
    operands: { kind: 'each', shape: 'readable', min: 1 },
  },
  head: {
    why: 'the start of files under the readable roots',
    options: ['-c --bytes <count>', '-n --lines <count>', '-q --quiet --silent', '-v --verbose', '-z --zero-terminated'],
    operands: { kind: 'each', shape: 'readable', min: 1 },
  },
  tail: {
    why: 'the end of files under the readable roots',
    options: ['-c --bytes <count>', '-n --lines <count>', '-q --quiet --silent', '-v --verbose', '-z --zero-terminated'],
    excluded: { '-f --follow': FOLLOWS, '-F': FOLLOWS },
    operands: { kind: 'each', shape: 'readable', min: 1 },
  },
  grep: {
    why: 'searches files under the readable roots',
    options: [
      '-E --extended-regexp', '-F --fixed-strings', '-G --basic-regexp', '-P --perl-regexp', '-e --regexp <pattern>', '-f --file <readable>', '-i -y --ignore-case', '--no-ignore-case',
      '-w --word-regexp', '-x --line-regexp', '-z --null-data', '-s --no-messages', '-v --invert-match', '-m --max-count <number>', '-b --byte-offset', '-n --line-number',
      '--line-buffered', '-H --with-filename', '-h --no-filename', '--label <name>', '-o --only-matching', '-q --quiet --silent', '--binary-files <name>', '-a --text', '-I',
      '-L --files-without-match', '-l --files-with-matches', '-c --count', '-T --initial-tab', '-Z --null', '-B --before-context <number>', '-A --after-context <number>',
      '-C --context <number>', '--group-separator <name>', '--no-group-separator', '--color --colour [=name]', '-U --binary',
    ],
    excluded: {
      '-r --recursive': 'reads every file below a directory, past the path rules',
      '-R --dereference-recursive': 'reads every file below a directory, past the path rules',
      '-d --directories': 'can read every file below a directory, past the path rules',
      '-D --devices': 'decides whether devices and FIFOs are opened',
    },
    operands: { kind: 'pattern-then-files', patternOptions: ['-e', '-f'] },
  },
  wc: {
    why: 'sizes of files under the readable roots',
    options: ['-c --bytes', '-m --chars', '-l --lines', '-L --max-line-length', '-w --words'],
    excluded: { '--files0-from': 'reads the names to read from a file, past the path rules' },
    operands: { kind: 'each', shape: 'readable', min: 1 },
  },
};
