import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, connect } from '../../src/client/reapi-client.js';
import { createTlsSetup, type TlsSetup } from '../../src/host/tls-setup.js';
import { bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { makeBusyboxSysroot, makeClientsWork, prepareClientsRoot, runInRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';

/**
 * Real clients (Debian testing's BuildStream 2.8 and buildbox 1.4, in the clients root)
 * against a reexec that demands mutual TLS and access tokens, with the files `reexec init
 * --tls` makes: BuildStream builds remotely and pushes with a read-write-execute token, pulls
 * with a read-only token whose pushes are refused; casupload, casdownload and trexe over TLS.
 */
const clients = !isExecutable('/usr/bin/openssl')
  ? { skip: 'install the Debian package openssl (the certificates are made with it)' }
  : isExecutable('/usr/bin/bwrap')
    ? prepareClientsRoot()
    : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`TLS clients end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(!!clients.skip)(`real clients over mutual TLS with access tokens${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let work: string; // host path, inside the clients root
  let inside: string; // the same folder as the clients root sees it
  let url: string;
  let tls: TlsSetup;
  /** The daemon's plain unix socket, for the test's own checks with the admin token. */
  let socket: string;
  const token = randomBytes(8).toString('hex');

  const bst = (conf: string, ...args: string[]) => runBst2(root, inside, conf, args, TIMEOUT - 10_000);
  const inRoot = (argv: string[]) => runInRoot(root, argv, { cwd: inside, env: { TMPDIR: `${inside}/tmp` }, timeoutMs: TIMEOUT - 10_000 });
  /** A file of the TLS setup as the clients root sees it. */
  const tlsFile = (host: string): string => host.slice(root.length);
  const alive = () => {
    expect(daemon!.running(), `reexec died:\n${daemon!.output()}`).toBe(true);
    expect(daemon!.errorLines()).toEqual([]);
  };
  /** Operations the daemon ran (through the unix socket, with the admin token). */
  const operations = async (): Promise<number> => {
    const c = connect(`unix:${socket}`, {}, { token: tls.tokens.admin.token });
    try {
      const res: any = await call(c.operations, 'ListOperations', { pageSize: 1000 });
      return (res.operations ?? []).length;
    } finally {
      c.close();
    }
  };

  beforeAll(async () => {
    ({ work, inside } = makeClientsWork(root, 'reexec-tls-'));
    tls = await createTlsSetup(join(work, 'tls'), { listen: ['127.0.0.1:0'] });
    socket = join(work, 'admin.sock');
    writeFileSync(
      join(work, 'daemon.yaml'),
      [
        `tls: {cert: "${tls.serverCert}", key: "${tls.serverKey}", client-ca: "${tls.caCert}"}`,
        `auth: {token-file: "${tls.tokenFile}"}`,
        '',
      ].join('\n'),
    );
    daemon = await startDaemonProcess({ dataDir: join(work, 'server'), listen: ['127.0.0.1:0', `unix:${socket}`], args: ['--config', join(work, 'daemon.yaml')] });
    url = `https://127.0.0.1:${daemon.port}`;

    const project = join(work, 'project');
    makeBst2Project(root, project, 'reexec-tls');
    const manual = (name: string, text: string): void =>
      writeFileSync(
        join(project, 'elements', `${name}.bst`),
        ['kind: manual', 'build-depends:', '- base.bst', 'config:', '  install-commands:', `  - mkdir -p %{install-root}/usr/share/${name}`, `  - echo "${text}" > %{install-root}/usr/share/${name}/out.txt`, ''].join('\n'),
      );
    manual('hello', `hello over TLS ${token}`);
    manual('local', `built by a reader ${token}`);

    const auth = (tokenFile: string): string =>
      `auth: {server-cert: "${tlsFile(tls.caCert)}", client-cert: "${tlsFile(tls.clientCert)}", client-key: "${tlsFile(tls.clientKey)}", access-token: "${tlsFile(tokenFile)}"}`;
    const server = (tokenFile: string): string => `{url: "${url}", push: true, ${auth(tokenFile)}}`;
    // The writer: artifacts, sources and remote execution, everything over mutual TLS with the client token.
    const service = `{url: "${url}", ${auth(tls.tokens.client.file)}}`;
    writeFileSync(
      join(work, 'writer.conf'),
      bst2UserConfig(inside, {
        artifacts: server(tls.tokens.client.file),
        sourceCaches: server(tls.tokens.client.file),
        remoteExecution: { service, actionCache: service },
      }),
    );
    // The reader: the same caches with the read-only token, and push: true (which must not work); builds locally.
    writeFileSync(
      join(work, 'reader.conf'),
      bst2UserConfig(inside, { artifacts: server(tls.tokens.readOnly.file), sourceCaches: server(tls.tokens.readOnly.file) }),
    );
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) removeTree(work);
  });

  it(
    'BuildStream 2 builds remotely and pushes over mutual TLS with a read-write-execute token',
    async () => {
      const build = await bst('writer.conf', 'build', 'hello.bst');
      const why = describeRun('bst build hello.bst (TLS, client token)', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/hello\.bst.*Waiting for the remote build to complete/);
      expect(build.output, why).toMatch(new RegExp(`Pushed artifact [0-9a-f]+ -> ${url}`));
      expect(build.output, why).not.toMatch(/Failed to (push|pull|initialize)/);
      expect(await operations()).toBeGreaterThanOrEqual(1);
      alive();
    },
    TIMEOUT,
  );

  it(
    'with the read-only token BuildStream pulls, and its pushes are refused',
    async () => {
      removeTree(join(work, 'cache'));
      const pull = await bst('reader.conf', 'build', 'hello.bst');
      const why = describeRun('bst build hello.bst (read-only token, empty cache)', pull);
      expect(pull.code, why).toBe(0);
      expect(pull.output, why).toMatch(new RegExp(`Pulled artifact [0-9a-f]+ <- ${url}`));
      expect(pull.output, why).toMatch(/Build Queue:\s+processed 0\b/);
      const co = await bst('reader.conf', 'artifact', 'checkout', 'hello.bst', '--directory', `${inside}/checkout`);
      expect(co.code, describeRun('bst artifact checkout', co)).toBe(0);
      expect(readFileSync(join(work, 'checkout', 'usr', 'share', 'hello', 'out.txt'), 'utf8')).toBe(`hello over TLS ${token}\n`);

      // A new element, built locally: its push is refused (PERMISSION_DENIED).
      const local = await bst('reader.conf', 'build', 'local.bst');
      const lwhy = describeRun('bst build local.bst (read-only token)', local);
      expect(local.output, lwhy).not.toMatch(new RegExp(`Pushed artifact [0-9a-f]+ -> ${url}`));
      // buildbox-casd's upload gets PERMISSION_DENIED (7) and BuildStream reports the push failed.
      expect(local.output, lwhy).toMatch(/local\.bst.*Failed to push artifact blobs: .*: 7\b/);
      expect(local.output, lwhy).toMatch(/Push Queue:\s+processed 0, skipped \d+, failed 1/);
      // The server never got it: from an empty cache there is nothing to pull.
      removeTree(join(work, 'cache'));
      const again = await bst('reader.conf', 'artifact', 'pull', 'local.bst');
      expect(again.output, describeRun('bst artifact pull local.bst', again)).not.toMatch(/Pulled artifact/);
      alive();
    },
    TIMEOUT,
  );

  it(
    'buildbox tools over TLS: casupload, casdownload and trexe with a client certificate and token file; refused without them',
    async () => {
      const opts = (tokenFile: string): string[] => [
        `--remote=${url}`,
        `--server-cert=${tlsFile(tls.caCert)}`,
        `--client-cert=${tlsFile(tls.clientCert)}`,
        `--client-key=${tlsFile(tls.clientKey)}`,
        `--access-token=${tlsFile(tokenFile)}`,
      ];
      makeBusyboxSysroot(root, join(work, 'rootfs'));
      const up = await inRoot(['casupload', ...opts(tls.tokens.client.file), '--output-digest-file=root.digest', 'rootfs']);
      expect(up.code, describeRun('casupload over TLS', up)).toBe(0);
      const rootDigest = readFileSync(join(work, 'root.digest'), 'utf8').trim();
      // Reading needs only the read-only token.
      const down = await inRoot(['casdownload', ...opts(tls.tokens.readOnly.file), `--root-digest=${rootDigest}`, '--destination-dir=copy']);
      expect(down.code, describeRun('casdownload over TLS (read-only token)', down)).toBe(0);
      expect(readFileSync(join(work, 'copy', 'usr', 'bin', 'busybox')).equals(readFileSync(join(work, 'rootfs', 'usr', 'bin', 'busybox')))).toBe(true);
      const run = await inRoot([
        'trexe', ...opts(tls.tokens.client.file), `--input-root-digest=${rootDigest}`, '--platform-properties=OSFamily=linux,ISA=x86-64',
        '--output-path=out/x', '--d=dl', '--skip-cache-lookup', '--', 'sh', '-c', `echo ${token} > out/x`,
      ]);
      expect(run.code, describeRun('trexe over TLS', run)).toBe(0);
      expect(readFileSync(join(work, 'dl', 'out', 'x'), 'utf8')).toBe(`${token}\n`);

      // The read-only token may not execute; no client certificate, no connection.
      const denied = await inRoot(['trexe', ...opts(tls.tokens.readOnly.file), `--input-root-digest=${rootDigest}`, '--skip-cache-lookup', '--', 'true']);
      expect(denied.code, describeRun('trexe (read-only token)', denied)).not.toBe(0);
      // (trexe uploads the Action first: the write right is what it lacks first.)
      expect(denied.output).toMatch(/needs the "(write|execute)" right; this client has: read/);
      const noCert = await inRoot(['casupload', `--remote=${url}`, `--server-cert=${tlsFile(tls.caCert)}`, `--access-token=${tlsFile(tls.tokens.client.file)}`, '--output-digest-file=x.digest', 'rootfs']);
      expect(noCert.code, describeRun('casupload without a client certificate', noCert)).not.toBe(0);
      alive();
    },
    TIMEOUT,
  );
});
