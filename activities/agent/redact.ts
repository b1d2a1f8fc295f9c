/**
 * Best-effort removal of obvious secrets from text before the model (or the console) sees it:
 * private key blocks, bearer/basic credentials, Anthropic / OpenAI-style / AWS / GitHub keys,
 * `password=`-style assignments and passwords inside URLs.
 *
 * It is a safety net, not a guarantee: it matches well-known shapes only. Pure string code
 * with no imports, so the UI and the workflow-side types can reuse it.
 */

/** What a redacted value is replaced with. */
export const REDACTED = '[REDACTED]';

interface Rule {
  name: string;
  pattern: RegExp;
  replace: (match: string, ...groups: string[]) => string;
}

// Names that mark the value after `=` or `:` as a secret (`db_password=…`, `"apiKey": "…"`).
const SECRET_NAME = String.raw`[A-Za-z0-9_.-]*(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret|credentials?)[A-Za-z0-9_.-]*`;

const RULES: Rule[] = [
  // A whole PEM private key block. When the closing line was cut off (output caps), everything
  // from the BEGIN line to the end of the text goes.
  {
    name: 'private key block',
    pattern: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)/g,
    replace: () => `${REDACTED} (private key block)`,
  },
  // The tail of a block whose BEGIN line was cut off: base64 lines followed by the END line.
  {
    name: 'private key tail',
    pattern: /(?:^[A-Za-z0-9+/=]{16,}\r?\n)*^[A-Za-z0-9+/=]*-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----/gm,
    replace: () => `${REDACTED} (private key block)`,
  },
  // PuTTY key files carry the private part in "Private-Lines:" followed by base64 lines.
  {
    name: 'putty private lines',
    pattern: /(Private-Lines:\s*\d+\r?\n)(?:[A-Za-z0-9+/=]+\r?\n?)+/g,
    replace: (_match, head: string) => `${head}${REDACTED}\n`,
  },
  // `Authorization: Bearer …`, `Authorization: Basic …`, `Proxy-Authorization: …` (headers, curl -H).
  {
    name: 'authorization header',
    pattern: /\b((?:proxy-)?authorization\s*[:=]\s*["']?)(bearer|basic|token|digest)\s+[^\s"',;]+/gi,
    replace: (_match, head: string, scheme: string) => `${head}${scheme} ${REDACTED}`,
  },
  // A bare bearer token anywhere else.
  {
    name: 'bearer token',
    pattern: /\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi,
    replace: (_match, head: string) => `${head}${REDACTED}`,
  },
  // Anthropic API and admin keys.
  { name: 'anthropic key', pattern: /\bsk-ant-[A-Za-z0-9_-]{8,}/g, replace: () => `sk-ant-${REDACTED}` },
  // Other `sk-…` style keys (OpenAI and compatible services).
  { name: 'sk key', pattern: /\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}/g, replace: () => `sk-${REDACTED}` },
  // AWS access key ids (the secret usually follows as an assignment, caught below).
  { name: 'aws access key id', pattern: /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b/g, replace: () => `${REDACTED} (aws key id)` },
  // GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained.
  { name: 'github token', pattern: /\bgh[pousr]_[A-Za-z0-9]{30,}\b/g, replace: () => `${REDACTED} (github token)` },
  { name: 'github fine-grained token', pattern: /\bgithub_pat_[A-Za-z0-9_]{22,}/g, replace: () => `${REDACTED} (github token)` },
  // Slack tokens.
  { name: 'slack token', pattern: /\bxox[abposr]-[A-Za-z0-9-]{10,}/g, replace: () => `${REDACTED} (slack token)` },
  // user:password@ in URLs.
  {
    name: 'url password',
    pattern: /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]+:)[^\s@/]+@/gi,
    replace: (_match, head: string) => `${head}${REDACTED}@`,
  },
  // password=…, "api_key": "…", token: …, PGPASSWORD=… (the value, up to whitespace or a quote).
  {
    name: 'secret assignment',
    pattern: new RegExp(String.raw`\b(${SECRET_NAME}["']?\s*[:=]\s*)(["']?)(?!\[REDACTED\])([^\s"',;&]{1,})`, 'gi'),
    replace: (_match, head: string, quote: string) => `${head}${quote}${REDACTED}`,
  },
];

/** Returns `text` with every recognised secret replaced by {@link REDACTED}. */
export function redact(text: string): string {
  return redactCounting(text).text;
}

/** Like {@link redact}, also saying how many values were replaced (for a note to the reader). */
export function redactCounting(text: string): { text: string; redactions: number } {
  let redactions = 0;
  let out = text;
  for (const rule of RULES) {
    out = out.replace(rule.pattern, (match: string, ...rest: unknown[]) => {
      // The replacer gets the groups, then offset and input; only string groups are ours.
      const groups = rest.filter((value): value is string => typeof value === 'string' || value === undefined).map((value) => value ?? '');
      const replaced = rule.replace(match, ...groups);
      if (replaced !== match) redactions++;
      return replaced;
    });
  }
  return { text: out, redactions };
}
