import * as grpc from '@grpc/grpc-js';
import { channelCredentials, securityChannelOptions, type ClientSecurity } from '../client/client-security.js';
import { adminClient, grpcTarget, type AdminClient } from '../client/reapi-client.js';
import { statusFromMessage } from '../services/admin-messages.js';
import { AdminRefusedError, DaemonUnreachableError, NotReexecError, unreachableReason } from '../client/daemon-errors.js';
import type { StatusSnapshot } from './status-snapshot.js';


export { AdminRefusedError, NotReexecError };

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
          return reject(new DaemonUnreachableError(this.endpoint, err.code === grpc.status.DEADLINE_EXCEEDED ? `no answer within ${this.timeoutMs / 1000} s` : unreachableReason(err.details)));
        }
        reject(new Error(`status request to ${this.endpoint} failed: ${grpc.status[err.code]}: ${err.details}`));
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
