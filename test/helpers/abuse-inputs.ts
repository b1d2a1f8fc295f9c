// Generators for the abuse suite's dispatcher fuzzing, and the oracle that says what the PVE
// forced-command dispatcher must accept. The oracle is written from the documented grammar
// (DESIGN.md invariant 2, host/pve/pve-dispatch header), not from the sh implementation.
import fc from 'fast-check';
import { MUTATING_VERBS, PVE_VERBS } from '../../workflows/pve-types.js';

export const READ_ONLY_VERBS = ['status', 'forensics'] as const;

/** VERB or VERB REQUEST_ID; the id is 8-128 of [A-Za-z0-9._-], starting with a letter. */
const GRAMMAR = /^(status|forensics|reset|stop|start|cycle)(?: ([A-Za-z][A-Za-z0-9._-]{7,127}))?$/;
const MAX_COMMAND_BYTES = 140;

export interface Parsed {
  verb: (typeof PVE_VERBS)[number];
  requestId: string | null;
}

/** What the dispatcher must accept, or null: it must reject with exit 64. */
export function grammatical(command: string): Parsed | null {
  if (Buffer.byteLength(command, 'utf8') > MAX_COMMAND_BYTES) return null;
  const match = GRAMMAR.exec(command);
  if (!match) return null;
  return { verb: match[1] as Parsed['verb'], requestId: match[2] ?? null };
}

export function isMutating(command: string): boolean {
  const parsed = grammatical(command);
  return parsed !== null && (MUTATING_VERBS as readonly string[]).includes(parsed.verb);
}

export interface FuzzInput {
  kind: string;
  command: string;
}

const tagged = (kind: string, arb: fc.Arbitrary<string>) => arb.map((command): FuzzInput => ({ kind, command }));

const anyVerb = fc.constantFrom(...PVE_VERBS);
const readOnlyVerb = fc.constantFrom(...READ_ONLY_VERBS);
/** A request id the grammar accepts. */
export const validRequestId = fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{7,40}$/);
const maybeId = fc.option(validRequestId, { nil: undefined });
const withId = (verb: string, id: string | undefined) => (id === undefined ? verb : `${verb} ${id}`);

/** Whitespace the grammar does not allow, plus invisible and Unicode spaces. */
const badSpace = fc.constantFrom('\t', '\n', '\r', '\r\n', '\v', '\f', '  ', '   ', '\u00a0', '\u2003', '\u200b', '\u3000', '\u2028', '\ufeff', '\u0085');

/** Homoglyphs for the letters of the verbs (Cyrillic, Greek, fullwidth, mathematical, dotless). */
const LOOKALIKES: Record<string, string[]> = {
  a: ['а', 'ɑ', 'ａ', '𝐚'],
  c: ['с', 'ϲ', 'ｃ', '𝐜'],
  e: ['е', 'ė', 'ｅ', '𝐞'],
  f: ['ſ', 'ｆ', '𝐟'],
  i: ['і', 'ı', 'ｉ', '𝐢'],
  l: ['ӏ', 'ⅼ', 'ｌ', '1'],
  n: ['ո', 'ｎ', '𝐧'],
  o: ['о', 'ο', 'ｏ', '0'],
  p: ['р', 'ρ', 'ｐ'],
  r: ['г', 'ｒ', '𝐫'],
  s: ['ѕ', 'ꜱ', 'ｓ', '𝐬'],
  t: ['т', 'ｔ', '𝐭'],
  u: ['υ', 'ս', 'ｕ'],
  y: ['у', 'ү', 'ｙ'],
};

export interface Payloads {
  /** A file the injection payloads try to create: it must never exist. */
  canary: string;
}

