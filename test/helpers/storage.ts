import type * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { waitFor } from './wait.js';

/** Deterministic pseudo-random bytes (distinct per seed). */
export function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export function digestOf(data: Uint8Array): { hash: string; sizeBytes: number } {
  return Digest.compute(data).toProto();
}

/** Resolves to the gRPC error of a call that must fail with `code`, checking its message mentions each of `mentions`. */
export async function expectGrpcError(p: Promise<unknown>, code: grpc.status, ...mentions: string[]): Promise<grpc.ServiceError> {
  const err = await p.then(
    (res) => {
      throw new Error(`expected gRPC status ${code}, the call succeeded with ${JSON.stringify(res)?.slice(0, 200)}`);
    },
    (e: grpc.ServiceError) => e,
  );
  expect(err.code, err.details).toBe(code);
  for (const m of mentions) expect(err.details).toContain(m);
  return err;
}

/** ByteStream.Read of a whole blob or a part, collected. */
export function bsRead(client: grpc.Client & Record<string, any>, resourceName: string, readOffset = 0, readLimit = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const s = client.Read({ resourceName, readOffset, readLimit });
    s.on('data', (m: { data: Uint8Array }) => parts.push(Buffer.from(m.data)));
    s.on('error', reject);
    s.on('end', () => resolve(Buffer.concat(parts)));
  });
}

export interface WriteOptions {
  chunkBytes?: number;
  instance?: string;
  uuid?: string;
  /** Start at this offset (resuming). */
  offset?: number;
  /** Stop after sending this many bytes, then cancel the call (a broken stream). */
  breakAfter?: number;
  /** How long to wait before breaking (default 100 ms: the server takes what was sent). */
  breakWaitMs?: number;
  /**
   * Instead of waiting breakWaitMs: break once QueryWriteStatus says the server holds at least
   * this many bytes (a condition, so a slow machine cannot make the server hold none).
   */
  breakWhenServerHas?: number;
  /** A digest function segment for the resource name ("blake3"); without it none is sent. */
  fn?: string;
}

/**
 * ByteStream.Write of a blob in chunks, waiting for flow control. Resolves to the response
 * (or to 'cancelled' when breakAfter cut it).
 */
export function bsWrite(
  client: grpc.Client & Record<string, any>,
  data: Buffer,
  opts: WriteOptions = {},
  digest = digestOf(data),
): Promise<{ committedSize: number } | 'cancelled'> {
  const chunk = opts.chunkBytes ?? 1024 * 1024;
  const prefix = opts.instance ? `${opts.instance}/` : '';
  const fnPart = opts.fn ? `${opts.fn}/` : '';
  const resourceName = `${prefix}uploads/${opts.uuid ?? randomUUID()}/blobs/${fnPart}${digest.hash}/${digest.sizeBytes}`;
  return new Promise((resolve, reject) => {
    let cancelled = false;
    const stream = client.Write((err: grpc.ServiceError | null, res: { committedSize: number }) => {
      if (cancelled) return resolve('cancelled');
      return err ? reject(err) : resolve(res);
    });
    stream.on('error', () => undefined);
    const send = async (): Promise<void> => {
      let off = opts.offset ?? 0;
      do {
        const end = Math.min(data.length, off + chunk);
        if (opts.breakAfter !== undefined && end > opts.breakAfter) {
          // Let the server take what was sent before the stream breaks.
          if (opts.breakWhenServerHas !== undefined) {
            const want = opts.breakWhenServerHas;
            await waitFor(`the server to hold ${want} bytes of the upload`, () =>
              call(client, 'QueryWriteStatus', { resourceName }).then(
                (s: any) => Number(s.committedSize) >= want,
                () => false,
              ),
            );
          } else await new Promise((r) => setTimeout(r, opts.breakWaitMs ?? 100));
          cancelled = true;
          stream.cancel();
          return;
        }
        const last = end === data.length;
        const ok = stream.write({ resourceName: off === (opts.offset ?? 0) ? resourceName : '', writeOffset: off, data: data.subarray(off, end), finishWrite: last });
        off = end;
        if (!ok) await new Promise((r) => stream.once('drain', r));
        if (last) break;
      } while (off < data.length);
      stream.end();
    };
    send().catch(reject);
  });
}

/** An upload resource name; `fn` adds a digest function segment ("blake3"). */
export function uploadName(digest: { hash: string; sizeBytes: number }, uuid = randomUUID(), instance = '', fn = ''): string {
  return `${instance ? `${instance}/` : ''}uploads/${uuid}/blobs/${fn ? `${fn}/` : ''}${digest.hash}/${digest.sizeBytes}`;
}

/** A read resource name; `fn` adds a digest function segment ("blake3"). */
export function blobName(digest: { hash: string; sizeBytes: number }, instance = '', fn = ''): string {
  return `${instance ? `${instance}/` : ''}blobs/${fn ? `${fn}/` : ''}${digest.hash}/${digest.sizeBytes}`;
}

export { call };
