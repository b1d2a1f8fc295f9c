/**
 * The payload codec on its own (server/payload-codec.ts) and its config (server/codec-config.ts):
 * what it writes cannot be read without the key, rotation needs no migration, a payload naming a
 * key the ring lacks fails naming that key, and payloads from before the codec pass through.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../server/config.js';
import { EncryptingPayloadCodec, isEncrypted, parseKeyMaterial, PayloadDecryptionError, UnknownCodecKeyError } from '../server/payload-codec.js';

const keyA = { id: 'key-a', key: randomBytes(32) };
const keyB = { id: 'key-b', key: randomBytes(32) };
const MARKER = 'marker-secret-7f3a91c2';
const text = (payload: Payload) => Buffer.from(payload.data ?? []).toString('latin1') + Object.values(payload.metadata ?? {}).map((v) => Buffer.from(v).toString('latin1')).join('');
const toPayload = (value: unknown) => defaultPayloadConverter.toPayload(value) as Payload;
const fromPayload = (payload: Payload | undefined) => defaultPayloadConverter.fromPayload(payload as Payload);

describe('payload codec', () => {
  it('when a payload is encoded, then its content and encoding are gone from the bytes, and decoding gives back the same payload', async () => {
    const codec = new EncryptingPayloadCodec([keyA], { compress: true });
    const original = toPayload({ stdout: `root ${MARKER}\n`, exitCode: 0 });
    const [encoded] = await codec.encode([original]);
    expect(isEncrypted(encoded as Payload)).toBe(true);
    expect(Buffer.from(encoded?.metadata?.['encryption-key-id'] ?? []).toString()).toBe('key-a');
    expect(text(encoded as Payload)).not.toContain(MARKER);
    expect(text(encoded as Payload)).not.toContain('json/plain');
    expect(fromPayload((await codec.decode([encoded as Payload]))[0])).toEqual({ stdout: `root ${MARKER}\n`, exitCode: 0 });
  });

  it('when the same payload is encoded twice, then the ciphertexts differ (a fresh IV each time)', async () => {
    const codec = new EncryptingPayloadCodec([keyA], { compress: false });
    const [one, two] = await codec.encode([toPayload('same'), toPayload('same')]);
    expect(Buffer.from(one?.data ?? []).equals(Buffer.from(two?.data ?? []))).toBe(false);
  });

  it('when compression is on, then a large repetitive payload is stored smaller than without it, and both decode', async () => {
    const big = toPayload({ output: `${MARKER} `.repeat(2_000) });
    const [compressed] = await new EncryptingPayloadCodec([keyA], { compress: true }).encode([big]);
    const [plain] = await new EncryptingPayloadCodec([keyA], { compress: false }).encode([big]);
    expect(compressed?.data?.length).toBeLessThan((plain?.data?.length ?? 0) / 10);
    const ring = new EncryptingPayloadCodec([keyA], { compress: false });
    for (const encoded of [compressed, plain]) expect(fromPayload((await ring.decode([encoded as Payload]))[0])).toEqual({ output: `${MARKER} `.repeat(2_000) });
  });

  it('when key B becomes the encrypting key, then what A wrote still decodes, new payloads carry B, and a ring without A fails naming "key-a"', async () => {
    const [writtenWithA] = await new EncryptingPayloadCodec([keyA], { compress: true }).encode([toPayload('from the A days')]);
    const rotated = new EncryptingPayloadCodec([keyB, keyA], { compress: true });
    expect(fromPayload((await rotated.decode([writtenWithA as Payload]))[0])).toBe('from the A days');
    const [writtenWithB] = await rotated.encode([toPayload('after rotation')]);
    expect(Buffer.from(writtenWithB?.metadata?.['encryption-key-id'] ?? []).toString()).toBe('key-b');

    const onlyB = new EncryptingPayloadCodec([keyB], { compress: true });
    expect(fromPayload((await onlyB.decode([writtenWithB as Payload]))[0])).toBe('after rotation');
    const failure = await onlyB.decode([writtenWithA as Payload]).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(UnknownCodecKeyError);
    expect((failure as Error).message).toBe('payload codec: the payload was encrypted with key id "key-a", which is not in codec.keys (it has: "key-b")');
  });

  it('when other key material sits under the same id, or the data or key id was altered, then decoding fails instead of returning garbage', async () => {
    const [encoded] = (await new EncryptingPayloadCodec([keyA], { compress: false }).encode([toPayload('x')])) as [Payload];
    const impostor = new EncryptingPayloadCodec([{ id: 'key-a', key: randomBytes(32) }], { compress: false });
    await expect(impostor.decode([encoded])).rejects.toThrow(/key "key-a" does not authenticate/);
    const flipped = Buffer.from(encoded.data ?? []);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    const ring = new EncryptingPayloadCodec([keyA, { id: 'key-c', key: keyA.key }], { compress: false });
    await expect(ring.decode([{ ...encoded, data: flipped }])).rejects.toBeInstanceOf(PayloadDecryptionError);
    // The key id is authenticated: relabelled to another id holding the same bytes, it is refused.
    await expect(ring.decode([{ ...encoded, metadata: { ...encoded.metadata, 'encryption-key-id': Buffer.from('key-c') } }])).rejects.toThrow(/key "key-c" does not authenticate/);
    await expect(ring.decode([{ ...encoded, data: Buffer.from([1, 2, 3]) }])).rejects.toThrow(/truncated/);
  });

  it('when a payload was written before the codec (json/plain, binary/null), then decoding passes it through untouched', async () => {
    const codec = new EncryptingPayloadCodec([keyA], { compress: true });
    const plain = [toPayload({ verb: 'cycle' }), toPayload(undefined), toPayload(new Uint8Array([1, 2]))];
    expect(await codec.decode(plain)).toEqual(plain);
  });

  it('when key files are read, then base64 and hex of 32 bytes are keys and anything else is not', () => {
    const bytes = randomBytes(32);
    expect(parseKeyMaterial(`${bytes.toString('base64')}\n`)?.equals(bytes)).toBe(true);
    expect(parseKeyMaterial(bytes.toString('hex'))?.equals(bytes)).toBe(true);
    expect(parseKeyMaterial(bytes.toString('base64url'))?.equals(bytes)).toBe(true);
    expect(parseKeyMaterial(randomBytes(16).toString('base64'))).toBeNull();
    expect(parseKeyMaterial('correct horse battery staple')).toBeNull();
  });
});

describe('codec configuration', () => {
  let dir: string;
  const endpoints = {
    devvm: { host: 'devvm.lan', keyFile: '/keys/devvm', fingerprints: [`SHA256:${'B'.repeat(43)}`] },
    pve: { host: 'pve.lan', keyFile: '/keys/pve', fingerprints: [`SHA256:${'C'.repeat(43)}`] },
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bg-codec-config-'));
    await writeFile(join(dir, 'a.key'), `${keyA.key.toString('base64')}\n`);
    await writeFile(join(dir, 'b.key'), keyB.key.toString('hex'));
    await writeFile(join(dir, 'short.key'), 'tooshort');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const configError = (file: Record<string, unknown>, requireCodecKeys = false, env: NodeJS.ProcessEnv = {}) => {
    try {
      loadConfig({ env, file: { ...endpoints, ...file }, requireCodecKeys });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return error as ConfigError;
    }
    throw new Error('loadConfig accepted the config');
  };

  it('when keys are configured, then the ring holds them in order and the Web UI origin defaults to temporal.uiUrl\'s', () => {
    const config = loadConfig({ env: {}, requireCodecKeys: true, file: { ...endpoints, temporal: { uiUrl: 'https://temporal.example.com/namespaces/default' }, codec: { keys: [{ id: 'key-b', file: join(dir, 'b.key') }, { id: 'key-a', file: join(dir, 'a.key') }] } } });
    expect(config.codec.keys.map(({ id }) => id)).toEqual(['key-b', 'key-a']);
    expect(config.codec.keys[1]?.key.equals(keyA.key)).toBe(true);
    expect(config.codec).toMatchObject({ enabled: true, compress: true, webUiOrigins: ['https://temporal.example.com'] });
  });

  it('when a deployment has no keys, then it refuses to start naming codec.keys and the explicit way out', () => {
    const error = configError({}, true);
    expect(error.key).toBe('codec.keys');
    expect(error.message).toMatch(/codec\.enabled: false/);
  });

  it('when a deployment sets codec.enabled false (file or BREAKGLASS_CODEC_ENABLED), then it starts without keys and the config says disabled', () => {
    expect(loadConfig({ env: {}, requireCodecKeys: true, file: { ...endpoints, codec: { enabled: false } } }).codec).toMatchObject({ enabled: false, keys: [] });
    expect(loadConfig({ env: { BREAKGLASS_CODEC_ENABLED: 'false' }, requireCodecKeys: true, file: endpoints }).codec.enabled).toBe(false);
  });

  it.each([
    ['an unreadable key file', { keys: [{ id: 'key-a', file: join('/nonexistent', 'a.key') }] }, 'codec.keys[0].file', /key "key-a": cannot read \/nonexistent\/a\.key: ENOENT/],
    ['a file that holds no key', { keys: [{ id: 'tiny', file: 'SHORT' }] }, 'codec.keys[0].file', /key "tiny": .* holds 8 characters, not a key; a key is 32 random bytes/],
    ['a key id with a space', { keys: [{ id: 'key a', file: 'A' }] }, 'codec.keys[0].id', /"key a"/],
    ['a key id given twice', { keys: [{ id: 'key-a', file: 'A' }, { id: 'key-a', file: 'B' }] }, 'codec.keys[1].id', /"key-a" is given twice/],
    ['keys not a list', { keys: 'key-a' }, 'codec.keys', /list of \{ id, file \}/],
    ['enabled not a boolean', { enabled: 'no' }, 'codec.enabled', /true or false/],
    ['a Web UI origin that is no URL', { webUiOrigins: ['temporal'] }, 'codec.webUiOrigins[0]', /http\(s\) origin/],
  ])('when %s, then start-up is refused naming %s', (_what, codec, key, message) => {
    const files = (entries: unknown) => (Array.isArray(entries) ? entries.map((entry: { id: string; file: string }) => ({ ...entry, file: { A: join(dir, 'a.key'), B: join(dir, 'b.key'), SHORT: join(dir, 'short.key') }[entry.file] ?? entry.file })) : entries);
    const error = configError({ codec: { ...codec, ...('keys' in codec ? { keys: files(codec.keys) } : {}) } });
    expect(error.key).toBe(key);
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain(keyA.key.toString('base64'));
  });
});
