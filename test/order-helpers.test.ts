// The ordering checks every suite uses ("forensics before the verb") must fail when the first
// thing is missing: a transcript double without its forensics entry proves it.
import { describe, expect, it } from 'vitest';
import { expectInOrder, expectOrdered } from './helpers/order.js';

const transcript = ['session-started', 'request', 'forensics', 'verb-result', 'devvm-wait'];

describe('ordering assertions', () => {
  it('when every item is there in order, then they pass', () => {
    expect(() => expectInOrder(transcript, 'forensics', 'verb-result', 'devvm-wait')).not.toThrow();
    expect(() => expectOrdered({ forensics: 2, 'verb-result': 3 })).not.toThrow();
  });

  it('when forensics is missing from the transcript, then "forensics before the verb" fails, naming it', () => {
    const withoutForensics = transcript.filter((type) => type !== 'forensics');
    // What a bare indexOf comparison would have let through: forensics is absent (-1), and yet
    // "-1 < index of the verb" holds. This line is the negative control, not an ordering check.
    expect(withoutForensics.indexOf('forensics')).toBe(-1);
    expect(withoutForensics.indexOf('verb-result')).toBeGreaterThan(withoutForensics.indexOf('forensics'));
    expect(() => expectInOrder(withoutForensics, 'forensics', 'verb-result')).toThrow(/forensics is missing/);
    expect(() => expectOrdered({ forensics: -1, 'verb-result': 3 })).toThrow(/forensics is missing/);
  });

  it('when the order is wrong, then it fails, naming both', () => {
    expect(() => expectInOrder(['verb-result', 'forensics'], 'forensics', 'verb-result')).toThrow(/forensics \(at 1\) should come before verb-result \(at 0\)/);
  });
});
