/**
 * What the upstream decorators count, since the daemon started: where lookups were answered
 * (the local store, the upstream, or neither), and bytes each way. `reexec status` and the
 * Prometheus metrics read it; the write-behind queue reports its own length.
 */
export interface LookupCounts {
  /** Answered from the local store. */
  local: number;
  /** Local misses the upstream answered (and the local store now holds). */
  upstream: number;
  /** Neither had it (or the upstream was down: counted in `upstreamDown` too). */
  miss: number;
  /** Local misses not asked of the upstream because it was down. */
  upstreamDown: number;
}

export class UpstreamStats {
  readonly cas: LookupCounts = zero();
  readonly ac: LookupCounts & { /** Upstream entries refused because the upstream lacks some of their blobs. */ incomplete: number } = { ...zero(), incomplete: 0 };
  readonly assets: LookupCounts = zero();
  /** Blob bytes fetched from the upstream into the local store. */
  bytesDown = 0;
  /** Blob bytes uploaded to the upstream by the write-behind queue. */
  bytesUp = 0;
  /** Blobs fetched, and uploaded. */
  blobsDown = 0;
  blobsUp = 0;
  /** Fetches that failed other than "not found" (verification, a broken stream, a full local store). */
  fetchErrors = 0;
}

const zero = (): LookupCounts => ({ local: 0, upstream: 0, miss: 0, upstreamDown: 0 });
