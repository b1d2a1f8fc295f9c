// HTTP clients for the abuse suite that send what a browser or fetch would refuse to: raw
// paths (no dot-segment normalisation), any header, any body; and a raw-socket client for
// requests that are not even valid HTTP.
import { Agent, request } from 'node:http';
import { connect } from 'node:net';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

export interface HttpAsk {
  method: string;
  /** Sent as-is (only characters Node's client accepts: 0x21-0xff). */
  path: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
}

const agent = new Agent({ keepAlive: true, maxSockets: 8 });

export function send(port: number, ask: HttpAsk, timeoutMs = 15_000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: ask.method, path: ask.path, headers: ask.headers ?? {}, agent, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms: ${ask.method} ${ask.path.slice(0, 200)}`)));
    req.on('error', reject);
    if (ask.body !== undefined) req.write(ask.body);
    req.end();
  });
}

export interface RawAnswer {
  /** Status of the first response line, or null when the server closed without answering. */
  status: number | null;
  head: string;
  /** The body, de-chunked when the answer was chunked. */
  body: string;
}

/** Writes bytes to a fresh connection, reads until the server closes (or the deadline). */
export function sendRaw(port: number, bytes: string | Buffer, timeoutMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      let all = Buffer.concat(chunks);
      // Skip interim answers (100 Continue): the status that counts is the final one.
      while (/^HTTP\/1\.[01] 1\d\d /.test(all.subarray(0, 13).toString('latin1')) && all.indexOf('\r\n\r\n') !== -1) all = all.subarray(all.indexOf('\r\n\r\n') + 4);
      const split = all.indexOf('\r\n\r\n');
      const head = (split === -1 ? all : all.subarray(0, split)).toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
      const rawBody = split === -1 ? Buffer.alloc(0) : all.subarray(split + 4);
      const body = /^transfer-encoding:\s*chunked/im.test(head) ? dechunk(rawBody) : rawBody;
      resolve({ status: status ? Number(status) : null, head, body: body.toString('utf8') });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', finish);
    // Half-close after the request: the server still answers (Node's HTTP server allows half-open).
    socket.end(bytes);
  });
}

function dechunk(body: Buffer): Buffer {
  const out: Buffer[] = [];
  let rest = body;
  for (;;) {
    const eol = rest.indexOf('\r\n');
    if (eol === -1) break;
    const size = parseInt(rest.subarray(0, eol).toString('latin1'), 16);
    if (!size) break;
    out.push(rest.subarray(eol + 2, eol + 2 + size));
    rest = rest.subarray(eol + 2 + size + 2);
  }
  return Buffer.concat(out);
}

export function closeAgent(): void {
  agent.destroy();
}
