import { describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { BLAKE3, DIGEST_FUNCTIONS, SHA1, SHA256, SHA384, digestFunctionFromValue } from '../../src/digest/digest-function.js';
import { Code, StatusError } from '../../src/util/status-error.js';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function codeOf(fn: () => unknown): { code: Code; message: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof StatusError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('did not throw');
}

describe('Digest', () => {
  it('knows the empty blob for every function', () => {
    expect(Digest.empty().hash).toBe(EMPTY_SHA256);
    expect(Digest.empty().isEmpty).toBe(true);
    expect(Digest.compute(new Uint8Array()).isEmpty).toBe(true);
    expect(Digest.empty(SHA1).isEmpty).toBe(true);
    // The empty hash with a non-zero size is not the empty blob.
    expect(Digest.of(SHA256, EMPTY_SHA256, 3).isEmpty).toBe(false);
  });

  it('prints as hash/size and compares by function, hash and size', () => {
    const d = Digest.compute(Buffer.from('abc'));
    expect(d.toString()).toBe(`${d.hash}/3`);
    expect(d.equals(Digest.of(SHA256, d.hash, 3))).toBe(true);
    expect(d.equals(Digest.of(SHA256, d.hash, 4))).toBe(false);
    expect(d.toProto()).toEqual({ hash: d.hash, sizeBytes: 3 });
  });

  it('fromProto refuses malformed digests, naming the field and value', () => {
    for (const bad of [
      { hash: 'abc', sizeBytes: 3 },
      { hash: EMPTY_SHA256.toUpperCase(), sizeBytes: 0 },
      { hash: EMPTY_SHA256 + '0', sizeBytes: 0 },
      { hash: 'g'.repeat(64), sizeBytes: 0 },
      { hash: EMPTY_SHA256, sizeBytes: -1 },
      { hash: '', sizeBytes: 0 },
    ]) {
      const e = codeOf(() => Digest.fromProto(bad, SHA256, 'blob_digests[7]'));
      expect(e.code).toBe(Code.INVALID_ARGUMENT);
      expect(e.message).toContain('blob_digests[7]');
      if (bad.hash) expect(e.message).toContain(bad.hash);
    }
    expect(codeOf(() => Digest.fromProto(undefined, SHA256, 'action_digest')).message).toContain('action_digest');
  });

  it('fromRequest infers the function from the hash length when digest_function is unset', () => {
    const sha1 = Digest.compute(Buffer.from('x'), SHA1);
    expect(Digest.fromRequest(sha1.toProto(), 0).fn).toBe(SHA1);
    expect(Digest.fromRequest(Digest.compute(Buffer.from('x'), SHA384).toProto(), undefined).fn).toBe(SHA384);
    expect(Digest.fromRequest({ hash: EMPTY_SHA256, sizeBytes: 0 }, 1).fn).toBe(SHA256);
    // An explicit function wins, so a SHA-1 hash with digest_function=SHA256 is malformed.
    expect(codeOf(() => Digest.fromRequest(sha1.toProto(), 1)).code).toBe(Code.INVALID_ARGUMENT);
  });

  it('refuses digest functions it does not serve, naming them', () => {
    const e = codeOf(() => digestFunctionFromValue(3));
    expect(e.code).toBe(Code.INVALID_ARGUMENT);
    expect(e.message).toContain('MD5');
    expect(digestFunctionFromValue(0)).toBe(SHA256);
  });
});

describe('BLAKE3', () => {
  // The test vectors of the BLAKE3 reference implementation.
  const EMPTY_BLAKE3 = 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262';
  const ABC_BLAKE3 = '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85';

  it('is served (the prebuilt binding loaded) after SHA-256, which stays the default', () => {
    expect(BLAKE3).toBeDefined();
    expect(DIGEST_FUNCTIONS[0]).toBe(SHA256);
    expect(DIGEST_FUNCTIONS).toContain(BLAKE3);
    expect(digestFunctionFromValue(9)).toBe(BLAKE3);
    expect(BLAKE3!.name).toBe('blake3');
    expect(BLAKE3!.hexLength).toBe(64);
  });

  it('hashes the known test vectors, whole and incrementally', () => {
    const fn = BLAKE3!;
    expect(fn.emptyHash).toBe(EMPTY_BLAKE3);
    expect(Digest.empty(fn).hash).toBe(EMPTY_BLAKE3);
    expect(Digest.compute(new Uint8Array(), fn).isEmpty).toBe(true);
    expect(Digest.compute(Buffer.from('abc'), fn).hash).toBe(ABC_BLAKE3);
    expect(fn.newHash().update(Buffer.from('a')).update(Buffer.from('bc')).digest('hex')).toBe(ABC_BLAKE3);
    // A view into a larger buffer hashes only its own bytes.
    const big = Buffer.from('xxabcxx');
    expect(fn.newHash().update(big.subarray(2, 5)).digest('hex')).toBe(ABC_BLAKE3);
    expect(fn.newHash().update(new Uint8Array([0, 97, 98, 99, 0]).subarray(1, 4)).digest('hex')).toBe(ABC_BLAKE3);
    // Chunked hashing of a multi-chunk (> 1 KiB) input equals hashing it whole.
    const data = Buffer.alloc(300_000, 0).map((_, i) => i % 251);
    const h = fn.newHash();
    for (let o = 0; o < data.length; o += 7_000) h.update(data.subarray(o, o + 7_000));
    expect(h.digest('hex')).toBe(Digest.compute(data, fn).hash);
    expect(Digest.compute(data, fn).hash).not.toBe(Digest.compute(data, SHA256).hash);
  });

  it('is never inferred: an unlabelled 64-digit hash is SHA-256', () => {
    expect(Digest.fromRequest({ hash: EMPTY_BLAKE3, sizeBytes: 0 }, 0).fn).toBe(SHA256);
    expect(Digest.fromRequest({ hash: EMPTY_BLAKE3, sizeBytes: 0 }, undefined).fn).toBe(SHA256);
    const d = Digest.fromRequest({ hash: EMPTY_BLAKE3, sizeBytes: 0 }, 9);
    expect(d.fn).toBe(BLAKE3);
    expect(d.isEmpty).toBe(true);
    // The same hash text under SHA-256 and BLAKE3 are different storage keys.
    expect(d.key).not.toBe(Digest.of(SHA256, EMPTY_BLAKE3, 0).key);
    expect(Digest.of(SHA256, EMPTY_BLAKE3, 0).isEmpty).toBe(false);
  });
});
