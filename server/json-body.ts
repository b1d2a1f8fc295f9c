/**
 * What JSON.parse (and so Fastify's parser) lets through silently: a key given twice in one
 * object, where the last wins — `{"verb":"status","verb":"cycle"}` would be a cycle to us and a
 * status to a proxy or log reader that keeps the first.
 */

/** The first key that appears twice in one object of already-valid JSON text, or null. */
export function duplicateKey(text: string): string | null {
  const frames: { keys: Set<string> | null; expectKey: boolean }[] = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    const frame = frames[frames.length - 1];
    if (char === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (frame?.keys && frame.expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (frame.keys.has(key)) return key;
        frame.keys.add(key);
        frame.expectKey = false;
      }
      i = end;
    } else if (char === '{') frames.push({ keys: new Set(), expectKey: true });
    else if (char === '[') frames.push({ keys: null, expectKey: false });
    else if (char === '}' || char === ']') frames.pop();
    else if (char === ',' && frame?.keys) frame.expectKey = true;
  }
  return null;
}
