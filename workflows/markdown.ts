/**
 * User text (descriptions, reasons, commands, operator messages) inside Markdown that others
 * read — the Temporal Web UI's details and the postmortem — must stay text: no links that hide
 * their target, no emphasis, no new list items or headings, no broken code spans. Pure, so the
 * workflow can use it as well as the server.
 */

const collapse = (text: string) => text.replace(/\s+/g, ' ').trim();

/**
 * One line of literal text in running Markdown: what could start syntax mid-line (emphasis, code,
 * link brackets, HTML, strikethrough) is escaped, and so are the ':' of a scheme, the '@' of an
 * address and the '.' after 'www', so that GFM's autolinks do not make a typed URL clickable;
 * newlines are folded, so no list item or heading can begin.
 */
export function mdText(text: string): string {
  return collapse(text)
    .replace(/[\\`*_[\]<>~:@]/g, (char) => `\\${char}`)
    .replace(/\b(www)\./gi, '$1\\.');
}

/** A backtick fence longer than any backtick run in the text (and at least `min` long). */
const fenceFor = (text: string, min: number) => '`'.repeat(Math.max(min, ...(text.match(/`+/g) ?? []).map((run) => run.length + 1)));

/** A code span that holds any text: its fence is longer than any backtick run inside. */
export function mdCode(text: string): string {
  const line = collapse(text);
  const fence = fenceFor(line, 1);
  const pad = line.startsWith('`') || line.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${line}${pad}${fence}`;
}

/** A fenced block for multi-line text: nothing inside is Markdown, however it is written. */
export function mdBlock(text: string): string {
  const fence = fenceFor(text, 3);
  return `${fence}text\n${text.replace(/\r\n?/g, '\n')}\n${fence}`;
}
