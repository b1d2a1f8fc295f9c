/** The duplicate-key check of request bodies (server/json-body.ts), against generated JSON. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { duplicateKey } from '../server/json-body.js';

describe('duplicate keys in JSON bodies', () => {
  it('when JSON has no key twice in one object (any shape, any spacing), then nothing is reported', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(undefined, 2, '\t'), (value, space) => {
        expect(duplicateKey(JSON.stringify(value, null, space) ?? 'null')).toBeNull();
      }),
      { numRuns: 2_000 },
    );
    expect(duplicateKey('{"a":{"x":1},"b":{"x":2},"c":[{"x":3},{"x":4}]}')).toBeNull();
    expect(duplicateKey('{"a":"\\"a\\":1","b":"{\\"a\\":"}')).toBeNull();
  });

  it('when an object anywhere gives a key twice (however it is spelled), then that key is reported', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue(), { minKeys: 1 }), fc.nat(), fc.jsonValue(), (object, pick, again) => {
        const keys = Object.keys(object);
        const key = keys[pick % keys.length] as string;
        const text = JSON.stringify(object);
        const repeated = `${text.slice(0, -1)},${JSON.stringify(key)}:${JSON.stringify(again) ?? 'null'}}`;
        expect(duplicateKey(`[1,{"deep":${repeated}}]`)).toBe(key);
      }),
      { numRuns: 2_000 },
    );
    expect(duplicateKey('{"verb":"status","\\u0076erb":"cycle"}')).toBe('verb');
  });
});
