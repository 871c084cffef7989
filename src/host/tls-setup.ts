import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * `reexec init --tls`: a private CA, a server certificate for the names clients use, one client
 * certificate, and a token file, all made by the system's openssl (no crypto of our own).
 * Keys are EC P-256 in PKCS#8 PEM, which gRPC C++ (BuildStream, buildbox), grpc-js and Netty
 * (Bazel's --tls_client_key) all read.
 */
export interface TlsSetup {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  tokenFile: string;
  /** Files holding one token each, for clients that read the token from a file (BuildStream 2, buildbox). */
  tokens: { client: TokenInfo; readOnly: TokenInfo; admin: TokenInfo };
  /** DNS names and IP addresses in the server certificate. */
  serverNames: string[];
  /** What this run created (existing files are kept). */
  created: string[];
}

export interface TokenInfo {
  token: string;
  file: string;
  rights: string;
}

export class TlsSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsSetupError';
  }
}

async function openssl(args: string[], cwd: string): Promise<void> {
  let r;
  try {
    r = await execa('openssl', args, { cwd, reject: false, timeout: 60_000, all: true, stdin: 'ignore', env: { LC_ALL: 'C' } });
  } catch (err) {
    throw new TlsSetupError(`openssl could not run: ${(err as Error).message}; install it with: sudo apt-get install -y openssl`);
  }
  if ((r as { code?: string }).code === 'ENOENT' || r.exitCode === undefined) {
    throw new TlsSetupError('openssl is not installed: install it with: sudo apt-get install -y openssl');
  }
  if (r.exitCode !== 0) throw new TlsSetupError(`openssl ${args[0]} failed (exit ${r.exitCode}): ${(r.all ?? '').trim().split('\n').slice(-3).join(' ')}`);
}

/** The names a server certificate should carry for these listen addresses: loopback always. */
export function serverNamesFor(listen: readonly string[]): string[] {
  const names = new Set(['localhost', '127.0.0.1', '::1']);
  for (const a of listen) {
    if (a.startsWith('unix:')) continue;
    const host = a.slice(0, a.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    if (host && host !== '0.0.0.0' && host !== '::') names.add(host);
  }
  const h = hostname();
  if (h && /^[A-Za-z0-9.-]+$/.test(h)) names.add(h);
  return [...names];
}

const subjectAltName = (names: readonly string[]): string => names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  return '0x' + b.toString('hex');
}

/**
 * Create what is missing in `dir` (0700): keys 0600, certificates 0644. Existing keys and
 * certificates are kept, so running it again changes nothing; `force` makes everything anew.
 */
export async function createTlsSetup(dir: string, opts: { listen: readonly string[]; force?: boolean; days?: number }): Promise<TlsSetup> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const p = (name: string): string => join(dir, name);
  const setup: TlsSetup = {
    dir,
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    tokenFile: p('tokens.yaml'),
    tokens: {
      client: { token: '', file: p('client.token'), rights: 'read, write, execute' },
      readOnly: { token: '', file: p('read-only.token'), rights: 'read' },
      admin: { token: '', file: p('admin.token'), rights: 'all' },
    },
    serverNames: serverNamesFor(opts.listen),
    created: [],
  };
  const fresh = (file: string): boolean => opts.force === true || !existsSync(file);
  const days = String(opts.days ?? 825);
  const work = mkdtempSync(join(dir, '.tmp-'));
  try {
    const newKey = async (file: string): Promise<void> => {
      await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], work);
      chmodSync(file, 0o600);
      setup.created.push(file);
    };
    const caChanged = fresh(setup.caKey) || fresh(setup.caCert);
    if (caChanged) {
      await newKey(setup.caKey);
      await openssl(
        ['req', '-x509', '-new', '-key', setup.caKey, '-sha256', '-days', '3650', '-subj', '/CN=reexec local CA',
          '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', setup.caCert],
        work,
      );
      setup.created.push(setup.caCert);
    }
    const issue = async (cert: string, key: string, cn: string, ext: string): Promise<void> => {
      if (!caChanged && !fresh(cert) && !fresh(key)) return;
      await newKey(key);
      const csr = join(work, 'req.csr');
      const extFile = join(work, 'ext.cnf');
      writeFileSync(extFile, ext);
      await openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', csr], work);
      await openssl(['x509', '-req', '-in', csr, '-CA', setup.caCert, '-CAkey', setup.caKey, '-set_serial', serial(), '-days', days, '-sha256', '-extfile', extFile, '-out', cert], work);
      setup.created.push(cert);
    };
    await issue(
      setup.serverCert,
      setup.serverKey,
      'reexec server',
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${subjectAltName(setup.serverNames)}\n`,
    );
    await issue(setup.clientCert, setup.clientKey, 'reexec client', 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  for (const t of Object.values(setup.tokens)) {
    if (fresh(t.file)) {
      writeFileSync(t.file, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
      setup.created.push(t.file);
    }
    t.token = readFileSync(t.file, 'utf8').trim();
  }
  const line = (t: TokenInfo, name: string, rights: string): string => `${t.token}: {name: ${name}, rights: ${rights}}\n`;
  const lines = [line(setup.tokens.client, 'client', '[read, write, execute]'), line(setup.tokens.readOnly, 'read-only', '[read]'), line(setup.tokens.admin, 'admin', 'all')];
  if (fresh(setup.tokenFile)) {
    const header =
      '# reexec access tokens: "TOKEN: RIGHTS" (read, write, execute, admin, all), or\n' +
      '# "TOKEN: {name: NAME, rights: RIGHTS}". Clients send "authorization: Bearer TOKEN".\n' +
      '# The daemon re-reads this file when it changes: add or revoke tokens without a restart.\n';
    writeFileSync(setup.tokenFile, header + lines.join(''), { mode: 0o600 });
    setup.created.push(setup.tokenFile);
  } else {
    // Kept as the user left it; a token file made anew above must still be accepted.
    const text = readFileSync(setup.tokenFile, 'utf8');
    const missing = lines.filter((l) => !text.includes(l.slice(0, l.indexOf(':'))));
    if (missing.length > 0) writeFileSync(setup.tokenFile, (text.endsWith('\n') || !text ? text : text + '\n') + missing.join(''), { mode: 0o600 });
  }
  return setup;
}
