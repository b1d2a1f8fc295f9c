/**
 * The payload codec: every payload the console and the worker hand to Temporal (workflow and
 * activity inputs and results, signal/update/query arguments and results, failure details,
 * summaries) is encrypted with AES-256-GCM before it leaves the process, so devvm output,
 * forensics and agent messages are never stored in Temporal's database in plain text.
 *
 * Wire format of an encrypted payload:
 *   metadata  encoding = "binary/encrypted", encryption-key-id = <key id>
 *   data      version (1 byte) | IV (12) | GCM tag (16) | ciphertext
 *   plaintext flags (1 byte: 0 plain, 1 deflate) | the original Payload, protobuf-encoded
 * The key id and encoding are bound to the ciphertext as additional authenticated data, so a
 * payload cannot be relabelled to another key. A key ring decrypts with any of its keys and
 * encrypts with the first: rotation is "put the new key first", no migration.
 * Payloads without the encrypted encoding pass through decode untouched: histories recorded
 * before the codec (and messages a plain `temporal` CLI sends) still read and replay.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { deflateRaw, inflateRaw } from 'node:zlib';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
// A CommonJS package: its namespaces hang off the default export under Node's ESM loader.
import proto from '@temporalio/proto';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
/** A key is 32 bytes (AES-256). */
export const KEY_BYTES = 32;
/** Letters, digits, `.`, `_`, `-`; not only dots (a key id names a file in a mounted Secret). */
export const KEY_ID_PATTERN = /^(?!\.+$)[A-Za-z0-9._-]{1,64}$/;

const FORMAT_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const FLAG_PLAIN = 0;
const FLAG_DEFLATE = 1;
/** Smaller payloads are not worth deflating (and short secrets gain least from hiding their length). */
const COMPRESS_FROM_BYTES = 512;
/** No decoded payload may inflate past this: a bound even for a ciphertext we made ourselves. */
const MAX_INFLATED_BYTES = 64 * 1024 * 1024;

const deflate = promisify(deflateRaw);
const inflate = promisify(inflateRaw) as (input: Buffer, options: { maxOutputLength: number }) => Promise<Buffer>;
const PayloadProto = proto.temporal.api.common.v1.Payload;
const text = (bytes: Uint8Array | null | undefined) => (bytes ? Buffer.from(bytes).toString('utf8') : '');

export interface CodecKey {
  id: string;
  key: Buffer;
}

export interface CodecOptions {
  /** Deflate payloads of 512 bytes and more before encrypting them (when that makes them smaller). */
  compress: boolean;
}

/** A payload that names a key the ring does not hold: the error says which one. */
export class UnknownCodecKeyError extends Error {
  constructor(
    readonly keyId: string,
    known: string[],
  ) {
    super(`payload codec: the payload was encrypted with key id "${keyId}", which is not in codec.keys (it has: ${known.map((id) => `"${id}"`).join(', ')})`);
    this.name = 'UnknownCodecKeyError';
  }
}

export class PayloadDecryptionError extends Error {
  constructor(message: string) {
    super(`payload codec: ${message}`);
    this.name = 'PayloadDecryptionError';
  }
}

const additionalData = (keyId: string) => Buffer.from(`${ENCRYPTED_ENCODING}\n${keyId}`);

/** The key material a key file holds: 32 bytes as base64 (openssl rand -base64 32) or as 64 hex digits. */
export function parseKeyMaterial(contents: string): Buffer | null {
  const trimmed = contents.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) {
    const bytes = Buffer.from(trimmed, trimmed.includes('-') || trimmed.includes('_') ? 'base64url' : 'base64');
    if (bytes.length === KEY_BYTES) return bytes;
  }
  return null;
}

export class EncryptingPayloadCodec implements PayloadCodec {
  private readonly byId: Map<string, Buffer>;

