import { describe, expect, it } from 'vitest';
import { re } from '../../src/proto.js';
import { canonicalDirectory } from '../../src/worker/output-collector.js';

const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const hex = (m: re.IDirectory): string => Buffer.from(re.Directory.encode(m).finish()).toString('hex');

describe('output Directory messages', () => {
  it('encode canonically: no field set to its default value', () => {
    // What the collector builds for an empty, non-executable file with an mtime on a whole second.
    const built: re.IDirectory = {
      files: [{ name: 'a', digest: { hash: EMPTY, sizeBytes: 0 }, isExecutable: false, nodeProperties: { mtime: { seconds: 5, nanos: 0 } } }],
      directories: [{ name: 'd', digest: { hash: EMPTY, sizeBytes: 7 } }],
      symlinks: [{ name: 'l', target: 'a' }],
    };
    // protobufjs writes fields that are set, even to false or 0: not canonical.
    expect(hex(built)).toContain('2000');
    const canonical = hex(canonicalDirectory(built));
    expect(canonical).toBe(
      hex({
        files: [{ name: 'a', digest: { hash: EMPTY }, nodeProperties: { mtime: { seconds: 5 } } }],
        directories: [{ name: 'd', digest: { hash: EMPTY, sizeBytes: 7 } }],
        symlinks: [{ name: 'l', target: 'a' }],
      }),
    );
    // Round trip through a decoder and encoder (what buildbox-casd does) changes nothing.
    expect(hex(re.Directory.decode(Buffer.from(canonical, 'hex')))).toBe(canonical);
  });

  it('keep executable bits, sizes, modes and present-but-empty messages', () => {
    const d = canonicalDirectory({
      files: [{ name: 'x', digest: { hash: EMPTY, sizeBytes: 3 }, isExecutable: true, nodeProperties: { unixMode: { value: 0o755 }, mtime: { seconds: 0, nanos: 0 } } }],
    });
    expect(d.files![0]).toEqual({ name: 'x', digest: { hash: EMPTY, sizeBytes: 3 }, isExecutable: true, nodeProperties: { unixMode: { value: 0o755 }, mtime: {} } });
    expect(canonicalDirectory({ files: [], directories: [], symlinks: [] })).toEqual({});
  });
});
