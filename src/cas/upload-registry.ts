import type { BlobWriter } from './blob-store.js';

interface PartialUpload {
  writer: BlobWriter;
  /** A stream is writing to it right now. */
  busy: boolean;
  lastActive: number;
  /** Resolves when the stream writing it lets go (see settled()). */
  idle: Promise<void>;
  markIdle: () => void;
}

function markBusy(entry: PartialUpload): void {
  entry.busy = true;
  entry.idle = new Promise((resolve) => (entry.markIdle = resolve));
}

/**
 * Uploads that a broken stream left half done, so that a client can ask QueryWriteStatus and
 * resume with write_offset. Keyed by the whole resource name (UUID and digest) and never by
 * the UUID alone: BuildStream 1.6 reuses one UUID for every upload of a process, sometimes
 * concurrently. A stream that finds its name busy gets a private upload of its own.
 */
export class UploadRegistry {
  private readonly uploads = new Map<string, PartialUpload>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly idleMs = 10 * 60 * 1000) {
    this.timer = setInterval(() => void this.expire(), Math.min(idleMs, 60_000));
    this.timer.unref();
  }

  /**
   * Wait (at most timeoutMs) until no stream writes `name`. A client that breaks a stream and
   * asks QueryWriteStatus or resumes at once can get there before the server has processed
   * the break; the stream is still busy with the chunks it had received.
   */
  async settled(name: string, timeoutMs = 2000): Promise<void> {
    const entry = this.uploads.get(name);
    if (!entry?.busy) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([entry.idle, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** Bytes a resumable upload holds, or undefined when none is known. */
  committed(name: string): number | undefined {
    return this.uploads.get(name)?.writer.written;
  }

  /**
   * The writer a stream starting at `offset` should use: the parked one when it is idle and
   * holds exactly `offset` bytes, else a new one (offset 0 only). Returns undefined when a
   * non-zero offset cannot be resumed.
   */
  async acquire(name: string, offset: number, create: () => Promise<BlobWriter>): Promise<{ writer: BlobWriter; release: (keep: boolean) => Promise<void> } | undefined> {
    if (offset !== 0) await this.settled(name);
    const parked = this.uploads.get(name);
    if (parked && !parked.busy && parked.writer.written === offset) {
      markBusy(parked);
      return { writer: parked.writer, release: (keep) => this.release(name, parked, keep) };
    }
    if (offset !== 0) return undefined;
    const writer = await create();
    if (parked && !parked.busy) {
      this.uploads.delete(name);
      await parked.writer.abort();
    }
    if (this.uploads.has(name)) {
      // Another stream is writing the same name (a reused UUID): keep this one private.
      return { writer, release: async (keep) => void (keep ? undefined : await writer.abort()) };
    }
    const entry: PartialUpload = { writer, busy: true, lastActive: Date.now(), idle: Promise.resolve(), markIdle: () => undefined };
    markBusy(entry);
    this.uploads.set(name, entry);
    return { writer, release: (keep) => this.release(name, entry, keep) };
  }

  private async release(name: string, entry: PartialUpload, keep: boolean): Promise<void> {
    entry.busy = false;
    entry.markIdle();
    entry.lastActive = Date.now();
    if (!keep) {
      if (this.uploads.get(name) === entry) this.uploads.delete(name);
      await entry.writer.abort();
    }
  }

  private async expire(): Promise<void> {
    const cutoff = Date.now() - this.idleMs;
    for (const [name, entry] of this.uploads) {
      if (!entry.busy && entry.lastActive < cutoff) {
        this.uploads.delete(name);
        await entry.writer.abort().catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const entry of this.uploads.values()) await entry.writer.abort().catch(() => undefined);
    this.uploads.clear();
  }
}
