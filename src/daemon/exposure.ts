import { isIP } from 'node:net';
import type { Config, TlsConfig } from '../config/config.js';

/** The TLS a listener uses: its own setting, else the daemon's for TCP (unix sockets stay plain). */
export function tlsFor(config: Pick<Config, 'tls' | 'listenerTls'>, address: string): TlsConfig | null {
  if (Object.prototype.hasOwnProperty.call(config.listenerTls, address)) return config.listenerTls[address] ?? null;
  return address.startsWith('unix:') ? null : config.tls;
}

/** "127.0.0.1", "[::1]", "localhost": only this machine can connect. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

/**
 * What the daemon should warn about at start: TCP listeners other machines can reach that
 * carry traffic in clear, or that serve no other machine at all (without tokens or client
 * certificates only local users are served: see AccessPolicy).
 */
export function exposureWarnings(config: Pick<Config, 'listen' | 'tls' | 'listenerTls' | 'auth'>): string[] {
  const out: string[] = [];
  for (const address of config.listen) {
    if (address.startsWith('unix:')) continue;
    const host = address.slice(0, address.lastIndexOf(':'));
    if (isLoopbackHost(host)) continue;
    const tls = tlsFor(config, address);
    if (!tls) {
      out.push(`${address} is reachable from other machines without TLS: builds, cached results${config.auth.tokenFile ? ' and access tokens' : ''} cross the network in clear (set tls in the config; \`reexec init --tls\` creates certificates)`);
    }
    if (!config.auth.tokenFile && !tls?.clientCa) {
      out.push(`${address} is reachable from other machines, but without access tokens or client certificates reexec refuses them (it serves only local users): set auth.token-file or tls.client-ca to admit them (\`reexec init --tls\` sets up both)`);
    }
  }
  return out;
}