  constructor(
    private readonly keys: readonly CodecKey[],
    private readonly options: CodecOptions,
  ) {
    if (keys.length === 0) throw new Error('payload codec: at least one key');
    for (const { id, key } of keys) {
      if (!KEY_ID_PATTERN.test(id)) throw new Error(`payload codec: key id "${id}" must be 1 to 64 of A-Z a-z 0-9 . _ -`);
      if (key.length !== KEY_BYTES) throw new Error(`payload codec: key "${id}" must be ${KEY_BYTES} bytes`);
    }
    this.byId = new Map(keys.map(({ id, key }) => [id, key]));
    if (this.byId.size !== keys.length) throw new Error('payload codec: key ids must be unique');
  }

  /** The key new payloads are encrypted with. */
  get encryptingKeyId(): string {
    return (this.keys[0] as CodecKey).id;
  }

  get keyIds(): string[] {
    return this.keys.map(({ id }) => id);
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.all(payloads.map((payload) => this.encrypt(payload)));
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.all(payloads.map((payload) => (isEncrypted(payload) ? this.decrypt(payload) : payload)));
  }

  private async encrypt(payload: Payload): Promise<Payload> {
    const { id, key } = this.keys[0] as CodecKey;
    const serialized = Buffer.from(PayloadProto.encode(payload).finish());
    let flag = FLAG_PLAIN;
    let body = serialized;
    if (this.options.compress && serialized.length >= COMPRESS_FROM_BYTES) {
      const deflated = await deflate(serialized);
      if (deflated.length < serialized.length) [flag, body] = [FLAG_DEFLATE, deflated];
    }
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(additionalData(id));
    const ciphertext = Buffer.concat([cipher.update(Buffer.from([flag])), cipher.update(body), cipher.final()]);
    return {
      metadata: { encoding: Buffer.from(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: Buffer.from(id) },
      data: Buffer.concat([Buffer.from([FORMAT_VERSION]), iv, cipher.getAuthTag(), ciphertext]),
    };
  }

  private async decrypt(payload: Payload): Promise<Payload> {
    const keyId = text(payload.metadata?.[KEY_ID_METADATA]);
    if (keyId === '') throw new PayloadDecryptionError(`an encrypted payload without "${KEY_ID_METADATA}" metadata`);
    const key = this.byId.get(keyId);
    if (!key) throw new UnknownCodecKeyError(keyId, this.keyIds);
    const data = Buffer.from(payload.data ?? []);
    if (data.length < 1 + IV_BYTES + TAG_BYTES + 1 || data[0] !== FORMAT_VERSION) throw new PayloadDecryptionError(`payload for key "${keyId}" is truncated or of an unknown format version`);
    const iv = data.subarray(1, 1 + IV_BYTES);
    const tag = data.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(additionalData(keyId));
    decipher.setAuthTag(tag);
    let plaintext: Buffer;
    try {
      plaintext = Buffer.concat([decipher.update(data.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new PayloadDecryptionError(`payload for key "${keyId}" does not authenticate (other key material under that id, or altered data)`);
    }
    const flag = plaintext[0];
    const body = plaintext.subarray(1);
    if (flag !== FLAG_PLAIN && flag !== FLAG_DEFLATE) throw new PayloadDecryptionError(`payload for key "${keyId}" has unknown flags ${flag}`);
    let serialized = body;
    if (flag === FLAG_DEFLATE) {
      try {
        serialized = await inflate(body, { maxOutputLength: MAX_INFLATED_BYTES });
      } catch {
        throw new PayloadDecryptionError(`payload for key "${keyId}" does not inflate within ${MAX_INFLATED_BYTES} bytes`);
      }
    }
    return PayloadProto.decode(serialized);
  }
}

export function isEncrypted(payload: Payload): boolean {
  return text(payload.metadata?.encoding) === ENCRYPTED_ENCODING;
}

/**
 * Encodes error messages and stack traces as payloads (so the codec encrypts them). The same
 * relative path from server/ and from dist/ (the image copies workflows/encoded-failures.cjs).
 */
export const FAILURE_CONVERTER_PATH = fileURLToPath(new URL('../workflows/encoded-failures.cjs', import.meta.url));

/** What a Client, a Worker or a replay takes as `dataConverter`: the codec and encoded failures, or the SDK's defaults. */
export function codecDataConverter(codec: PayloadCodec | null): DataConverter {
  return codec ? { payloadCodecs: [codec], failureConverterPath: FAILURE_CONVERTER_PATH } : {};
}
