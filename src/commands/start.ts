import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { loadConfig, validateListen, ConfigError, DEFAULT_LISTEN } from '../config/config.js';
import { Daemon } from '../daemon/daemon.js';
import { createLogger } from '../util/logger.js';

export default class Start extends BaseCommand {
  static override summary = 'Run the reexec daemon (in the foreground unless --detach).';
  static override description = `Serves every REAPI service from one data dir. Without a config file it runs on the embedded defaults: ${DEFAULT_LISTEN}, data in $XDG_DATA_HOME/reexec. Stops cleanly on SIGINT or SIGTERM.`;
  static override examples = [
    '<%= config.bin %> start',
    '<%= config.bin %> start --listen 127.0.0.1:0 --data-dir /tmp/reexec',
    '<%= config.bin %> start --listen unix:/run/user/1000/reexec.sock',
    '<%= config.bin %> start --detach --pid-file reexec.pid --log-file reexec.log',
  ];
  static override enableJsonFlag = false;

  static override flags = {
    listen: Flags.string({ char: 'l', multiple: true, description: 'HOST:PORT (port 0 picks a free one) or unix:PATH; repeat for several' }),
    'data-dir': Flags.string({ char: 'd', description: 'where the store lives (overrides the config)' }),
    'log-format': Flags.string({ options: ['human', 'json'], description: 'log lines on stderr for people or for machines' }),
    'log-level': Flags.string({ options: ['debug', 'info', 'warn', 'error'] }),
    detach: Flags.boolean({ description: 'run in the background; print the address and return once it serves' }),
    'pid-file': Flags.string({ description: 'with --detach: where to write the pid (default: DATA_DIR/daemon.pid)' }),
    'log-file': Flags.string({ description: 'with --detach: where the logs go (default: DATA_DIR/daemon.log)' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Start);
    const config = loadConfig(flags.config);
    if (flags.listen) config.listen = flags.listen.map(validateListen);
    if (flags['data-dir']) config.dataDir = resolve(flags['data-dir']);
    if (flags['log-format']) config.log.format = flags['log-format'] as 'human' | 'json';
    if (flags['log-level']) config.log.level = flags['log-level'] as 'debug' | 'info' | 'warn' | 'error';

    if (flags.detach) return this.detach(flags, config.dataDir);

    const log = createLogger(config.log);
    const daemon = await Daemon.start(config, log).catch((err: Error) => {
      if (err instanceof ConfigError || err.name === 'DataDirLockedError') throw err;
      throw new UserError(`reexec could not start: ${err.message}`);
    });
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn(`${signal} again: exiting without waiting`);
        process.exit(130);
      }
      stopping = true;
      log.info(`${signal} received`);
      daemon.stop().then(
        () => process.exit(0),
        (err: Error) => {
          log.error(`shutdown failed: ${err.message}`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    // Nothing a client sends may crash the daemon: log what escaped and keep serving.
    process.on('unhandledRejection', (reason) => log.error('unhandled rejection (a bug)', { error: String(reason) }));
    await new Promise(() => undefined);
  }

  private async detach(flags: Record<string, unknown>, dataDir: string): Promise<void> {
    mkdirSync(dataDir, { recursive: true });
    const pidFile = resolve((flags['pid-file'] as string | undefined) ?? join(dataDir, 'daemon.pid'));
    const logFile = resolve((flags['log-file'] as string | undefined) ?? join(dataDir, 'daemon.log'));
    mkdirSync(dirname(logFile), { recursive: true });
    const args = process.argv.slice(2).filter((a) => a !== '--detach');
    const bin = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
    const fd = openSync(logFile, 'a');
    const start = existsSync(logFile) ? readFileSync(logFile).length : 0;
    const child = spawn(process.execPath, [bin, ...args, '--log-format', 'json'], { detached: true, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    child.unref();
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const text = readFileSync(logFile, 'utf8').slice(start);
      for (const line of text.split('\n')) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as { msg?: string; addresses?: string[] };
        if (entry.addresses) {
          writeFileSync(pidFile, `${child.pid}\n`);
          this.log(`reexec running (pid ${child.pid}) on ${entry.addresses.join(', ')}; logs in ${logFile}; stop it with: kill $(cat ${pidFile})`);
          return;
        }
      }
      const code = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      if (code !== undefined) {
        throw new UserError(`the daemon exited (code ${code}) before serving:\n${readFileSync(logFile, 'utf8').slice(start).trim()}`);
      }
    }
    throw new UserError(`the daemon did not report serving within 30 s; see ${logFile}`);
  }
}
