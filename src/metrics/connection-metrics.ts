import { Counter, Gauge, type Registry } from 'prom-client';
import type { ConnectionStats } from '../daemon/connection-guard.js';

/** Connections as the ConnectionGuard counts them, read at each scrape. */
export class ConnectionMetrics {
  constructor(registry: Registry, stats: () => ConnectionStats) {
    const registers = [registry];
    new Gauge({ name: 'reexec_connections_open', help: 'Open client connections (TCP and unix sockets).', registers, collect() { this.set(stats().open); } });
    new Gauge({ name: 'reexec_connections_handshaking', help: 'Open connections that have not completed the HTTP/2 handshake yet.', registers, collect() { this.set(stats().handshaking); } });
    new Gauge({ name: 'reexec_connection_clients', help: 'Distinct client addresses with a connection open.', registers, collect() { this.set(stats().clients); } });
    new Gauge({
      name: 'reexec_connections_limit',
      help: 'The configured connection limits, by limit (max_connections, max_connections_per_client; 0: none).',
      labelNames: ['limit'],
      registers,
      collect() {
        const { limits } = stats();
        this.set({ limit: 'max_connections' }, limits.maxConnections);
        this.set({ limit: 'max_connections_per_client' }, limits.maxConnectionsPerClient);
      },
    });
    new Counter({ name: 'reexec_connections_accepted_total', help: 'Connections accepted.', registers, collect() { this.reset(); this.inc(stats().accepted); } });
    new Counter({
      name: 'reexec_connections_refused_total',
      help: 'Connections closed on arrival, by the limit they would have passed (max_connections, max_connections_per_client).',
      labelNames: ['limit'],
      registers,
      collect() {
        const { refused } = stats();
        this.reset();
        this.inc({ limit: 'max_connections' }, refused.maxConnections);
        this.inc({ limit: 'max_connections_per_client' }, refused.maxConnectionsPerClient);
      },
    });
    new Counter({
      name: 'reexec_connections_closed_total',
      help: 'Connections the server closed, by reason (handshake_timeout: no HTTP/2 preface and settings in time; idle: no call for limits.connection-idle-timeout).',
      labelNames: ['reason'],
      registers,
      collect() {
        const { closed } = stats();
        this.reset();
        this.inc({ reason: 'handshake_timeout' }, closed.handshakeTimeout);
        this.inc({ reason: 'idle' }, closed.idle);
      },
    });
  }
}
