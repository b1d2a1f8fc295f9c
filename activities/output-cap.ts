/**
 * Keeps the head and the tail of a byte stream and counts what fell in between, so a command
 * that prints gigabytes costs bounded memory and the reader still sees how it started and ended.
 */
export interface CappedText {
  text: string;
  totalBytes: number;
  droppedBytes: number;
  truncated: boolean;
}

export class OutputCap {
  private readonly head: Buffer[] = [];
  private headBytes = 0;
  private tail: Buffer = Buffer.alloc(0);
  private total = 0;

  constructor(
    private readonly headLimit: number,
    private readonly tailLimit: number,
  ) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    let rest = chunk;
    if (this.headBytes < this.headLimit) {
      const take = Math.min(this.headLimit - this.headBytes, rest.length);
      this.head.push(rest.subarray(0, take));
      this.headBytes += take;
      rest = rest.subarray(take);
    }
    if (rest.length > 0 && this.tailLimit > 0) {
      const joined = Buffer.concat([this.tail, rest]);
      this.tail = joined.subarray(Math.max(0, joined.length - this.tailLimit));
    }
  }

  result(): CappedText {
    const head = Buffer.concat(this.head).toString('utf8');
    const dropped = this.total - this.headBytes - this.tail.length;
    if (dropped <= 0) return { text: head + this.tail.toString('utf8'), totalBytes: this.total, droppedBytes: 0, truncated: false };
    return {
      text: `${head}\n… [${dropped} bytes dropped] …\n${this.tail.toString('utf8')}`,
      totalBytes: this.total,
      droppedBytes: dropped,
      truncated: true,
    };
  }
}

/** Caps an already-complete string the same way (head + tail, dropped byte count stated). */
export function capText(text: string, headLimit: number, tailLimit: number): CappedText {
  const cap = new OutputCap(headLimit, tailLimit);
  cap.push(Buffer.from(text, 'utf8'));
  return cap.result();
}
