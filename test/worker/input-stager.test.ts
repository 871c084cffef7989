import { lstatSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/cas/blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import { re } from '../../src/proto.js';
import { InputStager } from '../../src/worker/input-stager.js';
import type { InputTree } from '../../src/worker/input-tree.js';

/**
 * Staging writes an input root the same whichever way it makes its file system calls: a small
 * root (a few entries: synchronous calls on the daemon's thread) and a large one (through the
 * thread pool) come out with the same contents, modes and symlinks.
 */
describe('InputStager', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-stager-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const blobs = new Map<string, Uint8Array>();
  const cas = { get: async (d: Digest) => blobs.get(d.key) } as unknown as BlobStore;
  const stager = new InputStager(cas, { localFile: () => undefined }, join(dir, 'cache'));

  function treeOf(extraFiles: number): InputTree {
    const directories = new Map<string, re.Directory>();
    const files = new Map<string, Digest>();
    let fileCount = 0;
    const blob = (data: string): Digest => {
      const bytes = Buffer.from(data);
      const d = Digest.compute(bytes);
      blobs.set(d.key, bytes);
      files.set(d.key, d);
      fileCount++;
      return d;
    };
    const add = (msg: re.IDirectory): Digest => {
      const m = re.Directory.create(msg);
      const bytes = re.Directory.encode(m).finish();
      const d = Digest.compute(bytes);
      directories.set(d.key, re.Directory.decode(bytes));
      return d;
    };
    const deeper = add({ files: [{ name: 'leaf.txt', digest: blob('leaf\n').toProto() }] });
    const sub = add({ directories: [{ name: 'deeper', digest: deeper.toProto() }] });
    const many = add({ files: Array.from({ length: extraFiles }, (_, i) => ({ name: `f${String(i).padStart(4, '0')}`, digest: blob(`file ${i}\n`).toProto() })) });
    const root = add({
      files: [
        { name: 'data.txt', digest: blob('data\n').toProto(), nodeProperties: { unixMode: { value: 0o600 } } },
        { name: 'tool', digest: blob('#!/bin/sh\necho tool\n').toProto(), isExecutable: true },
      ],
      directories: [
        ...(extraFiles ? [{ name: 'many', digest: many.toProto() }] : []),
        { name: 'sub', digest: sub.toProto() },
      ],
      symlinks: [{ name: 'link', target: 'data.txt' }],
    });
    return { root, directories, files, fileCount };
  }

  const describeRoot = (root: string) => ({
    names: readdirSync(root).sort(),
    data: [readFileSync(join(root, 'data.txt'), 'utf8'), lstatSync(join(root, 'data.txt')).mode & 0o7777],
    tool: [readFileSync(join(root, 'tool'), 'utf8'), lstatSync(join(root, 'tool')).mode & 0o7777],
    link: readlinkSync(join(root, 'link')),
    leaf: readFileSync(join(root, 'sub', 'deeper', 'leaf.txt'), 'utf8'),
  });

  it('stages a small and a large input root alike', async () => {
    const small = join(dir, 'small');
    const large = join(dir, 'large');
    await stager.stage(treeOf(0), small, { honourReadOnly: false });
    await stager.stage(treeOf(300), large, { honourReadOnly: false });
    expect(describeRoot(small)).toEqual({ names: ['data.txt', 'link', 'sub', 'tool'], data: ['data\n', 0o600], tool: ['#!/bin/sh\necho tool\n', 0o755], link: 'data.txt', leaf: 'leaf\n' });
    expect({ ...describeRoot(large), names: describeRoot(small).names }).toEqual(describeRoot(small));
    expect(readdirSync(join(large, 'many'))).toHaveLength(300);
    expect(readFileSync(join(large, 'many', 'f0299'), 'utf8')).toBe('file 299\n');
  });
});
