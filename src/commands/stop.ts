import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command.js';
import { loadConfig, parseDuration } from '../config/config.js';
import { defaultPidFile, findDaemon, removePidFile, StopFailedError, stopDaemon, type DaemonLookup, type StopEvent } from '../daemon/daemon-control.js';

/** `reexec stop` exit statuses (besides 0, stopped; and 2, a usage or config mistake). */
export const STOP_EXIT = {
  /** No daemon was running (as `reexec status` and LSB init scripts say "not running"). */
  notRunning: 3,
  /** A daemon is running and is still running: not allowed to signal it, or it would not die. */
  couldNotStop: 1,
} as const;

export interface StopResult {
  /** Whether a daemon was running when the command started. */
  wasRunning: boolean;
  pid?: number;
  dataDir: string;
  /** How the daemon went: drained (SIGTERM, clean exit) or killed (SIGKILL after --timeout). */
  how?: 'drained' | 'killed';
  seconds?: number;
  /** Why nothing was stopped. */
  reason?: string;
  /** A pid file naming a process that was gone, removed. */
  removedStalePidFile?: string;
  /** The systemd service the daemon ran as, when it did (user: a user manager's). */
  systemdUnit?: { name: string; user: boolean };
}

export default class Stop extends BaseCommand {
  static override summary = 'Stop the reexec daemon: drain running calls, stop running actions, close the store.';
  static override description =
    'Finds the daemon through the data dir it holds (from --data-dir, else the config), whether it was started with --detach or in the foreground, ' +
    'or through --pid-file. Sends SIGTERM: the daemon stops accepting calls, lets running ones finish (up to 10 s), stops running actions ' +
    '(they run again after the next start) and flushes the store. If it is still running after --timeout, it gets SIGKILL, which the store survives. ' +
    `Exit status: 0 stopped, ${STOP_EXIT.notRunning} no daemon was running, ${STOP_EXIT.couldNotStop} it could not be stopped (another user's process, or it would not exit), 2 bad flags or config.`;
  static override examples = [
    '<%= config.bin %> stop',
    '<%= config.bin %> stop --data-dir /srv/reexec',
    '<%= config.bin %> stop --pid-file reexec.pid --timeout 120',
    '<%= config.bin %> stop --json',
  ];

  static override flags = {
    'data-dir': Flags.string({ char: 'd', description: 'the data dir of the daemon to stop (default: the config\'s)' }),
    'pid-file': Flags.string({ description: 'stop the daemon whose pid this file holds (as given to start --pid-file)' }),
    timeout: Flags.string({ char: 't', default: '30', description: 'seconds to wait for a graceful exit before SIGKILL (examples: 30, 2m)' }),
    'no-kill': Flags.boolean({ description: 'never SIGKILL: past --timeout, give up with exit status 1 and leave the daemon running' }),
  };

  async run(): Promise<StopResult> {
    const { flags } = await this.parse(Stop);
    const config = loadConfig(flags.config);
    const dataDir = flags['data-dir'] ? resolve(flags['data-dir']) : config.dataDir;
    const timeoutMs = parseDuration(flags.timeout, '--timeout') * 1000;
    const pidFile = flags['pid-file'] ? resolve(flags['pid-file']) : undefined;
    const fail = (err: StopFailedError, pid?: number): never => {
      if (this.jsonEnabled()) this.logJson({ wasRunning: pid !== undefined, ...(pid !== undefined ? { pid } : {}), dataDir, error: { message: err.message, suggestion: err.suggestion } });
      else this.logToStderr(`Error: could not stop reexec: ${err.message}${err.suggestion ? `\n${err.suggestion}` : ''}`);
      return this.exit(STOP_EXIT.couldNotStop);
    };
    let found: DaemonLookup;
    try {
      found = findDaemon({ dataDir, ...(pidFile ? { pidFile } : {}) });
    } catch (err) {
      if (!(err instanceof StopFailedError)) throw err;
      return fail(err);
    }

    if (!found.running) {
      const result: StopResult = { wasRunning: false, dataDir, reason: found.why };
      if (found.stalePidFile) {
        rmSync(found.stalePidFile, { force: true });
        result.removedStalePidFile = found.stalePidFile;
      }
      if (this.jsonEnabled()) this.logJson(result);
      else this.logToStderr(`reexec is not running: ${found.why}${result.removedStalePidFile ? ` (removed the stale ${result.removedStalePidFile})` : ''}`);
      this.exit(STOP_EXIT.notRunning);
    }

    const { pid } = found;
    if (!this.jsonEnabled()) {
      this.log(`Stopping reexec (pid ${pid}, data dir ${dataDir}): draining calls, stopping running actions, closing the store…`);
      if (found.systemdUnit) {
        const { name, user } = found.systemdUnit;
        this.log(`  (it runs as the systemd service ${name}: \`${user ? 'systemctl --user' : 'sudo systemctl'} stop ${name}\` is the usual way; a clean stop is not restarted)`);
      }
    }
    const onEvent = (e: StopEvent): void => {
      if (this.jsonEnabled()) return;
      if (e.kind === 'waiting') this.log(`  still draining after ${e.seconds} s (${flags['no-kill'] ? 'giving up' : 'SIGKILL'} at ${Math.round(timeoutMs / 1000)} s)`);
      else if (e.signal === 'SIGKILL') {
        this.log(`  still running after ${Math.round(timeoutMs / 1000)} s: sending SIGKILL. The store is crash-safe; actions that were running run again after the next start.`);
      }
    };
    let outcome;
    try {
      outcome = await stopDaemon(pid, { ...(found.startTicks !== undefined ? { startTicks: found.startTicks } : {}), timeoutMs, killAfterTimeout: !flags['no-kill'], onEvent });
    } catch (err) {
      if (!(err instanceof StopFailedError)) throw err;
      return fail(err, pid);
    }
    // A killed daemon could not remove its pid file.
    removePidFile(pidFile ?? defaultPidFile(dataDir), pid);
    const result: StopResult = { wasRunning: true, pid, dataDir, how: outcome.how, seconds: Math.round(outcome.seconds * 10) / 10, ...(found.systemdUnit ? { systemdUnit: found.systemdUnit } : {}) };
    if (!this.jsonEnabled()) this.log(outcome.how === 'drained' ? `Stopped (${result.seconds} s).` : `Killed (SIGKILL after ${Math.round(timeoutMs / 1000)} s).`);
    return result;
  }
}
