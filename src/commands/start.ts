import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { DEFAULT_UPSTREAM, loadConfig, validateListen, validateUpstreamUrl, DEFAULT_LISTEN, defaultDataDir } from '../config/config.js';
import { defaultPidFile, pidFileOwner, removePidFile, stopCommandFor, writePidFile } from '../daemon/daemon-control.js';
import { Daemon } from '../daemon/daemon.js';
import { isLmdbCommitFailure, lmdbCause } from '../store/disk-space.js';
import { makeDataDir } from '../daemon/data-dir-lock.js';
import { createLogger, LOG_FORMATS, type LogFormat } from '../util/logger.js';

export default class Start extends BaseCommand {
  static override summary = 'Run the reexec daemon (in the foreground unless --detach).';
  static override description = `Serves every REAPI service from one data dir. Without a config file it runs on the embedded defaults: ${DEFAULT_LISTEN}, data in $XDG_DATA_HOME/reexec. Stops cleanly on SIGINT or SIGTERM, or with \`reexec stop\` (which finds it through the same --config/--data-dir, detached or not).`;
  static override examples = [
    '<%= config.bin %> start',
    '<%= config.bin %> start --listen 127.0.0.1:0 --data-dir /tmp/reexec',
    '<%= config.bin %> start --listen unix:/run/user/1000/reexec.sock',
    '<%= config.bin %> start --detach --pid-file reexec.pid --log-file reexec.log',
    '<%= config.bin %> start --upstream grpcs://cache.example.com:443',
  ];
  static override enableJsonFlag = false;

  static override flags = {
    listen: Flags.string({ char: 'l', multiple: true, description: 'HOST:PORT (port 0 picks a free one) or unix:PATH; repeat for several' }),
    'data-dir': Flags.string({ char: 'd', description: 'where the store lives (overrides the config)' }),
    'log-format': Flags.string({ options: [...LOG_FORMATS], description: 'log lines on stderr for people, for machines (json), or for the systemd journal (no timestamps, syslog priorities)' }),
    'log-level': Flags.string({ options: ['debug', 'info', 'warn', 'error'] }),
    detach: Flags.boolean({ description: 'run in the background; print the address and return once it serves' }),
    'pid-file': Flags.string({ description: 'write the pid here once serving, removed on exit (default with --detach: DATA_DIR/daemon.pid)' }),
    'log-file': Flags.string({ description: 'with --detach: where the logs go (default: DATA_DIR/daemon.log)' }),
    upstream: Flags.string({ description: 'stand in front of this REAPI server (grpc://HOST:PORT or grpcs://): read through on local misses, write behind (overrides upstream.url; README "Behind a cluster")' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Start);
    const config = loadConfig(flags.config);
    if (flags.listen) config.listen = flags.listen.map(validateListen);
    if (flags['data-dir']) config.dataDir = resolve(flags['data-dir']);
    if (flags['log-format']) config.log.format = flags['log-format'] as LogFormat;
    if (flags.upstream) config.upstream = { ...DEFAULT_UPSTREAM, ...config.upstream, url: validateUpstreamUrl(flags.upstream, '--upstream') };
    if (flags['log-level']) config.log.level = flags['log-level'] as 'debug' | 'info' | 'warn' | 'error';

    const pidFile = flags['pid-file'] ? resolve(flags['pid-file']) : flags.detach ? defaultPidFile(config.dataDir) : undefined;
    if (pidFile) refuseLivePidFile(pidFile);
    if (flags.detach) return this.detach(flags, config.dataDir, pidFile!);

    const log = createLogger(config.log);
    // Signals are handled from the start: one that arrives while the daemon opens its store
    // (a data dir migration can take a while) stops it as soon as it is up.
    let daemon: Daemon | undefined;
    let stopping = false;
    const shutdown = (d: Daemon): void => {
      d.stop().then(
        () => process.exit(0),
        (err: Error) => {
          log.error(`shutdown failed: ${err.message}`);
          process.exit(1);
        },
      );
    };
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn(`${signal} again: exiting without waiting`);
        process.exit(130);
      }
      stopping = true;
      log.info(daemon ? `${signal} received` : `${signal} received while starting: stopping once started`);
      if (daemon) shutdown(daemon);
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    daemon = await Daemon.start(config, log).catch((err: Error) => {
      // The user's errors (config, data dir in use or too new) say what to do already.
      if (err instanceof UserError) throw err;
      throw new UserError(`reexec could not start: ${err.message}`);
    });
    if (pidFile) {
      try {
        writePidFile(pidFile);
      } catch (err) {
        log.warn(`cannot write the pid file ${pidFile}: ${(err as Error).message}`);
      }
      process.once('exit', () => removePidFile(pidFile));
    }
    if (stopping) shutdown(daemon);
    // Nothing a client sends may crash the daemon: log what escaped and keep serving.
    process.on('unhandledRejection', (reason) => {
      if (isLmdbCommitFailure(reason)) {
        // lmdb-js's own promise of a failed commit (another process filled the disk between our
        // check and the commit): the writers got RESOURCE_EXHAUSTED already.
        void lmdbCause(reason).then((cause) => log.warn(`a write to the store failed: ${String(cause)}; its clients were told (RESOURCE_EXHAUSTED)`));
        return;
      }
      log.error('unhandled rejection (a bug)', { error: String(reason) });
    });
    await new Promise(() => undefined);
  }

