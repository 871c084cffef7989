/**
 * An error the user can fix (a bad flag, a config, a data dir in use): the CLI prints its
 * message and suggestion, never a stack trace, and exits 2. Library errors of that kind extend
 * it (ConfigError, DataDirLockedError, DataDirFormatError, NoStoreError), so the CLI's base
 * command recognises them without knowing each one.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly suggestion?: string,
  ) {
    super(message);
    this.name = 'UserError';
  }
}
