import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { defaultConfigPath, defaultDataDir, DEFAULT_LISTEN } from '../config/config.js';
import { basename, dirname, join } from 'node:path';
import { checkInitListen, ConfigFileDiffersError, planInit, resolveUserPath, writeConfigFile, type ClientSnippets } from '../config/init-config.js';
import { setupBinfmt, type BinfmtSetupStep } from '../host/binfmt-setup.js';
import { runHostChecks, type HostCheck } from '../host/host-checks.js';
import { createTlsSetup, type TlsSetup } from '../host/tls-setup.js';
import { shellQuote } from '../util/shell-quote.js';


export interface InitResult {
  configPath: string;
  written: boolean;
  dataDir: string;
  checks: HostCheck[];
  clients: ClientSnippets;
  /** With --setup-binfmt: the commands run and how each went. */
  binfmt?: BinfmtSetupStep[];
  /** With --tls: where the certificates and tokens are, and which files this run made. */
  tls?: { dir: string; created: string[]; serverNames: string[] };
}

export default class Init extends BaseCommand {
  static override summary = 'Write a commented config file, check the host, and print client configuration.';
  static override description =
    'Writes the config file (every setting with its default) unless it already says the same; a different existing file is replaced only with --force and kept as FILE.bak. ' +
    'Then checks what remote execution needs from this host (bubblewrap, user namespaces, QEMU and binfmt_misc for foreign ISAs), printing the command that fixes each problem, ' +
    'and prints ready-to-paste configuration for BuildStream 2, BuildStream 1.6 and Bazel.';
  static override examples = [
    '<%= config.bin %> init',
    '<%= config.bin %> init --listen 0.0.0.0:50051 --data-dir /srv/reexec',
    '<%= config.bin %> init --tls --listen 0.0.0.0:50051',
    '<%= config.bin %> init --config ./reexec.yaml --force',
    '<%= config.bin %> init --json',
  ];

  static override flags = {
    config: Flags.string({ char: 'c', description: 'the config file to write (default: $XDG_CONFIG_HOME/reexec/config.yaml)', helpGroup: 'GLOBAL' }),
    'data-dir': Flags.string({ char: 'd', description: 'where the store will live (default: $XDG_DATA_HOME/reexec)' }),
    listen: Flags.string({ char: 'l', multiple: true, description: `HOST:PORT or unix:PATH clients connect to; repeat for several (default: ${DEFAULT_LISTEN})` }),
    force: Flags.boolean({ char: 'f', description: 'replace an existing config file that differs (the old one is kept as FILE.bak)' }),
    'setup-binfmt': Flags.boolean({ description: 'as root: mount binfmt_misc and register the installed QEMU interpreters (fix-binary), so foreign-ISA actions run' }),
    tls: Flags.boolean({
      description:
        'secure the daemon: create a local CA, a server and a client certificate (with openssl) and access tokens next to the config file, turn on TLS, mutual TLS and tokens, and print client configuration that uses them',
    }),
  };

  async run(): Promise<InitResult> {
    const { flags } = await this.parse(Init);
    const configPath = resolveUserPath(flags.config ?? defaultConfigPath());
    const listen = checkInitListen(flags.listen ?? [DEFAULT_LISTEN]);
    let tls: TlsSetup | undefined;
    if (flags.tls) {
      try {
        tls = await createTlsSetup(join(dirname(configPath), 'tls'), { listen });
      } catch (err) {
        throw new UserError((err as Error).message);
      }
    }
    const plan = planInit({
      configPath,
      dataDir: flags['data-dir'] ?? defaultDataDir(),
      listen,
      ...(tls
        ? {
            tls: {
              cert: tls.serverCert,
              key: tls.serverKey,
              clientCa: tls.caCert,
              tokenFile: tls.tokenFile,
              client: { caCert: tls.caCert, clientCert: tls.clientCert, clientKey: tls.clientKey, token: tls.tokens.client.token, tokenFile: tls.tokens.client.file },
            },
          }
        : {}),
    });
    let write: ReturnType<typeof writeConfigFile>;
    try {
      write = writeConfigFile(plan.configPath, plan.content, flags.force);
    } catch (err) {
      if (err instanceof ConfigFileDiffersError) {
        throw new UserError(err.message, `To keep it, leave it as it is (reexec start reads it) or write elsewhere with --config FILE; --force keeps the old file as ${err.path}.bak.`);
      }
      throw err;
    }
    let binfmt: BinfmtSetupStep[] | undefined;
    if (flags['setup-binfmt']) {
      try {
        binfmt = await setupBinfmt();
      } catch (err) {
        throw new UserError((err as Error).message);
      }
      for (const step of binfmt) this.log(`${step.ok ? '✓' : '✗'} ${step.command}${step.ok || !step.output ? '' : `: ${step.output}`}`);
    }
    const checks = await runHostChecks();

    switch (write.outcome) {
      case 'created':
        this.log(`Wrote ${plan.configPath}`);
        break;
      case 'overwritten':
        this.log(`Overwrote ${plan.configPath} (the previous file is ${write.backupPath})`);
        break;
      case 'unchanged':
        this.log(`${plan.configPath} is already up to date; nothing written`);
        break;
    }
    this.log(`  data dir: ${plan.dataDir}`);
    this.log(`  listen:   ${plan.listen.join(', ')}`);
    if (tls) {
      this.log(`\nTLS and access tokens in ${tls.dir}${tls.created.length ? ` (made now: ${tls.created.map((f) => basename(f)).join(', ')})` : ' (kept as they were)'}:`);
      this.log(`  server certificate for ${tls.serverNames.join(', ')}, signed by ca.crt; clients need ca.crt, client.crt and client.key`);
      this.log(`  tokens (${basename(tls.tokenFile)}, re-read on change): client.token (read, write, execute), read-only.token (read), admin.token (all: reexec status, reexec gc)`);
    }

    this.log('\nHost checks (what remote execution needs):');
    const width = Math.max(...checks.map((c) => c.name.length));
    const fixedBy = new Map<string, string>();
    for (const c of checks) {
      this.log(`  ${c.ok ? '✓' : '✗'} ${c.name.padEnd(width)}  ${c.detail}`);
      if (c.ok || !c.fix) continue;
      const earlier = fixedBy.get(c.fix);
      this.log(`    ${' '.repeat(width)}  fix: ${earlier ? `the same as for ${earlier}` : c.fix}`);
      if (!earlier) fixedBy.set(c.fix, c.name);
    }

    if (plan.endpoint.wildcard) {
      this.log(`\nreexec serves every interface (${plan.endpoint.wildcard}); the snippets below use loopback: on other machines, write this host's name instead.`);
    }
    const section = (title: string, text: string): void => {
      this.log(`\n── ${title} ──`);
      this.log(text.trimEnd());
    };
    section('BuildStream 2: ~/.config/buildstream.conf', plan.clients.buildstream2);
    section('BuildStream 1.6: project.conf or ~/.config/buildstream.conf', plan.clients.buildstream1);
    section('Bazel: .bazelrc', plan.clients.bazel);

    const start = plan.configPath === defaultConfigPath() ? 'reexec start' : `reexec start --config ${shellQuote(plan.configPath)}`;
    this.log(`\nStart the server with: ${start}`);

    return {
      configPath: plan.configPath,
      written: write.outcome !== 'unchanged',
      dataDir: plan.dataDir,
      checks,
      clients: plan.clients,
      ...(binfmt ? { binfmt } : {}),
      ...(tls ? { tls: { dir: tls.dir, created: tls.created, serverNames: tls.serverNames } } : {}),
    };
  }
}
