import { Command, Flags, Errors } from '@oclif/core';
import { ADMIN_RIGHT_SUGGESTION, AdminRefusedError, DaemonUnreachableError, NotReexecError } from '../client/daemon-errors.js';
import { UserError } from '../util/user-error.js';

export { UserError };

/** Exit status when no daemon answers (as `systemctl status` says "not running"). */
export const EXIT_NOT_RUNNING = 3;

/** A gRPC status error from the daemon (it answered, and refused). */
const isDaemonRefusal = (err: unknown): err is Error & { code: number; details: string } =>
  typeof (err as { code?: unknown }).code === 'number' && typeof (err as { details?: unknown }).details === 'string';

/**
 * What every reexec command shares: `--json` (the value run() returns is the JSON contract),
 * `--config`, and one error taxonomy mapped to exit codes:
 * - the user's errors (UserError and the library errors that extend it: a bad flag, a config,
 *   a data dir in use or of a newer format, a refusal by the daemon): message and suggestion,
 *   no stack, exit 2;
 * - the daemon is unreachable (DaemonUnreachableError): what to do, exit `unreachableExitCode`;
 *   it refuses the Admin API (AdminRefusedError): exit 2; it is not reexec (NotReexecError): exit 1;
 * - anything else is a bug or a failure of the host: oclif's report, exit 1.
 */
export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    config: Flags.string({ char: 'c', description: 'config file (default: $XDG_CONFIG_HOME/reexec/config.yaml if it exists)', helpGroup: 'GLOBAL' }),
  };

  /** Exit status when no daemon answers (`reexec status`: EXIT_NOT_RUNNING). */
  protected unreachableExitCode = 2;

  /** What to tell the user when no daemon answers. */
  protected unreachableSuggestion(_err: DaemonUnreachableError): string {
    return 'Is the daemon running? Start it with `reexec start` (or `reexec start --detach` to run it in the background).';
  }

  /** Report an error the user can act on and exit with `code`; `extra` goes into the JSON error. */
  protected fail(message: string, suggestion: string | undefined, code: number, extra: Record<string, unknown> = {}): never {
    if (this.jsonEnabled()) this.logJson({ error: { message, suggestion, ...extra } });
    else this.logToStderr(`Error: ${message}${suggestion ? `\n${suggestion}` : ''}`);
    return this.exit(code);
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    if (err instanceof Errors.ExitError) throw err;
    if (err instanceof UserError) return this.fail(err.message, (err as UserError).suggestion, 2);
    if (err instanceof DaemonUnreachableError) return this.fail(err.message, this.unreachableSuggestion(err), this.unreachableExitCode, { running: false });
    if (err instanceof AdminRefusedError) return this.fail(err.message, ADMIN_RIGHT_SUGGESTION, 2, { running: true });
    if (err instanceof NotReexecError) return this.fail(err.message, 'Point --endpoint at a reexec daemon (the command needs its Admin API).', 1, { running: false });
    if (isDaemonRefusal(err)) return this.fail(`the daemon refused: ${err.details}`, undefined, 2);
    return super.catch(err);
  }
}
