import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parse as parseYaml } from 'yaml';
import { parseRights, type Right } from '../auth/rights.js';
import type { Config } from '../config/config.js';
import { tlsFor } from '../daemon/exposure.js';

/** How a client reaches a daemon that has TLS, mutual TLS or access tokens. */
export interface ClientSecurity {
  /** Use TLS (also implied by grpcs:// and https:// endpoints). */
  tls?: boolean;
  /** PEM of the CA that signed the server's certificate; absent: the system's roots. */
  serverCa?: Buffer;
  /** For mutual TLS: the client's certificate and key (PEM). */
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** Sent as "authorization: Bearer TOKEN" on every call. */
  token?: string;
}

/** "grpcs://h:p" and "https://h:p" mean TLS. */
export const endpointWantsTls = (endpoint: string): boolean => /^(grpcs|https):\/\//.test(endpoint);

export function channelCredentials(endpoint: string, sec: ClientSecurity = {}): grpc.ChannelCredentials {
  if (!sec.tls && !endpointWantsTls(endpoint)) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(sec.serverCa ?? null, sec.clientKey ?? null, sec.clientCert ?? null);
}

/**
 * A client interceptor adding the bearer token. (Call credentials would do it too, but grpc-js
 * refuses them on plaintext channels, and a token over a unix socket or loopback is fine.)
 */
export function tokenInterceptor(token: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** Channel options for a ClientSecurity: the token interceptor, if any. */
export function securityChannelOptions(sec: ClientSecurity = {}): grpc.ClientOptions {
  return sec.token ? { interceptors: [tokenInterceptor(sec.token)] } : {};
}

/** A raw token in the token file with `need`, if the file holds one (hashed entries do not count). */
export function tokenWithRight(tokenFile: string, need: Right): string | undefined {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(tokenFile, 'utf8'));
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  for (const [token, value] of Object.entries(raw as Record<string, unknown>)) {
    if (token.startsWith('sha256:')) continue;
    const rv = value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>)['rights'] : value;
    try {
      if (parseRights(rv).has(need)) return token;
    } catch {
      /* not a valid entry: the daemon refuses it too */
    }
  }
  return undefined;
}

/**
 * How the CLI on the daemon's host (reexec status, reexec gc) reaches the daemon of a config:
 * a unix listener if there is one (no TLS needed), else the first TCP listener (grpc:// or
 * grpcs://, a wildcard host replaced by loopback) with its TLS
 * (the CA of `reexec init --tls` signs the server and the client certificate alike, and the
 * client certificate sits next to it), and a token with `need` from the token file, unless
 * `envToken` (REEXEC_TOKEN, read by the CLI's resolveDaemon) gives one.
 */
export function localAccess(config: Pick<Config, 'listen' | 'tls' | 'listenerTls' | 'auth'>, need: Right = 'admin', envToken?: string): { endpoint: string; security: ClientSecurity } {
  const token = envToken || (config.auth.tokenFile ? tokenWithRight(config.auth.tokenFile, need) : undefined);
  const unix = config.listen.find((a) => a.startsWith('unix:') && !tlsFor(config, a));
  if (unix) return { endpoint: unix, security: token ? { token } : {} };
  const first = config.listen.find((a) => !a.startsWith('unix:')) ?? config.listen[0]!;
  const i = first.lastIndexOf(':');
  let host = first.slice(0, i);
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  else if (host === '[::]' || host === '::') host = '[::1]';
  const address = `${host}:${first.slice(i + 1)}`;
  const tls = tlsFor(config, first);
  if (!tls) return { endpoint: `grpc://${address}`, security: token ? { token } : {} };
  const endpoint = `grpcs://${address}`;
  const security: ClientSecurity = { tls: true, ...(token ? { token } : {}) };
  const ca = tls.clientCa ?? join(dirname(tls.cert), 'ca.crt');
  if (existsSync(ca)) security.serverCa = readFileSync(ca);
  if (tls.clientCa) {
    const dir = dirname(tls.clientCa);
    if (existsSync(join(dir, 'client.crt')) && existsSync(join(dir, 'client.key'))) {
      security.clientCert = readFileSync(join(dir, 'client.crt'));
      security.clientKey = readFileSync(join(dir, 'client.key'));
    }
  }
  return { endpoint, security };
}
