import type { Digest } from '../digest/digest.js';
import type { Hasher } from '../digest/digest-function.js';
import { invalidArgument } from '../util/status-error.js';
import { ForwardingBlobStore, type BlobWriter, type StoreCallOptions } from './blob-store.js';

/**
 * Nothing enters the store unless its size and hash match its digest. Mismatches are
 * INVALID_ARGUMENT naming the digest and what the data really is.
 */
export class VerifyingBlobStore extends ForwardingBlobStore {
  override async put(digest: Digest, data: Uint8Array, options?: StoreCallOptions): Promise<void> {
    if (data.byteLength !== digest.sizeBytes) {
      throw invalidArgument(`blob ${digest}: the data is ${data.byteLength} bytes, but the digest says ${digest.sizeBytes}`);
    }
    const actual = digest.fn.newHash().update(data).digest('hex');
    if (actual !== digest.hash) throw hashMismatch(digest, actual);
    await this.base.put(digest, data, options);
  }

  override async beginWrite(digest: Digest, options?: StoreCallOptions): Promise<BlobWriter> {
    return new VerifyingWriter(digest, await this.base.beginWrite(digest, options));
  }
}

function hashMismatch(digest: Digest, actual: string): Error {
  return invalidArgument(`blob ${digest}: the data's ${digest.fn.name.toUpperCase()} hash is ${actual}, not ${digest.hash}`);
}

class VerifyingWriter implements BlobWriter {
  private readonly hash: Hasher;
  written = 0;
  constructor(
    private readonly digest: Digest,
    private readonly base: BlobWriter,
  ) {
    this.hash = digest.fn.newHash();
  }
  async write(chunk: Uint8Array): Promise<void> {
    if (this.written + chunk.byteLength > this.digest.sizeBytes) {
      throw invalidArgument(
        `blob ${this.digest}: received ${this.written + chunk.byteLength} bytes, more than the ${this.digest.sizeBytes} its digest declares`,
      );
    }
    this.hash.update(chunk);
    await this.base.write(chunk);
    this.written += chunk.byteLength;
  }
  async commit(): Promise<void> {
    if (this.written !== this.digest.sizeBytes) {
      await this.base.abort();
      throw invalidArgument(`blob ${this.digest}: upload finished after ${this.written} of ${this.digest.sizeBytes} bytes`);
    }
    const actual = this.hash.digest('hex');
    if (actual !== this.digest.hash) {
      await this.base.abort();
      throw hashMismatch(this.digest, actual);
    }
    await this.base.commit();
  }
  abort(): Promise<void> {
    return this.base.abort();
  }
}
