import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import type { BlobWriter } from '../../src/cas/blob-store.js';
import { UploadRegistry } from '../../src/cas/upload-registry.js';

class FakeWriter implements BlobWriter {
  written = 0;
  aborted = false;
  async write(chunk: Uint8Array): Promise<void> {
    this.written += chunk.byteLength;
  }
  async commit(): Promise<void> {}
  async abort(): Promise<void> {
    this.aborted = true;
  }
}

const NAME = 'uploads/u-1/blobs/aa/10';

describe('UploadRegistry (resumable ByteStream writes)', () => {
  let reg: UploadRegistry;
  afterEach(() => reg.close());

  it('keeps a broken upload so QueryWriteStatus sees its bytes and a Write resumes it at that offset', async () => {
    reg = new UploadRegistry();
    const w = new FakeWriter();
    const a = (await reg.acquire(NAME, 0, async () => w))!;
    await a.writer.write(new Uint8Array(4));
    await a.release(true);
    expect(reg.committed(NAME)).toBe(4);
    expect(await reg.acquire(NAME, 3, async () => new FakeWriter())).toBeUndefined();
    const b = (await reg.acquire(NAME, 4, async () => new FakeWriter()))!;
    expect(b.writer).toBe(w);
    await b.release(false);
    expect(reg.committed(NAME)).toBeUndefined();
    expect(w.aborted).toBe(true);
  });

  it('a new upload from offset 0 replaces an idle parked one', async () => {
    reg = new UploadRegistry();
    const old = new FakeWriter();
    const a = (await reg.acquire(NAME, 0, async () => old))!;
    await a.writer.write(new Uint8Array(4));
    await a.release(true);
    const fresh = new FakeWriter();
    const b = (await reg.acquire(NAME, 0, async () => fresh))!;
    expect(b.writer).toBe(fresh);
    expect(old.aborted).toBe(true);
    await b.release(false);
  });

  it('a name in use by another stream (a reused UUID) gets a private writer; both work', async () => {
    reg = new UploadRegistry();
    const first = new FakeWriter();
    const second = new FakeWriter();
    const a = (await reg.acquire(NAME, 0, async () => first))!;
    const b = (await reg.acquire(NAME, 0, async () => second))!;
    expect(b.writer).toBe(second);
    await b.writer.write(new Uint8Array(10));
    await b.release(false);
    expect(first.aborted).toBe(false);
    expect(reg.committed(NAME)).toBe(0);
    await a.release(false);
  });

  it('forgets uploads idle for longer than its limit', async () => {
    reg = new UploadRegistry(50);
    const w = new FakeWriter();
    const a = (await reg.acquire(NAME, 0, async () => w))!;
    await a.release(true);
    await waitFor('the idle upload to be forgotten', () => reg.committed(NAME) === undefined);
    expect(w.aborted).toBe(true);
  });
});

describe('UploadRegistry.settled', () => {
  it('waits for the stream writing a name to let go, so a resume right after a break finds its bytes', async () => {
    const reg = new UploadRegistry();
    const w = new FakeWriter();
    const a = (await reg.acquire(NAME, 0, async () => w))!;
    await a.writer.write(new Uint8Array(3));
    // The broken stream is still busy writing a chunk it received before the break: the
    // resume asks first, and must wait for that chunk.
    const resuming = reg.acquire(NAME, 5, async () => new FakeWriter());
    await a.writer.write(new Uint8Array(2));
    await a.release(true);
    const resumed = await resuming;
    expect(resumed?.writer).toBe(w);
    await resumed!.release(true);
    expect(reg.committed(NAME)).toBe(5);
    await reg.close();
  });

  it('gives up waiting after its timeout', async () => {
    const reg = new UploadRegistry();
    await reg.acquire(NAME, 0, async () => new FakeWriter());
    // Nobody lets go of it: resolving at all is giving up.
    await reg.settled(NAME, 50);
    await reg.close();
  });
});
