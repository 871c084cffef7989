import * as grpc from '@grpc/grpc-js';
import { channelCredentials, securityChannelOptions, type ClientSecurity } from '../client/client-security.js';
import { adminClient, grpcTarget, type AdminClient } from '../client/reapi-client.js';
import { statusFromMessage } from '../services/admin-messages.js';
import type { StatusSnapshot } from './status-snapshot.js';

/** No daemon answers at the endpoint: not started, stopped, or another address. */
export class DaemonUnreachableError extends Error {
  constructor(
    readonly endpoint: string,
    readonly detail: string,
  ) {
    super(`no reexec daemon is answering at ${endpoint} (${detail})`);
    this.name = 'DaemonUnreachableError';
  }
}

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
function why(details: string): string {
  if (/ECONNREFUSED/.test(details)) return 'connection refused';
  if (/ENOENT/.test(details)) return 'no such socket';
  if (/EACCES|EPERM/.test(details)) return 'permission denied';
  if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/i.test(details)) return 'unknown host';
  if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(details)) return 'host unreachable';
  return details.replace(/\s*Resolution note:\s*$/, '') || 'unavailable';
}

/**
 * Reads status snapshots from a daemon's Admin API over one channel, for as many polls as
 * the dashboard makes. Failures become DaemonUnreachableError or NotReexecError.
 */
export class StatusClient {
  private readonly client: AdminClient;

  constructor(
    readonly endpoint: string,
    security: ClientSecurity = {},
    private readonly timeoutMs = 3000,
  ) {
    const target = grpcTarget(endpoint);
    this.client = adminClient(target, channelCredentials(endpoint, security), {
      // Fail fast while nothing listens, and try again soon after (the dashboard polls).
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 1000,
      ...securityChannelOptions(security),
    });
  }

  fetch(): Promise<StatusSnapshot> {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.timeoutMs);
      this.client.GetStatus({}, new grpc.Metadata(), { deadline }, (err, res) => {
        if (!err) return resolve(statusFromMessage(res));
        if (err.code === grpc.status.UNIMPLEMENTED) return reject(new NotReexecError(this.endpoint));
        if (err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED) return reject(new AdminRefusedError(this.endpoint, err.details));
        if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED) {
          return reject(new DaemonUnreachableError(this.endpoint, err.code === grpc.status.DEADLINE_EXCEEDED ? `no answer within ${this.timeoutMs / 1000} s` : why(err.details)));
        }
        reject(new Error(`status request to ${this.endpoint} failed: ${grpc.status[err.code]}: ${err.details}`));
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
