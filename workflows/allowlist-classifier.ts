/**
 * Reads a devvm command against the allowlist (allowlist.ts): read-only, or why not. Pure and
 * deterministic (the workflow calls it while deciding whether a command needs approval).
 *
 * The command is split on blanks as the shell would split it, which is only safe because any
 * word the shell would treat specially is refused first. Options are parsed as getopt does: short
 * bundles (`-tnp`, `-n20`, `-eo pid,comm`), long options with `=value` or the next word, `--` ends
 * the options, and options may follow operands. Anything unknown makes the command not read-only.
 */
import { ALLOWLIST, type CommandSpec, type Operands } from './allowlist.js';
import { SHAPES, type ShapeName } from './allowlist-shapes.js';

export type Classification = { readOnly: true } | { readOnly: false; why: string };

/** Quoting, expansion, redirection, command lists, globs and comments: none is needed to look. */
const SHELL_SYNTAX = /[;&|<>`$(){}\\\n\r*?[\]!~'"#]/;
const NOT_PLAIN_ASCII = /[^\t -~]/;

interface OptionDef {
  /** The option's first spelling, by which requirements and the parse result name it. */
  name: string;
  /** `next-if-fits`: an unattached value is the next word only when it has the shape. */
  value?: { shape: ShapeName; mode: 'required' | 'next-if-fits' | 'attached' };
}

interface CommandTable {
  spec: CommandSpec;
  options: Map<string, OptionDef>;
  excluded: Map<string, string>;
}

/** Parses one entry of `CommandSpec.options`, e.g. `-n --lines <count>` or `-b --boot [boot]`. */
function optionDef(text: string): { spellings: string[]; def: OptionDef } {
  const words = text.split(' ');
  const valueWord = /^[<[]/.test(words.at(-1) ?? '') ? words.pop() : undefined;
  const def: OptionDef = { name: words[0] ?? text };
  if (valueWord !== undefined) {
    const [, open, attached, shape] = /^([<[])(=?)([a-z]+)[>\]]$/.exec(valueWord) ?? [];
    if (!shape || !(shape in SHAPES)) throw new Error(`allowlist: bad value in "${text}"`);
    const mode = open === '<' ? 'required' : attached ? 'attached' : 'next-if-fits';
    def.value = { shape: shape as ShapeName, mode };
  }
  return { spellings: words, def };
}

function tableOf(spec: CommandSpec): CommandTable {
  const options = new Map<string, OptionDef>();
  for (const text of spec.options) {
    const { spellings, def } = optionDef(text);
    for (const spelling of spellings) options.set(spelling, def);
  }
  const excluded = new Map<string, string>();
  for (const [spellings, why] of Object.entries(spec.excluded ?? {})) for (const spelling of spellings.split(' ')) excluded.set(spelling, why);
  return { spec, options, excluded };
}

const TABLES = new Map(Object.entries(ALLOWLIST).map(([name, spec]) => [name, tableOf(spec)]));

/** A refusal found deep in the parse; classifyCommand turns it into its answer. */
class Refusal extends Error {}

/** The words after the command name, consumed left to right. */
class Words {
  private at = 0;
  constructor(private readonly list: string[]) {}
  next(): string | undefined {
    return this.list[this.at++];
  }
  peek(): string | undefined {
    return this.list[this.at];
  }
}

export function classifyCommand(command: string): Classification {
  const syntax = SHELL_SYNTAX.exec(command);
  if (syntax) return { readOnly: false, why: `${JSON.stringify(syntax[0])} is shell syntax` };
  const odd = NOT_PLAIN_ASCII.exec(command);
  if (odd) return { readOnly: false, why: `character U+${odd[0].codePointAt(0)?.toString(16).toUpperCase().padStart(4, '0')} is not plain ASCII` };
  const [name, ...args] = command.split(/[\t ]+/).filter((word) => word !== '');
  if (name === undefined) return { readOnly: false, why: 'the command is empty' };
  const table = TABLES.get(name);
  if (!table) return { readOnly: false, why: `${name} is not on the allowlist` };
  try {
    const { given, operands } = parse(table, new Words(args));
    const has = (spelling: string) => given.has(table.options.get(spelling)?.name ?? spelling);
    checkRequirements(table.spec, has);
    checkOperands(table.spec.operands, operands, has);
    return { readOnly: true };
  } catch (error) {
    if (error instanceof Refusal) return { readOnly: false, why: `${name}: ${error.message}` };
    throw error;
  }
}

/** The options given (by name) and the operands, in order. */
function parse(table: CommandTable, words: Words): { given: Set<string>; operands: string[] } {
  const given = new Set<string>();
  const operands: string[] = [];
  let optionsEnded = false;
  for (let word = words.next(); word !== undefined; word = words.next()) {
    if (optionsEnded || word === '-' || !startsOption(table.spec, word)) operands.push(word);
    else if (word === '--') optionsEnded = true;
    else if (word.startsWith('--')) given.add(takeLong(table, word, words));
    else for (const option of takeBundle(table, word, words)) given.add(option);
  }
  return { given, operands };
}

const startsOption = (spec: CommandSpec, word: string) =>
  word.startsWith('-') || (spec.plusOptions === true && /^\+./.test(word)) || (spec.bsdOptions === true && /^[A-Za-z]/.test(word));

function takeLong(table: CommandTable, word: string, words: Words): string {
  const equals = word.indexOf('=');
  const spelling = equals === -1 ? word : word.slice(0, equals);
  const option = lookUp(table, spelling);
  takeValue(option, spelling, equals === -1 ? undefined : word.slice(equals + 1), words);
  return option.name;
}

/** `-tnp`, `-n20`, `+L1`, or BSD `aux`: letters until one takes a value (the rest, or the next word). */
function takeBundle(table: CommandTable, word: string, words: Words): string[] {
  const prefix = /^[-+]/.test(word) ? word.charAt(0) : '';
  const letters = word.slice(prefix.length);
  const names: string[] = [];
  for (let at = 0; at < letters.length; at++) {
    const spelling = prefix + letters.charAt(at);
    const option = lookUp(table, spelling);
    names.push(option.name);
    if (option.value) {
      takeValue(option, spelling, letters.slice(at + 1) || undefined, words);
      break;
    }
  }
  return names;
}

function lookUp(table: CommandTable, spelling: string): OptionDef {
  const why = table.excluded.get(spelling);
  if (why !== undefined) throw new Refusal(`option ${spelling} ${why}`);
  const option = table.options.get(spelling);
  if (!option) throw new Refusal(`option ${spelling} is not on the allowlist`);
  return option;
}

function takeValue(option: OptionDef, spelling: string, attached: string | undefined, words: Words): void {
  if (!option.value) {
    if (attached !== undefined) throw new Refusal(`option ${spelling} takes no value`);
    return;
  }
  const { shape, mode } = option.value;
  let value = attached;
  if (value === undefined && mode === 'required') {
    value = words.next();
    if (value === undefined) throw new Refusal(`option ${spelling} needs ${SHAPES[shape].says}`);
  }
  const next = words.peek();
  if (value === undefined && mode === 'next-if-fits' && next !== undefined && SHAPES[shape].problem(next) === undefined) value = words.next();
  const problem = value === undefined ? undefined : SHAPES[shape].problem(value);
  if (problem !== undefined) throw new Refusal(`option ${spelling}: ${problem}`);
}

function checkRequirements(spec: CommandSpec, has: (spelling: string) => boolean): void {
  for (const rule of spec.requires ?? []) {
    if ((rule.when === undefined || has(rule.when)) && !has(rule.needs)) throw new Refusal(rule.why);
  }
}

function checkEach(shape: ShapeName, operands: string[]): void {
  for (const operand of operands) {
    const problem = SHAPES[shape].problem(operand);
    if (problem !== undefined) throw new Refusal(problem);
  }
}

function checkOperands(spec: Operands, operands: string[], has: (spelling: string) => boolean): void {
  switch (spec.kind) {
    case 'none':
      if (operands.length > 0) throw new Refusal(`takes no operand, not "${operands[0]}"`);
      return;
    case 'each':
      if (operands.length < (spec.min ?? 0)) throw new Refusal(`needs ${SHAPES[spec.shape].says}`);
      if (operands.length > (spec.max ?? Infinity)) throw new Refusal(`takes at most ${spec.max} operand(s)`);
      return checkEach(spec.shape, operands);
    case 'pattern-then-files': {
      const patternGiven = spec.patternOptions.some(has);
      const files = patternGiven ? operands : operands.slice(1);
      if (!patternGiven) checkEach('pattern', operands.slice(0, 1));
      if (files.length === 0) throw new Refusal('needs a file to read (without one it would wait on stdin)');
      return checkEach('readable', files);
    }
    case 'interval-count': {
      let firstNumber = operands.length;
      while (firstNumber > 0 && /^\d+$/.test(operands[firstNumber - 1] ?? '')) firstNumber--;
      const [names, numbers] = [operands.slice(0, firstNumber), operands.slice(firstNumber)];
      if (names.length > 0 && !spec.leading) throw new Refusal(`takes no operand but an interval and a count, not "${names[0]}"`);
      if (spec.leading) checkEach(spec.leading, names);
      if (numbers.length === 1) throw new Refusal(`${numbers[0]} is an interval without a count: it would run until the timeout`);
      if (numbers.length > 2) throw new Refusal(`takes an interval and a count, not ${numbers.length} numbers`);
      checkEach('interval', numbers.slice(0, 1));
      return checkEach('repeats', numbers.slice(1));
    }
    case 'verb': {
      const [verb, ...rest] = operands;
      if (verb === undefined) return;
      if (!Object.hasOwn(spec.verbs, verb)) throw new Refusal(`${verb} is not a read-only verb`);
      return checkEach(spec.verbs[verb]!.operands, rest);
    }
  }
}
