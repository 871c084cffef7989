import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/**
 * Serves a registry at /metrics over plain HTTP for Prometheus (and curl). Nothing else:
 * other paths get a 404 naming the right one.
 */
export class MetricsServer {
  private constructor(
    private readonly server: Server,
    /** http://HOST:PORT/metrics, with the port really bound. */
    readonly url: string,
  ) {}

  /** Listen on "HOST:PORT" (port 0 picks a free one). */
  static async listen(address: string, registry: Registry): Promise<MetricsServer> {
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
    const port = Number(address.slice(i + 1));
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('reexec serves Prometheus metrics at /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`collecting metrics failed: ${err.message}\n`),
      );
    });
    // A scrape must never keep a stopping daemon alive.
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = (server.address() as AddressInfo).port;
    const shown = host.includes(':') ? `[${host}]` : host;
    return new MetricsServer(server, `http://${shown}:${bound}/metrics`);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
