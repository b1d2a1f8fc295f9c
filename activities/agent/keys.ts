/**
 * Work-item keys for the agent's tool calls. Sessions key a tool call by its turn and place
 * (`t-<turn>-<index>`, workflows/session.ts) and record the key with the call; histories from
 * before that keyed it `toolKey(toolUseId)`, which the conversation builder still reads.
 *
 * Pure and import-free (no node:crypto): deterministic in the workflow sandbox too.
 */

/** Keys the session accepts (workflows/messages.ts REQUEST_KEY_PATTERN). */
export const TOOL_KEY_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;

const PREFIX = 't-';
const MAX_ID_PART = 29; // 2 (prefix) + 29 + 1 ("-") + up to 8 (hash) <= 40

/** 32-bit FNV-1a over the UTF-16 code units, as 1-7 base-36 digits. */
function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(36);
}

/**
 * Maps a tool_use id into `[A-Za-z0-9_-]{1,40}`, deterministically: `t-` + the id without its
 * `toolu_` prefix (other characters replaced by `_`, at most 29 kept) + `-` + a hash of the
 * whole id. The hash keeps two ids apart even when sanitising or truncating made them equal;
 * the `t-` prefix keeps tool keys apart from the session's own `r<n>` keys.
 */
export function toolKey(toolUseId: string): string {
  const body = toolUseId.replace(/^toolu_/, '').replace(/[^A-Za-z0-9_]/g, '_').slice(0, MAX_ID_PART);
  return `${PREFIX}${body}-${fnv1a(toolUseId)}`;
}

/** Whether a key has the shape toolKey produces (it may still belong to an unknown call). */
export function looksLikeToolKey(key: string): boolean {
  return key.startsWith(PREFIX) && TOOL_KEY_PATTERN.test(key);
}
