/**
 * The `codec` config section: the key ring that encrypts workflow history (server/payload-codec.ts)
 * and who may call the codec server. Keys come from files (mounted Secrets), never from the config.
 * A deployment refuses to start without keys unless `codec.enabled: false` says, explicitly, that
 * history is stored in plain text.
 */
import { readFileSync } from 'node:fs';
import { KEY_ID_PATTERN, parseKeyMaterial, type CodecKey } from './payload-codec.js';

export interface CodecConfig {
  /** false only when the config says so: then history is stored in plain text. */
  enabled: boolean;
  /** The first encrypts; all decrypt. Empty when disabled, or in the lab/tests before keys are given. */
  keys: CodecKey[];
  compress: boolean;
  /** Origins whose pages (the Temporal Web UI) may call the codec server from the browser. */
  webUiOrigins: string[];
}

type Fail = (key: string, message: string) => never;

const flag = (key: string, value: unknown, fallback: boolean, fail: Fail): boolean => {
  if (value === undefined) return fallback;
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  return fail(key, `must be true or false (got ${JSON.stringify(value)})`);
};

function origin(key: string, text: unknown, fail: Fail): string {
  try {
    if (typeof text !== 'string') throw new Error('not a string');
    const url = new URL(text);
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin === 'null') throw new Error('scheme');
    return url.origin;
  } catch {
    return fail(key, `must be an http(s) origin such as https://temporal.example.com (got ${JSON.stringify(text)})`);
  }
}

function readKey(index: number, entry: unknown, fail: Fail): CodecKey {
  const at = `codec.keys[${index}]`;
  if (!entry || typeof entry !== 'object' || Array.isArray(entry)) return fail(at, 'must be { id, file }');
  const { id, file } = entry as { id?: unknown; file?: unknown };
  if (typeof id !== 'string' || !KEY_ID_PATTERN.test(id)) return fail(`${at}.id`, `must be 1 to 64 of A-Z a-z 0-9 . _ - (got ${JSON.stringify(id)}); it is written into every payload the key encrypts`);
  if (typeof file !== 'string' || file.trim() === '') return fail(`${at}.file`, `key "${id}": must name the file holding the key (a mounted Secret)`);
  let contents: string;
  try {
    contents = readFileSync(file.trim(), 'utf8');
  } catch (error) {
    return fail(`${at}.file`, `key "${id}": cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const key = parseKeyMaterial(contents);
  if (!key) return fail(`${at}.file`, `key "${id}": ${file} holds ${contents.trim().length} characters, not a key; a key is 32 random bytes as base64 (openssl rand -base64 32) or as 64 hex digits`);
  return { id, key };
}

/**
 * `raw` is the merged config; `uiUrl` is temporal.uiUrl (its origin may call the codec server by
 * default). `requireKeys`: a real deployment, which must encrypt or say explicitly that it does not.
 */
export function parseCodecConfig(raw: { enabled?: unknown; keys?: unknown; compress?: unknown; webUiOrigins?: unknown } | undefined, uiUrl: string | null, requireKeys: boolean, fail: Fail): CodecConfig {
  const section = raw ?? {};
  const enabled = flag('codec.enabled', section.enabled, true, fail);
  const compress = flag('codec.compress', section.compress, true, fail);
  const originsRaw = section.webUiOrigins;
  if (originsRaw !== undefined && (!Array.isArray(originsRaw) || originsRaw.length > 20)) fail('codec.webUiOrigins', 'must be a list of up to 20 http(s) origins');
  const webUiOrigins = originsRaw === undefined ? (uiUrl ? [origin('temporal.uiUrl', uiUrl, fail)] : []) : (originsRaw as unknown[]).map((text, index) => origin(`codec.webUiOrigins[${index}]`, text, fail));
  if (!enabled) return { enabled, keys: [], compress, webUiOrigins };

  const keysRaw = section.keys ?? [];
  if (!Array.isArray(keysRaw)) return fail('codec.keys', 'must be a list of { id, file } (the first encrypts, all decrypt)');
  const keys = keysRaw.map((entry, index) => readKey(index, entry, fail));
  const seen = new Set<string>();
  keys.forEach(({ id }, index) => {
    if (seen.has(id)) fail(`codec.keys[${index}].id`, `"${id}" is given twice`);
    seen.add(id);
  });
  if (keys.length === 0 && requireKeys) {
    fail('codec.keys', 'required: workflow history (devvm output, forensics, agent messages) is encrypted with the first key of codec.keys: [{ id, file }] (openssl rand -base64 32 > key); to store it in plain text instead, set codec.enabled: false explicitly');
  }
  return { enabled, keys, compress, webUiOrigins };
}
