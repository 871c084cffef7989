import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { defaultConfigPath, defaultDataDir, DEFAULT_LISTEN, validateUpstreamUrl } from '../config/config.js';
import { chmodSync, chownSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInitListen, ConfigFileDiffersError, planInit, resolveUserPath, writeConfigFile, type ClientSnippets } from '../config/init-config.js';
import { setupBinfmt, type BinfmtSetupStep } from '../host/binfmt-setup.js';
import { findBubblewrap } from '../runner/bubblewrap-runner.js';
import { runHostChecks, systemProbe, type HostCheck } from '../host/host-checks.js';
import { lookupRunAsOrError } from '../host/run-as.js';
import { ensureSystemUser, SystemUserError, type SystemUser } from '../host/system-user.js';
import { defaultUnitPath, enableCommands, renderUnit, SERVICE_USER, socketDirs, SYSTEM_CONFIG, SYSTEM_DATA_DIR, systemdRunning, type UnitMode } from '../host/systemd-unit.js';
import { createTlsSetup, type TlsSetup } from '../host/tls-setup.js';
import { shellQuote } from '../util/shell-quote.js';
import { accessReport, parseLocalUsersFlag, type AccessReport } from '../host/access-report.js';


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
  /** With --systemd: the unit written, whether systemd runs here, and the commands that enable it. */
  systemd?: {
    mode: UnitMode;
    unitPath: string;
    outcome: 'created' | 'unchanged' | 'overwritten';
    /** Whether this machine runs systemd; when not, the unit is written but cannot be enabled here. */
    running: boolean;
    /** System units: the account the daemon runs as, and whether this run created it. */
    user?: { name: string; uid: number; created: boolean };
    commands: string[];
  };
  /** Who may use the daemon, who actions run as, what host-tools actions see. */
  access: AccessReport;
  /** With --system: the dedicated user (actions of a root daemon run as it), and whether this run created it. */
  system?: { user: string; uid: number; created: boolean };
}

export default class Init extends BaseCommand {
  static override summary = 'Write a commented config file, check the host, and print client configuration.';
  static override description =
    'Writes the config file (every setting with its default) unless it already says the same; a different existing file is replaced only with --force and kept as FILE.bak. ' +
    'Then checks what remote execution needs from this host (who actions run as, bubblewrap, user namespaces, QEMU and binfmt_misc for foreign ISAs), printing the command that fixes each problem, ' +
    'says who may use the daemon (without tokens: its own user and root, plus --local-users) and what host-tools actions cannot see, ' +
    'and prints ready-to-paste configuration for BuildStream 2, BuildStream 1.6 and Bazel.';
  static override examples = [
    '<%= config.bin %> init',
    '<%= config.bin %> init --listen 0.0.0.0:50051 --data-dir /srv/reexec',
    '<%= config.bin %> init --tls --listen 0.0.0.0:50051',
    '<%= config.bin %> init --local-users alice,bob',
    'sudo <%= config.bin %> init --system',
    '<%= config.bin %> init --config ./reexec.yaml --force',
    '<%= config.bin %> init --systemd',
    'sudo <%= config.bin %> init --systemd --system --listen 0.0.0.0:50051 --tls',
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
    systemd: Flags.boolean({
      description: `also write a systemd unit that runs the daemon with this config (a user unit in $XDG_CONFIG_HOME/systemd/user, or with --system a system unit), restarts it on failure and logs to the journal; prints the systemctl commands that enable it`,
    }),
    system: Flags.boolean({
      description: `as root: a system-wide setup: the dedicated user ${SERVICE_USER} (created if missing; a daemon run as root runs actions as it), config in ${SYSTEM_CONFIG}, data in ${SYSTEM_DATA_DIR}; with --systemd, a system unit (/etc/systemd/system/reexec.service) running the daemon as that user`,
    }),
    'local-users': Flags.string({
      multiple: true,
      description: 'other local users the daemon serves without tokens besides its own user and root (names, comma-separated or repeated), or any: written as auth.local-users',
    }),
    'unit-file': Flags.string({ dependsOn: ['systemd'], description: 'with --systemd: where to write the unit (default: the user or system unit directory)' }),
    upstream: Flags.string({ description: 'stand in front of this REAPI cluster (grpc://HOST:PORT or grpcs://): written as upstream.url; the client snippets then point at this reexec, which reads through from it (README "Behind a cluster")' }),
    'service-user': Flags.string({ dependsOn: ['system'], description: `with --system: the account the daemon runs as (default: ${SERVICE_USER})` }),
  };

