import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

// Regression: streamed reads of file-backed blobs handed the stream a FileHandle's raw fd; the
// stream closed it, then garbage collection of the FileHandle failed to close it again (EBADF)
// and killed the daemon, minutes after `bst pull` had read its artifacts.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('reading a file-backed blob', () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('leaves nothing for garbage collection to close', async () => {
    const data = Buffer.alloc(300_000, 'x');
    const digest = Digest.compute(data);
    await d.daemon.cas.put(digest, data);
    const errors: unknown[] = [];
    const onError = (err: unknown) => errors.push(err);
    process.on('uncaughtException', onError);
    try {
      for (let i = 0; i < 5; i++) {
        const chunks = await d.daemon.cas.read(digest, i, 0);
        let n = 0;
        for await (const c of chunks!) n += c.byteLength;
        expect(n).toBe(data.length - i);
      }
      // An abandoned read (a cancelled ByteStream.Read) must release its descriptor too.
      const partial = await d.daemon.cas.read(digest, 0, 0);
      for await (const _ of partial!) break;
      for (let i = 0; i < 5; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      process.off('uncaughtException', onError);
    }
    expect(errors).toEqual([]);
  });
});
