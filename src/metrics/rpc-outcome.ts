import * as grpc from '@grpc/grpc-js';

/**
 * What a finished call means for whoever watches the daemon: it answered (ok), it answered
 * "not here" to a lookup whose purpose is to ask (miss), or something went wrong (error).
 * Counting every non-OK status as an error makes a healthy cold build look broken: each
 * action cache lookup of a never-built action is a NOT_FOUND.
 */
export type RpcOutcome = 'ok' | 'miss' | 'error';

const AC = '/build.bazel.remote.execution.v2.ActionCache/';
const FETCH = '/build.bazel.remote.asset.v1.Fetch/';
const PUSH = '/build.bazel.remote.asset.v1.Push/';

/**
 * Lookups whose NOT_FOUND is their "no". GetActionResult: "NOT_FOUND: The requested
 * ActionResult is not in the cache". Fetch: the spec's "NOT_FOUND: The requested asset was not
 * found", which reexec sends as a gRPC status rather than inside the response, because
 * BuildStream 1.6 takes any OK reply for a hit (services/asset-service.ts). FindMissingBlobs
 * and BatchReadBlobs report absent blobs inside an OK response, so they never get here.
 * NOT_FOUND elsewhere (ByteStream.Read, GetTree, WaitExecution) means a client expected
 * something the server does not have: an error.
 */
const LOOKUPS = new Set([`${AC}GetActionResult`, `${FETCH}FetchBlob`, `${FETCH}FetchDirectory`]);

/**
 * Remote Asset calls with no URI are BuildStream's probes for the service, which the protocol
 * answers with INVALID_ARGUMENT (see services/asset-service.ts): the expected answer, not a
 * failure. Only these methods need their request looked at.
 */
const PROBED = new Set([`${FETCH}FetchBlob`, `${FETCH}FetchDirectory`, `${PUSH}PushBlob`, `${PUSH}PushDirectory`]);

/** Whether classifying a call of `path` needs its (first) request message. */
export const needsRequest = (path: string): boolean => PROBED.has(path);

/** The outcome of a call of method `path` that ended with `code` (request given for methods needsRequest names). */
export function rpcOutcome(path: string, code: number, request?: unknown): RpcOutcome {
  if (code === grpc.status.OK) return 'ok';
  if (code === grpc.status.NOT_FOUND && LOOKUPS.has(path)) return 'miss';
  if (code === grpc.status.INVALID_ARGUMENT && PROBED.has(path) && isProbe(request)) return 'ok';
  return 'error';
}

function isProbe(request: unknown): boolean {
  if (typeof request !== 'object' || request === null) return false;
  const uris = (request as { uris?: unknown }).uris;
  return Array.isArray(uris) && uris.length === 0;
}
