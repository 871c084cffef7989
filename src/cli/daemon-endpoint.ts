import { localAccess, type ClientSecurity } from '../client/client-security.js';
import type { Right } from '../auth/rights.js';
import { loadConfig } from '../config/config.js';
import { UserError } from '../util/user-error.js';

/** grpc[s]://HOST:PORT, http[s]://HOST:PORT, HOST:PORT ([v6]:PORT too) or unix:PATH. */
const ENDPOINT = /^(?:(?:grpcs?|https?):\/\/)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:]+):([0-9]{1,5})$/;

/** An --endpoint value, checked once for every command: the usage error names the flag. */
export function parseEndpoint(value: string, flag = '--endpoint'): string {
  if (value.startsWith('unix:')) {
    if (value.length > 5) return value;
  } else {
    const m = ENDPOINT.exec(value);
    if (m && Number(m[1]) <= 65535) return value;
  }
  throw new UserError(`${flag} "${value}" is not grpc://HOST:PORT, grpcs://HOST:PORT (TLS), HOST:PORT or unix:PATH`);
}

/** The bearer token the environment gives the CLI: REEXEC_TOKEN (or, for one of several bench endpoints, REEXEC_TOKEN_<NAME>), read here and nowhere else. */
export function envToken(variable = 'REEXEC_TOKEN'): string | undefined {
  return process.env[variable] || undefined;
}

export interface DaemonAccess {
  endpoint: string;
  security: ClientSecurity;
}

/**
 * How a command reaches the daemon: --endpoint (TLS for grpcs://, a token from --token or
 * REEXEC_TOKEN), else the daemon of the config (its unix socket or first listener, its TLS
 * files, a token with `need` from its token file unless REEXEC_TOKEN gives one).
 */
export function resolveDaemon(opts: { endpoint?: string; config?: string; need: Right; token?: string; security?: ClientSecurity }): DaemonAccess {
  if (opts.endpoint) {
    const endpoint = parseEndpoint(opts.endpoint);
    const token = opts.token ?? envToken();
    return { endpoint, security: { ...opts.security, ...(token ? { token } : {}) } };
  }
  return localAccess(loadConfig(opts.config), opts.need, envToken());
}
