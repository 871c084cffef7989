import * as grpc from '@grpc/grpc-js';
import { clientConstructors, grpcTarget } from '../client/reapi-client.js';
import type { Config } from '../config/config.js';
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

/**
 * Where a reexec daemon started with this config can be reached: its first listen address,
 * with a wildcard host replaced by loopback.
 */
export function endpointFromConfig(config: Pick<Config, 'listen'>): string {
  const first = config.listen[0];
  if (!first) throw new Error('the config has no listen address');
  if (first.startsWith('unix:')) return first;
  const i = first.lastIndexOf(':');
  let host = first.slice(0, i);
  const port = first.slice(i + 1);
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  else if (host === '[::]' || host === '::') host = '[::1]';
  return `${host}:${port}`;
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
  private readonly client: grpc.Client & Record<string, any>;

  constructor(
    readonly endpoint: string,
    private readonly timeoutMs = 3000,
  ) {
    const target = grpcTarget(endpoint);
    this.client = new clientConstructors.admin(target, grpc.credentials.createInsecure(), {
      // Fail fast while nothing listens, and try again soon after (the dashboard polls).
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 1000,
    }) as grpc.Client & Record<string, any>;
  }

  fetch(): Promise<StatusSnapshot> {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.timeoutMs);
      this.client['GetStatus']({}, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: { json: string }) => {
        if (!err) {
          try {
            resolve(JSON.parse(res.json) as StatusSnapshot);
          } catch (e) {
            reject(new Error(`the daemon at ${this.endpoint} sent a status that is not JSON: ${(e as Error).message}`));
          }
          return;
        }
        if (err.code === grpc.status.UNIMPLEMENTED) return reject(new NotReexecError(this.endpoint));
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
