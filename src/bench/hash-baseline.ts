import { createHash } from 'node:crypto';

/** SHA-256 with node crypto over `data` in `chunk`-byte updates: seconds taken and the hex digest. */
export function sha256Stream(data: Buffer, chunk: number): { seconds: number; hex: string } {
  const t0 = process.hrtime.bigint();
  const h = createHash('sha256');
  for (let off = 0; off < data.byteLength; off += chunk) h.update(data.subarray(off, Math.min(data.byteLength, off + chunk)));
  const hex = h.digest('hex');
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, hex };
}

/** One SHA-256 digest per blob: seconds taken and the hex digests. */
export function sha256Each(blobs: readonly Buffer[]): { seconds: number; hexes: string[] } {
  const t0 = process.hrtime.bigint();
  const hexes = blobs.map((b) => createHash('sha256').update(b).digest('hex'));
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, hexes };
}
