import { describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { BLAKE3, SHA1, SHA256, SHA512 } from '../../src/digest/digest-function.js';
import { InstanceName, InstancePolicy } from '../../src/digest/instance-name.js';
import { parseReadResourceName, parseWriteResourceName } from '../../src/digest/resource-name.js';
import { Code, StatusError } from '../../src/util/status-error.js';

const H = Digest.compute(Buffer.from('hello')).hash;
const H1 = Digest.compute(Buffer.from('hello'), SHA1).hash;
const H512 = Digest.compute(Buffer.from('hello'), SHA512).hash;
const UUID = '3f8c1a2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b';

/** The call throws INVALID_ARGUMENT whose message contains every `mentions`. */
function expectInvalid(fn: () => unknown, ...mentions: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected INVALID_ARGUMENT').toBeInstanceOf(StatusError);
  const se = caught as StatusError;
  expect(se.code).toBe(Code.INVALID_ARGUMENT);
  for (const m of mentions) expect(se.message).toContain(m);
}

describe('ByteStream read names', () => {
  it('parses "blobs/{hash}/{size}" with no instance (BuildStream 1.6)', () => {
    const n = parseReadResourceName(`blobs/${H}/5`);
    expect(n.instance.value).toBe('');
    expect(n.digest.hash).toBe(H);
    expect(n.digest.sizeBytes).toBe(5);
    expect(n.digest.fn).toBe(SHA256);
    expect(n.compressor).toBe('identity');
    expect(n.uploadId).toBeUndefined();
  });

  it('parses a multi-segment instance prefix', () => {
    const n = parseReadResourceName(`main/linux/blobs/${H}/5`);
    expect(n.instance.value).toBe('main/linux');
    expect(n.digest.toString()).toBe(`${H}/5`);
  });

  it('parses compressed-blobs/{compressor}/{hash}/{size}', () => {
    const n = parseReadResourceName(`inst/compressed-blobs/zstd/${H}/5`);
    expect(n.instance.value).toBe('inst');
    expect(n.compressor).toBe('zstd');
    expect(n.digest.hash).toBe(H);
  });

  it('honours a digest function segment, and infers SHA-1/SHA-512 from the hash length without one', () => {
    expect(parseReadResourceName(`blobs/sha256/${H}/5`).digest.fn).toBe(SHA256);
    expect(parseReadResourceName(`i/blobs/sha1/${H1}/5`).digest.fn).toBe(SHA1);
    expect(parseReadResourceName(`blobs/${H1}/5`).digest.fn).toBe(SHA1);
    expect(parseReadResourceName(`blobs/${H512}/5`).digest.fn).toBe(SHA512);
    expect(parseReadResourceName(`compressed-blobs/zstd/sha512/${H512}/5`).digest.fn).toBe(SHA512);
  });

  it('a digest function segment must match the hash length', () => {
    expectInvalid(() => parseReadResourceName(`blobs/sha1/${H}/5`), H);
  });

  it('refuses a digest function the server does not serve, naming it', () => {
    expectInvalid(() => parseReadResourceName(`blobs/md5/${H.slice(0, 32)}/5`), 'md5');
  });

  it('takes BLAKE3 only from a "blake3" segment: a bare 64-digit hash is SHA-256', () => {
    expect(parseReadResourceName(`blobs/blake3/${H}/5`).digest.fn).toBe(BLAKE3);
    expect(parseReadResourceName(`i/compressed-blobs/zstd/blake3/${H}/5`).digest.fn).toBe(BLAKE3);
    expect(parseWriteResourceName(`uploads/u-1/blobs/blake3/${H}/5`).digest.fn).toBe(BLAKE3);
    expect(parseWriteResourceName(`uploads/u-1/blobs/blake3/${H}/5/meta`).digest.fn).toBe(BLAKE3);
    expect(parseReadResourceName(`blobs/${H}/5`).digest.fn).toBe(SHA256);
    expect(parseWriteResourceName(`uploads/u-1/blobs/${H}/5`).digest.fn).toBe(SHA256);
  });

  it('refuses malformed names with INVALID_ARGUMENT naming the value', () => {
    expectInvalid(() => parseReadResourceName(''), 'resource_name');
    expectInvalid(() => parseReadResourceName(`${H}/5`), `"${H}/5"`);
    expectInvalid(() => parseReadResourceName(`blobs/${H}`), `blobs/${H}`);
    expectInvalid(() => parseReadResourceName(`blobs/${H}/-1`), '-1');
    expectInvalid(() => parseReadResourceName(`blobs/${H}/12x`), '12x');
    expectInvalid(() => parseReadResourceName(`blobs/${H}/99999999999999999999`), '99999999999999999999');
    expectInvalid(() => parseReadResourceName(`blobs/${H.toUpperCase()}/5`), H.toUpperCase());
    expectInvalid(() => parseReadResourceName(`blobs/${H.slice(1)}/5`), H.slice(1));
    expectInvalid(() => parseReadResourceName('blobs/not-a-hash/5'), 'not-a-hash');
    expectInvalid(() => parseReadResourceName(`compressed-blobs/lz4/${H}/5`), 'lz4');
    expectInvalid(() => parseReadResourceName(`a//b/blobs/${H}/5`), 'a//b');
    expectInvalid(() => parseReadResourceName(`../blobs/${H}/5`), '..');
  });

  it('refuses segments after the size: only upload names carry metadata', () => {
    expectInvalid(() => parseReadResourceName(`blobs/${H}/5/extra`), 'extra', 'after the size');
    expectInvalid(() => parseReadResourceName(`i/blobs/sha256/${H}/5/a/b`), 'a/b');
    expectInvalid(() => parseReadResourceName(`compressed-blobs/zstd/${H}/5/x`), '"x"');
    expectInvalid(() => parseReadResourceName(`blobs/${H}/5/`), 'after the size');
  });

  it('applies the instance policy', () => {
    const policy = new InstancePolicy(['', 'main']);
    expect(parseReadResourceName(`main/blobs/${H}/5`, policy).instance.value).toBe('main');
    expect(parseReadResourceName(`blobs/${H}/5`, policy).instance.value).toBe('');
    expectInvalid(() => parseReadResourceName(`other/blobs/${H}/5`, policy), '"other"');
  });
});

describe('ByteStream write names', () => {
  it('parses "uploads/{uuid}/blobs/{hash}/{size}" with and without an instance', () => {
    const a = parseWriteResourceName(`uploads/${UUID}/blobs/${H}/5`);
    expect(a.instance.value).toBe('');
    expect(a.uploadId).toBe(UUID);
    expect(a.digest.toString()).toBe(`${H}/5`);
    const b = parseWriteResourceName(`my/inst/uploads/${UUID}/blobs/${H}/5`);
    expect(b.instance.value).toBe('my/inst');
    expect(b.uploadId).toBe(UUID);
  });

  it('accepts trailing metadata after the size', () => {
    const n = parseWriteResourceName(`uploads/${UUID}/blobs/${H}/5/some/metadata`);
    expect(n.digest.toString()).toBe(`${H}/5`);
    const c = parseWriteResourceName(`i/uploads/${UUID}/compressed-blobs/zstd/${H}/5/meta`);
    expect(c.compressor).toBe('zstd');
    expect(c.digest.toString()).toBe(`${H}/5`);
  });

  it('parses compressed uploads and a digest function segment', () => {
    const n = parseWriteResourceName(`i/uploads/${UUID}/compressed-blobs/zstd/sha256/${H}/5`);
    expect(n.compressor).toBe('zstd');
    expect(n.digest.fn).toBe(SHA256);
    expect(parseWriteResourceName(`uploads/${UUID}/blobs/sha1/${H1}/5`).digest.fn).toBe(SHA1);
  });

  it('refuses malformed upload names with INVALID_ARGUMENT naming the value', () => {
    expectInvalid(() => parseWriteResourceName(''), 'resource_name');
    expectInvalid(() => parseWriteResourceName(`blobs/${H}/5`), `"blobs/${H}/5"`);
    expectInvalid(() => parseWriteResourceName(`uploads/blobs/${H}/5`), `uploads/blobs/${H}/5`);
    expectInvalid(() => parseWriteResourceName(`uploads/${UUID}/${H}/5`), `uploads/${UUID}/${H}/5`);
    expectInvalid(() => parseWriteResourceName(`uploads/${UUID}/blobs/${H}`), `uploads/${UUID}/blobs/${H}`);
    expectInvalid(() => parseWriteResourceName(`uploads/${UUID}/blobs/xyz/5`), 'xyz');
    expectInvalid(() => parseWriteResourceName(`uploads/${UUID}/blobs/${H}/five`), 'five');
    expectInvalid(() => parseWriteResourceName(`a/./b/uploads/${UUID}/blobs/${H}/5`), 'a/./b');
  });
});

describe('InstanceName', () => {
  it('accepts "" and nested names, refuses reserved words and empty segments, naming the value', () => {
    expect(InstanceName.parse('')).toBe(InstanceName.DEFAULT);
    expect(InstanceName.parse(undefined).value).toBe('');
    expect(InstanceName.parse('a/b-c/d_e').value).toBe('a/b-c/d_e');
    expectInvalid(() => InstanceName.parse('a/blobs'), '"a/blobs"', 'blobs');
    expectInvalid(() => InstanceName.parse('uploads'), 'uploads');
    expectInvalid(() => InstanceName.parse('a/'), '"a/"');
    expectInvalid(() => InstanceName.parse('/a'), '"/a"');
  });
});