  /**
   * Start the daemon as a child in its own session, logging to a file, and return once it
   * serves and has written its pid file (the child writes it, and removes it when it stops).
   */
  private async detach(flags: Record<string, unknown>, dataDir: string, pidFile: string): Promise<void> {
    makeDataDir(dataDir);
    mkdirSync(dirname(pidFile), { recursive: true });
    const logFile = resolve((flags['log-file'] as string | undefined) ?? join(dataDir, 'daemon.log'));
    mkdirSync(dirname(logFile), { recursive: true });
    const args = withoutFlags(process.argv.slice(2), ['--detach'], ['--pid-file']);
    const bin = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
    const fd = openSync(logFile, 'a');
    const start = existsSync(logFile) ? readFileSync(logFile).length : 0;
    const child = spawn(process.execPath, [bin, ...args, '--pid-file', pidFile, '--log-format', 'json'], { detached: true, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    child.unref();
    // 30 s without a word from the daemon is a hang; a long data dir migration keeps logging.
    const quietLimitMs = 30_000;
    let deadline = Date.now() + quietLimitMs;
    let seen = 0;
    let addresses: string[] | undefined;
    while (Date.now() < deadline) {
      const text = readFileSync(logFile, 'utf8').slice(start);
      const complete = text.slice(0, text.lastIndexOf('\n') + 1);
      if (complete.length > seen) {
        deadline = Date.now() + quietLimitMs;
        for (const line of complete.slice(seen).split('\n')) {
          if (!line.startsWith('{')) continue;
          const entry = JSON.parse(line) as { msg?: string; addresses?: string[]; phase?: string };
          if (entry.addresses) addresses = entry.addresses;
          // Upgrading the data dir can take a while: say so.
          if (entry.phase === 'migration' && entry.msg) this.log(entry.msg);
        }
        seen = complete.length;
      }
      const owner = addresses ? pidFileOwner(pidFile) : undefined;
      if (addresses && owner && 'pid' in owner && owner.pid === child.pid) {
        const stop = stopCommandFor({ config: flags['config'] as string | undefined, dataDir, pidFile }, loadedDefaultDataDir(flags));
        this.log(`reexec running (pid ${child.pid}) on ${addresses.join(', ')}; logs in ${logFile}; pid in ${pidFile}; stop it with: ${stop}`);
        return;
      }
      const code = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      if (code !== undefined) {
        throw new UserError(`the daemon exited (code ${code}) before serving:\n${readFileSync(logFile, 'utf8').slice(start).trim()}`);
      }
    }
    throw new UserError(`the daemon (pid ${child.pid}) logged nothing for 30 s and is not serving yet; see ${logFile}`);
  }
}

/**
 * A pid file that names a running reexec daemon belongs to it: starting a second daemon with
 * the same pid file would leave `reexec stop` unable to find the first.
 */
function refuseLivePidFile(pidFile: string): void {
  const owner = pidFileOwner(pidFile);
  if (owner && 'pid' in owner && owner.pid !== process.pid) {
    throw new UserError(
      `the pid file ${pidFile} belongs to a running reexec daemon (pid ${owner.pid})`,
      `Stop it first (reexec stop --pid-file ${pidFile}), or give this one another --pid-file.`,
    );
  }
}

/** argv without the boolean flags `drop` and the flags `dropWithValue` (and their values). */
function withoutFlags(argv: readonly string[], drop: readonly string[], dropWithValue: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (drop.includes(a)) continue;
    if (dropWithValue.includes(a)) {
      i++;
      continue;
    }
    if (dropWithValue.some((f) => a.startsWith(`${f}=`))) continue;
    out.push(a);
  }
  return out;
}

/** The data dir `reexec stop` would find without --data-dir: the config's, else the default. */
function loadedDefaultDataDir(flags: Record<string, unknown>): string {
  try {
    return loadConfig(flags['config'] as string | undefined).dataDir;
  } catch {
    return defaultDataDir();
  }
}
