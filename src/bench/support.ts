import * as grpc from '@grpc/grpc-js';
import type { Unsupported } from './types.js';

/**
 * Why a call failed because the endpoint does not offer what was asked (an unimplemented
 * RPC, or one these credentials may not use), or undefined for any other failure, which the
 * bench reports as an error.
 */
export function unsupportedReason(err: unknown): string | undefined {
  const e = err as Partial<grpc.ServiceError> | undefined;
  if (e?.code === grpc.status.UNIMPLEMENTED) return `the endpoint does not implement it (UNIMPLEMENTED${e.details ? `: ${e.details}` : ''})`;
  if (e?.code === grpc.status.PERMISSION_DENIED) return `the endpoint refuses it with these credentials (PERMISSION_DENIED${e.details ? `: ${e.details}` : ''})`;
  return undefined;
}

/** Thrown inside a suite to report the whole suite (or one part of it) as unsupported. */
export class UnsupportedError extends Error {
  constructor(readonly unsupported: Unsupported) {
    super(`${unsupported.what}: ${unsupported.reason}`);
    this.name = 'UnsupportedError';
  }
}

/** Rethrow a call's error as UnsupportedError when it means "not offered here". */
export function asUnsupported(what: string, err: unknown): never {
  const reason = unsupportedReason(err);
  if (reason) throw new UnsupportedError({ what, reason });
  throw err;
}

/** How a suite reports progress: one step per measured cell and repetition. */
export interface SuiteProgress {
  /** One step done; `detail` summarises what it measured. */
  step(detail: string): void;
}