  async run(): Promise<InitResult> {
    const { flags } = await this.parse(Init);
    const mode: UnitMode | undefined = flags.systemd ? (flags.system ? 'system' : 'user') : undefined;
    if (mode === 'system' && process.getuid?.() !== 0) {
      throw new UserError('a system unit needs root: it writes /etc/systemd/system and creates a system user', `Run: sudo reexec init --systemd --system ${this.argv.filter((a) => !['--systemd', '--system'].includes(a)).join(' ')}`.trimEnd());
    }
    if (flags.system && process.getuid?.() !== 0) {
      throw new UserError(`--system needs root: it creates the system user ${SERVICE_USER}`, `Run: sudo reexec init --system ${this.argv.filter((a) => a !== '--system').join(' ')}`.trimEnd());
    }
    const configPath = resolveUserPath(flags.config ?? (flags.system ? SYSTEM_CONFIG : defaultConfigPath()));
    // --system --service-user NAME: a daemon started as root runs actions as that user (execution.run-as), not as reexec (or nobody).
    const runAs = flags.system ? flags['service-user'] : undefined;
    const listen = checkInitListen(flags.listen ?? [DEFAULT_LISTEN]);
    const upstream = flags.upstream ? validateUpstreamUrl(flags.upstream, '--upstream') : undefined;
    let localUsers: 'any' | string[] = [];
    try {
      if (flags['local-users']) localUsers = parseLocalUsersFlag(flags['local-users']);
    } catch (err) {
      throw new UserError((err as Error).message, 'List users of this host (getent passwd NAME finds them), or any.');
    }
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
      dataDir: flags['data-dir'] ?? (flags.system ? SYSTEM_DATA_DIR : defaultDataDir()),
      listen,
      localUsers,
      ...(runAs ? { runAs } : {}),
      ...(upstream ? { upstream } : {}),
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
    const systemd = mode ? await this.writeUnit(mode, plan, flags, tls) : undefined;
    // --system without a unit: the dedicated user a daemon started as root runs actions as.
    let system: InitResult['system'];
    if (systemd?.user) system = { user: systemd.user.name, uid: systemd.user.uid, created: systemd.user.created };
    else if (flags.system) {
      try {
        const u = await ensureSystemUser(flags['service-user'] ?? SERVICE_USER, { home: plan.dataDir });
        system = { user: u.name, uid: u.uid, created: u.created };
      } catch (err) {
        if (err instanceof SystemUserError) throw new UserError(err.message, 'Create the account yourself (useradd --system --user-group NAME) and set execution.run-as: NAME.');
        throw err;
      }
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
    const checks = await runHostChecks(runAs ? { ...systemProbe(), runAs: () => lookupRunAsOrError(runAs) } : undefined);
    const access = accessReport({ localUsers, dataDir: plan.dataDir, configPath: plan.configPath, tokens: Boolean(tls), ...(runAs ? { runAs } : {}) });

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

    if (system && !systemd) this.log(`\nThe system user ${system.user} (uid ${system.uid}) ${system.created ? 'was created now' : 'exists'}: a daemon started as root runs actions as it.`);

    this.log('\nWho may use it:');
    this.log(`  clients     ${access.clients}`);
    this.log(`              ${access.widen}`);
    this.log(`  actions     ${access.actions.ok ? '' : '✗ '}${access.actions.detail}`);
    if (!access.actions.ok && access.actions.fix) this.log(`              fix: ${access.actions.fix}`);
    this.log(`  host-tools  actions cannot see ${access.hostTools.hidden.join(', ')}`);
    this.log(`              (except ${access.hostTools.keptFromHidden.join(', ')}); ${access.hostTools.scratch.join(', ')} are empty and writable`);

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
    if (upstream) {
      this.log(`\nBehind a cluster: clients use this reexec (below), not ${upstream}. It serves hits from its own store, reads misses through from ${upstream}, and writes uploads and results behind to it; with ${upstream} down, local work goes on. TLS files and a token for it: the upstream section of ${plan.configPath}.`);
    }
    section('BuildStream 2: ~/.config/buildstream.conf', plan.clients.buildstream2);
    section('BuildStream 1.6: project.conf or ~/.config/buildstream.conf', plan.clients.buildstream1);
    section('Bazel: .bazelrc', plan.clients.bazel);

    if (systemd) {
      const where = systemd.mode === 'system' ? 'system' : 'user';
      const did = systemd.outcome === 'unchanged' ? 'is already up to date' : systemd.outcome === 'overwritten' ? 'replaced (the previous file is kept as .bak)' : 'written';
      this.log(`\nsystemd ${where} unit ${systemd.unitPath} ${did}${systemd.user ? `; the daemon runs as ${systemd.user.name} (uid ${systemd.user.uid}${systemd.user.created ? ', created now' : ''})` : ''}.`);
      if (!systemd.running) {
        this.log('systemd is not running on this machine (no /run/systemd/system): the unit cannot be enabled here. On a machine that runs systemd:');
      } else {
        this.log('Enable and start it, keep it running after you log out, and follow its log:');
      }
      for (const c of systemd.commands) this.log(`  ${c}`);
      if (systemd.running) this.log(`Stop it with: ${systemd.mode === 'system' ? 'sudo systemctl' : 'systemctl --user'} stop reexec`);
    } else {
      const start = plan.configPath === defaultConfigPath() ? 'reexec start' : `reexec start --config ${shellQuote(plan.configPath)}`;
      this.log(`\nStart the server with: ${start}`);
    }

    return {
      configPath: plan.configPath,
      written: write.outcome !== 'unchanged',
      dataDir: plan.dataDir,
      checks,
      clients: plan.clients,
      ...(binfmt ? { binfmt } : {}),
      ...(tls ? { tls: { dir: tls.dir, created: tls.created, serverNames: tls.serverNames } } : {}),
      ...(systemd ? { systemd } : {}),
      access,
      ...(system ? { system } : {}),
    };
  }

  /**
   * The unit file, and for a system unit its account and a data dir that account owns (and
   * the TLS files it reads). The unit starts this very node and reexec, by absolute path.
   */
  private async writeUnit(
    mode: UnitMode,
    plan: { configPath: string; dataDir: string; listen: string[] },
    flags: { 'unit-file'?: string | undefined; 'service-user'?: string | undefined; force: boolean },
    tls: TlsSetup | undefined,
  ): Promise<NonNullable<InitResult['systemd']>> {
    let user: SystemUser | undefined;
    if (mode === 'system') {
      try {
        user = await ensureSystemUser(flags['service-user'] ?? SERVICE_USER, { home: plan.dataDir });
      } catch (err) {
        if (err instanceof SystemUserError) throw new UserError(err.message, 'Create the account yourself (useradd --system --user-group NAME) and pass it with --service-user NAME.');
        throw err;
      }
      // The daemon's own data dir, private to it.
      mkdirSync(plan.dataDir, { recursive: true, mode: 0o700 });
      chownSync(plan.dataDir, user.uid, user.gid);
      chmodSync(plan.dataDir, 0o700);
      if (tls) {
        // Readable by the daemon's group: its key and certificate, the client CA, the tokens.
        for (const [path, m] of [[tls.dir, 0o750], [tls.serverKey, 0o640], [tls.serverCert, 0o644], [tls.caCert, 0o644], [tls.tokenFile, 0o640]] as const) {
          chownSync(path, statSync(path).uid, user.gid);
          chmodSync(path, m);
        }
      }
    }
    const unitPath = resolveUserPath(flags['unit-file'] ?? defaultUnitPath(mode));
    const content = renderUnit({
      mode,
      node: process.execPath,
      bin: fileURLToPath(new URL('../../bin/run.js', import.meta.url)),
      configPath: plan.configPath,
      dataDir: plan.dataDir,
      socketDirs: socketDirs(plan.listen),
      bwrapSetuid: bwrapIsSetuid(),
      ...(user ? { user: user.name } : {}),
    });
    let outcome: ReturnType<typeof writeConfigFile>['outcome'];
    try {
      outcome = writeConfigFile(unitPath, content, flags.force).outcome;
    } catch (err) {
      if (err instanceof ConfigFileDiffersError) throw new UserError(err.message, `--force replaces it (the old one is kept as ${err.path}.bak), or --unit-file FILE writes elsewhere.`);
      throw err;
    }
    return {
      mode,
      unitPath,
      outcome,
      running: systemdRunning(),
      ...(user ? { user: { name: user.name, uid: user.uid, created: user.created } } : {}),
      commands: enableCommands(mode),
    };
  }
}

/** Whether the bwrap in PATH is setuid root (old or hardened distributions): it then breaks under NoNewPrivileges=. */
function bwrapIsSetuid(): boolean {
  const bwrap = findBubblewrap();
  try {
    return bwrap !== undefined && (statSync(bwrap).mode & 0o4000) !== 0;
  } catch {
    return false;
  }
}
