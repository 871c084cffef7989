import { Command, Flags, Errors } from '@oclif/core';
import { ConfigError } from '../config/config.js';
import { DataDirFormatError } from '../daemon/data-dir-format.js';
import { DataDirLockedError } from '../daemon/data-dir-lock.js';

/** Errors the user can fix: a clear message and what to do, never a stack trace. */
export class UserError extends Error {
  constructor(message: string, readonly suggestion?: string) {
    super(message);
    this.name = 'UserError';
  }
}

/**
 * What every reexec command shares: `--json` (the value run() returns is the JSON contract),
 * `--config`, and one mapping of errors to exit codes: 2 for the user's mistakes (bad flags,
 * config, a data dir in use or of a newer format), 1 for failures of the host or a bug.
 */
export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    config: Flags.string({ char: 'c', description: 'config file (default: $XDG_CONFIG_HOME/reexec/config.yaml if it exists)', helpGroup: 'GLOBAL' }),
  };

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    if (err instanceof ConfigError || err instanceof DataDirLockedError || err instanceof DataDirFormatError || err instanceof UserError) {
      const suggestion = err instanceof UserError || err instanceof DataDirFormatError ? (err as UserError | DataDirFormatError).suggestion : undefined;
      if (this.jsonEnabled()) {
        this.logJson({ error: { message: err.message, suggestion } });
        this.exit(2);
      }
      this.logToStderr(`Error: ${err.message}${suggestion ? `\n${suggestion}` : ''}`);
      this.exit(2);
    }
    if (err instanceof Errors.ExitError) throw err;
    return super.catch(err);
  }
}