/** Shell metacharacter payloads: each one would do something if the words reached a shell. */
function injections({ canary }: Payloads): fc.Arbitrary<string> {
  return fc.constantFrom(
    `;touch ${canary}`,
    `; touch ${canary}`,
    ` && touch ${canary}`,
    `&&touch ${canary}`,
    ` || touch ${canary}`,
    ` | tee ${canary}`,
    `|sh`,
    ` $(touch ${canary})`,
    `$(touch ${canary})`,
    ` \`touch ${canary}\``,
    `\`touch ${canary}\``,
    `\ntouch ${canary}`,
    `\rtouch ${canary}`,
    ` > ${canary}`,
    ` >> ${canary}`,
    ` < /etc/passwd`,
    ` & touch ${canary}`,
    ` #`,
    ` ../../../../etc/passwd`,
    ` ../state`,
    `/../../bin/sh`,
    ` \${IFS}touch\${IFS}${canary}`,
    ` '$(touch ${canary})'`,
    ` "$(touch ${canary})"`,
    ` \\`,
    ` *`,
    ` ?`,
    ` ~root`,
    ` {a,b}`,
    ` %s%n`,
    ` !!`,
    ` $0`,
    ` $SSH_ORIGINAL_COMMAND`,
    ` --run`,
    ` --validated x status`,
    ` --section /tmp/x dmesg_tail`,
    ` -c id`,
    ` 102`,
    ` 103`,
    `=1`,
    `:`,
    `,`,
    `@localhost`,
    `+x`,
    ` \u001b[2J`,
  );
}

/** Request ids the grammar refuses. */
const badRequestId = fc.oneof(
  fc.stringMatching(/^[0-9][A-Za-z0-9._-]{7,40}$/), // starts with a digit
  fc.stringMatching(/^[._-][A-Za-z0-9._-]{7,40}$/), // starts with punctuation (an option, a dot file)
  fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{0,6}$/), // too short
  fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{128,130}$/), // too long (129+)
  fc.tuple(validRequestId, fc.constantFrom('/', '/..', '/../../etc', '\\', ':', '+', '=', '%2F', '~', '@')).map(([id, bad]) => `${id}${bad}`),
  fc.tuple(fc.constantFrom('a/', '../', './', 'a..'), validRequestId).map(([bad, id]) => `${bad}${id}`),
  fc.constantFrom('102', '103', '0', '-1', '999999999', '102 --purge', '..', '.', '-', '--', '--run', '-rf'),
);

function caseVariant(verb: string): fc.Arbitrary<string> {
  return fc
    .array(fc.boolean(), { minLength: verb.length, maxLength: verb.length })
    .map((flips) => [...verb].map((ch, i) => (flips[i] ? ch.toUpperCase() : ch)).join(''))
    .filter((variant) => variant !== verb);
}

function typoVariant(verb: string): fc.Arbitrary<string> {
  return fc.tuple(fc.nat({ max: verb.length - 1 }), fc.constantFrom('delete', 'double', 'replace', 'swap'), fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789._-')).map(([i, how, ch]) => {
    const chars = [...verb];
    if (how === 'delete') chars.splice(i, 1);
    else if (how === 'double') chars.splice(i, 0, chars[i] as string);
    else if (how === 'replace') chars[i] = ch;
    else if (i + 1 < chars.length) [chars[i], chars[i + 1]] = [chars[i + 1] as string, chars[i] as string];
    else chars.push(ch);
    return chars.join('');
  });
}

function lookalikeVariant(verb: string): fc.Arbitrary<string> {
  const positions = [...verb].map((ch, i) => [i, ch] as const).filter(([, ch]) => LOOKALIKES[ch]);
  return fc.tuple(fc.constantFrom(...positions), fc.nat()).map(([[i, ch], pick]) => {
    const options = LOOKALIKES[ch] as string[];
    const chars = [...verb];
    chars[i] = options[pick % options.length] as string;
    return chars.join('');
  });
}

const ALIASES = [
  'reboot', 'restart', 'shutdown', 'poweroff', 'destroy', 'suspend', 'resume', 'migrate', 'qm', 'qm stop 102', 'qm reset 102',
  'pvesh', 'sh', 'bash', '/bin/sh', 'exec sh', 'sudo', 'sudo -i', 'help', '--help', '-h', 'version', '--run', '--validated',
  '--section', 'status102', 'reset102', 'cycle-102', 'scp -t /tmp', 'rsync --server', 'internal-sftp', 'true', 'env', 'id',
];

