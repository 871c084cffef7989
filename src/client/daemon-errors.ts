/** No daemon answers at the endpoint: not started, stopped, or another address. The one such error of the CLI. */
export class DaemonUnreachableError extends Error {
  constructor(
    readonly endpoint: string,
    readonly detail: string,
  ) {
    super(`no reexec daemon is answering at ${endpoint} (${detail})`);
    this.name = 'DaemonUnreachableError';
  }
}

/** The suggestion for a refused Admin API call. */
export const ADMIN_RIGHT_SUGGESTION =
  'The Admin API needs a token with the admin right (REEXEC_TOKEN, or the token file of the config given with --config), or a connection over loopback or the unix socket when the daemon has no token file.';

/** Something answers, but it is not a reexec daemon (no Admin API). */
export class NotReexecError extends Error {
  constructor(readonly endpoint: string) {
    super(`${endpoint} answers gRPC but has no reexec Admin API: it is not a reexec daemon, or an older one`);
    this.name = 'NotReexecError';
  }
}

/** The daemon answers but refuses this client the Admin API (no token, or one without the admin right). */
export class AdminRefusedError extends Error {
  constructor(
    readonly endpoint: string,
    readonly detail: string,
  ) {
    super(`the reexec daemon at ${endpoint} refused the status request: ${detail}`);
    this.name = 'AdminRefusedError';
  }
}


/** grpc-js's "No connection established. Last error: Error: connect ECONNREFUSED ..." in a few words. */
export function unreachableReason(details: string): string {
  if (/ECONNREFUSED/.test(details)) return 'connection refused';
  if (/ENOENT/.test(details)) return 'no such socket';
  if (/EACCES|EPERM/.test(details)) return 'permission denied';
  if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/i.test(details)) return 'unknown host';
  if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(details)) return 'host unreachable';
  return details.replace(/\s*Resolution note:\s*$/, '') || 'unavailable';
}
