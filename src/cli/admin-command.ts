import { Flags } from '@oclif/core';
import type { ClientSecurity } from '../client/client-security.js';
import { HistoryRequestError } from '../history/history-client.js';
import { BaseCommand, EXIT_NOT_RUNNING } from './base-command.js';
import { resolveDaemon } from './daemon-endpoint.js';


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
    return resolveDaemon({ endpoint: flags.endpoint, config: flags.config, need: 'admin' });
  }

  protected override unreachableExitCode = EXIT_NOT_RUNNING;

  protected override unreachableSuggestion(): string {
    const viaEndpoint = this.argv.some((a) => a.startsWith('--endpoint') || a === '-e');
    return `Is the daemon running? Start it with \`reexec start\` (the history lives in the daemon's data dir)${viaEndpoint ? '' : ', or reach another one with --endpoint grpc://HOST:PORT or unix:PATH'}.`;
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    // Unreachable, refused and not-reexec daemons are the base command's; what the history says, a user error.
    if (err instanceof HistoryRequestError) return this.fail(err.message, undefined, 2);
    return super.catch(err);
  }
}
