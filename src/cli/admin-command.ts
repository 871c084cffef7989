import { Flags } from '@oclif/core';
import { localAccess, type ClientSecurity } from '../client/client-security.js';
import { loadConfig, validateListen } from '../config/config.js';
import { HistoryRequestError } from '../history/history-client.js';
import { AdminRefusedError, DaemonUnreachableError, NotReexecError } from '../status/status-client.js';
import { EXIT_NOT_RUNNING } from '../commands/status.js';
import { BaseCommand } from './base-command.js';


/**
 * A command that asks the running daemon through its Admin API (`reexec history`, `show`,
 * `explain`, `shell`): `--endpoint` or the config's listener with its TLS files and an admin
 * token, and one report of what went wrong: exit 3 when no daemon answers, 2 when it refuses
 * (no admin right) or does not know what was asked for, 1 otherwise.
 */
export abstract class AdminCommand extends BaseCommand {
  static override baseFlags = {
    ...BaseCommand.baseFlags,
    endpoint: Flags.string({ char: 'e', description: 'the daemon to ask: grpc://HOST:PORT, grpcs://HOST:PORT, HOST:PORT or unix:PATH (default: from the config)', helpGroup: 'GLOBAL' }),
  };

  /** The daemon's address and credentials: --endpoint (REEXEC_TOKEN for a token), else from the config. */
  protected daemonAccess(flags: { endpoint?: string; config?: string }): { endpoint: string; security: ClientSecurity } {
    if (flags.endpoint) {
      if (!/^(grpcs?|https?):\/\//.test(flags.endpoint)) validateListen(flags.endpoint);
      return { endpoint: flags.endpoint, security: process.env.REEXEC_TOKEN ? { token: process.env.REEXEC_TOKEN } : {} };
    }
    return localAccess(loadConfig(flags.config), 'admin');
  }

  private report(message: string, suggestion: string | undefined, exit: number, extra: Record<string, unknown> = {}): never {
    if (this.jsonEnabled()) this.logJson({ error: { message, suggestion, ...extra } });
    else this.logToStderr(`Error: ${message}${suggestion ? `\n${suggestion}` : ''}`);
    return this.exit(exit);
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    if (err instanceof AdminRefusedError) {
      return this.report(
        err.message,
        'The Admin API needs a token with the admin right (REEXEC_TOKEN, or the token file of the config given with --config), or a connection over loopback or the unix socket when the daemon has no token file.',
        2,
        { running: true },
      );
    }
    if (err instanceof DaemonUnreachableError) {
      const viaEndpoint = this.argv.some((a) => a.startsWith('--endpoint') || a === '-e');
      return this.report(
        err.message,
        `Is the daemon running? Start it with \`reexec start\` (the history lives in the daemon's data dir)${viaEndpoint ? '' : ', or reach another one with --endpoint grpc://HOST:PORT or unix:PATH'}.`,
        EXIT_NOT_RUNNING,
        { running: false },
      );
    }
    if (err instanceof NotReexecError) return this.report(err.message, 'Point --endpoint at a reexec daemon (this command needs its Admin API).', 1);
    if (err instanceof HistoryRequestError) return this.report(err.message, undefined, 2);
    return super.catch(err);
  }
}
