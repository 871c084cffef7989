import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLocalCas } from '../../src/storage/create-storage.js';
import { treeFromDirectory } from '../../src/client/merkle.js';
import { diffLists, diffValues } from '../../src/history/explain.js';
import { diffTrees, summarizeTree } from '../../src/history/tree-diff.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';

describe('explain: lists and values', () => {
  it('arguments: the shortest edit, removals first', () => {
    expect(diffLists(['gcc', '-O2', '-c', 'a.c'], ['gcc', '-O3', '-c', 'a.c'])).toEqual([
      { op: '-', index: 1, value: '-O2' },
      { op: '+', index: 1, value: '-O3' },
    ]);
    expect(diffLists(['cc', 'a.c'], ['cc', '-g', 'a.c', '-o', 'a'])).toEqual([
      { op: '+', index: 1, value: '-g' },
      { op: '+', index: 3, value: '-o' },
      { op: '+', index: 4, value: 'a' },
    ]);
    expect(diffLists(['x'], ['x'])).toEqual([]);
  });

  it('environment and platform: by name, several values of a name together', () => {
    expect(
      diffValues(
        [['PATH', '/bin'], ['CC', 'gcc'], ['ISA', 'x86-64']],
        [['PATH', '/usr/bin'], ['ISA', 'x86-64'], ['ISA', 'x86-32'], ['LANG', 'C']],
      ),
    ).toEqual([
      { name: 'CC', before: 'gcc' },
      { name: 'ISA', before: 'x86-64', after: 'x86-64, x86-32' },
      { name: 'LANG', after: 'C' },
      { name: 'PATH', before: '/bin', after: '/usr/bin' },
    ]);
  });
});

describe('explain: input trees', () => {
  let dir: string;
  let env: LmdbEnv | undefined;
  afterEach(async () => {
    await env?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists added, removed and changed entries by path, and reads only the Directories that differ', async () => {
    dir = mkdtempSync(join(tmpdir(), 'reexec-tree-diff-'));
    env = LmdbEnv.open(join(dir, 'data'));
    const { store } = createLocalCas(env, join(dir, 'data'), { inlineMaxBytes: 65536, fsync: false, touchIntervalSeconds: 0 });
    const a = join(dir, 'a');
    for (const d of ['src/lib', 'same/deep/er', 'gone/sub']) mkdirSync(join(a, d), { recursive: true });
    writeFileSync(join(a, 'src', 'main.c'), 'int main(void) { return 0; }\n');
    writeFileSync(join(a, 'src', 'lib', 'util.c'), 'int util;\n');
    writeFileSync(join(a, 'src', 'run.sh'), 'echo hi\n');
    writeFileSync(join(a, 'same', 'deep', 'er', 'big.txt'), 'x'.repeat(10_000));
    writeFileSync(join(a, 'gone', 'sub', 'old.txt'), 'old\n');
    writeFileSync(join(a, 'kind'), 'a file\n');
    symlinkSync('src/main.c', join(a, 'link'));
    const before = await treeFromDirectory(a);

    writeFileSync(join(a, 'src', 'main.c'), 'int main(void) { return 1; }\n');
    chmodSync(join(a, 'src', 'run.sh'), 0o755);
    rmSync(join(a, 'gone'), { recursive: true });
    mkdirSync(join(a, 'new', 'dir'), { recursive: true });
    writeFileSync(join(a, 'new', 'dir', 'added.h'), '#pragma once\n');
    unlinkSync(join(a, 'kind'));
    mkdirSync(join(a, 'kind'));
    unlinkSync(join(a, 'link'));
    symlinkSync('src/lib/util.c', join(a, 'link'));
    const after = await treeFromDirectory(a);
    for (const t of [before, after]) for (const b of t.blobs.values()) await store.put(b.digest, b.data);

    const d = await diffTrees(store, before.root, after.root);
    expect(d.problems).toEqual([]);
    expect(d.changes.map((c) => `${c.change} ${c.kind} ${c.path}${c.what ? ` (${c.what})` : ''}`)).toEqual([
      'removed file gone/sub/old.txt',
      'changed file→directory kind (kind)',
      'changed symlink link (target)',
      'added file new/dir/added.h',
      'changed file src/main.c (content)',
      'changed file src/run.sh (executable)',
    ]);
    const main = d.changes.find((c) => c.path === 'src/main.c')!;
    expect(main.before).toMatch(/^[0-9a-f]{64}\/29$/);
    expect(main.after).toMatch(/^[0-9a-f]{64}\/29$/);
    expect(main.before).not.toBe(main.after);
    expect(d.changes.find((c) => c.path === 'link')).toMatchObject({ before: 'src/main.c', after: 'src/lib/util.c' });

    // A bound on what is listed: the rest is counted.
    const short = await diffTrees(store, before.root, after.root, { maxChanges: 2 });
    expect(short.changes).toHaveLength(2);
    expect(short.notListed).toBe(4);

    const s = await summarizeTree(store, after.root);
    expect(s).toMatchObject({ files: 5, symlinks: 1, complete: true });
    expect(s.largest[0]).toEqual({ path: 'same/deep/er/big.txt', bytes: 10_000 });
  });
});
