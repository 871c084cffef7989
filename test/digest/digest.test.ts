import { describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { SHA1, SHA256, SHA384, digestFunctionFromValue } from '../../src/digest/digest-function.js';
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
    const e = codeOf(() => digestFunctionFromValue(9));
    expect(e.code).toBe(Code.INVALID_ARGUMENT);
    expect(e.message).toContain('BLAKE3');
    expect(digestFunctionFromValue(0)).toBe(SHA256);
  });
});