/** Every non-grammatical family the issue names, plus random noise. */
export function rejectedInputs(payloads: Payloads): fc.Arbitrary<FuzzInput> {
  return fc.oneof(
    { weight: 3, arbitrary: tagged('random binary string', fc.string({ unit: 'binary', maxLength: 64 })) },
    { weight: 2, arbitrary: tagged('random bytes (as UTF-8)', fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString('utf8'))) },
    { weight: 2, arbitrary: tagged('random printable ASCII', fc.string({ unit: fc.constantFrom(...' abcdefgimnoprstuyz0123456789._-;|&$()`\'"/\\'), maxLength: 48 })) },
    { weight: 2, arbitrary: tagged('verb case variant', fc.tuple(anyVerb.chain(caseVariant), maybeId).map(([v, id]) => withId(v, id))) },
    {
      weight: 3,
      arbitrary: tagged(
        'verb whitespace variant',
        fc.tuple(anyVerb, maybeId, badSpace, fc.constantFrom('lead', 'trail', 'between', 'single-space-lead', 'single-space-trail', 'inside')).map(([verb, id, space, where]) => {
          if (where === 'lead') return `${space}${withId(verb, id)}`;
          if (where === 'trail') return `${withId(verb, id)}${space}`;
          if (where === 'single-space-lead') return ` ${withId(verb, id)}`;
          if (where === 'single-space-trail') return `${withId(verb, id)} `;
          if (where === 'inside') return `${verb.slice(0, 2)}${space}${verb.slice(2)}${id ? ` ${id}` : ''}`;
          return `${verb}${space}${id ?? 'abcdefgh1'}`;
        }),
      ),
    },
    { weight: 2, arbitrary: tagged('verb typo or alias', fc.oneof(fc.tuple(anyVerb.chain(typoVariant), maybeId).map(([v, id]) => withId(v, id)), fc.constantFrom(...ALIASES))) },
    { weight: 2, arbitrary: tagged('unicode lookalike verb', fc.tuple(anyVerb.chain(lookalikeVariant), maybeId).map(([v, id]) => withId(v, id))) },
    {
      weight: 5,
      arbitrary: tagged(
        'valid verb + injection',
        fc.tuple(anyVerb, maybeId, injections(payloads), fc.boolean()).map(([verb, id, payload, before]) => (before ? `${payload.trimStart()} ${withId(verb, id)}` : `${withId(verb, id)}${payload}`)),
      ),
    },
    { weight: 4, arbitrary: tagged('bad request id', fc.tuple(anyVerb, badRequestId).map(([verb, id]) => `${verb} ${id}`)) },
    {
      weight: 2,
      arbitrary: tagged(
        'extra words',
        fc.tuple(anyVerb, validRequestId, fc.oneof(validRequestId, anyVerb, fc.constantFrom('now', '--force', '102', 'status'))).map(([verb, id, extra]) => `${verb} ${id} ${extra}`),
      ),
    },
    {
      weight: 2,
      arbitrary: tagged(
        'over-long',
        fc.tuple(anyVerb, fc.integer({ min: 141, max: 1_024 }), fc.constantFrom('a', 'A', '0', '.', '-', 'Z9_')).map(([verb, length, fill]) => `${verb} ${'a'.concat(fill.repeat(length)).slice(0, length)}`),
      ),
    },
  ).filter((input) => !input.command.includes('\0') && grammatical(input.command) === null);
}

/** Grammatical commands of read-only verbs only (no forensics: see the suite for why). */
export const statusInputs: fc.Arbitrary<FuzzInput> = tagged('valid read-only: status', fc.tuple(fc.constant('status'), maybeId).map(([v, id]) => withId(v, id)));

export const forensicsInputs: fc.Arbitrary<FuzzInput> = tagged('valid read-only: forensics', fc.tuple(readOnlyVerb.filter((v) => v === 'forensics'), maybeId).map(([v, id]) => withId(v, id)));

/** The bulk mix: mostly rejected inputs, a few valid statuses; never a grammatical mutation. */
export function bulkInputs(payloads: Payloads): fc.Arbitrary<FuzzInput> {
  return fc
    .oneof({ weight: 199, arbitrary: rejectedInputs(payloads) }, { weight: 1, arbitrary: statusInputs })
    .filter((input) => !isMutating(input.command));
}
