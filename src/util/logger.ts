/** Human-readable, JSON-lines or journald logs on stderr. The daemon's only logging facility. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/**
 * human: a timestamp, the level and the message; json: one object per line; journal: for
 * systemd's journal, which stamps each line itself: no timestamp, the level as a syslog
 * priority prefix ("<3>" error … "<7>" debug) that journald reads (SyslogLevelPrefix=).
 */
export type LogFormat = 'human' | 'json' | 'journal';
export const LOG_FORMATS: readonly LogFormat[] = ['human', 'json', 'journal'];

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(
  options: { format?: LogFormat; level?: LogLevel; write?: (line: string) => void } = {},
  bound: Record<string, unknown> = {},
): Logger {
  const format = options.format ?? 'human';
  const min = ORDER[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const log = (level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void => {
    if (ORDER[level] < min) return;
    const all = { ...bound, ...fields };
    if (format === 'json') {
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...all }));
      return;
    }
    const extra = Object.entries(all)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    const text = `${msg}${extra ? ' ' + extra : ''}`;
    // journald takes one entry per line: a message with newlines (a stack) stays one entry.
    if (format === 'journal') write(`<${PRIORITY[level]}>${text.replace(/\n/g, ' ⏎ ')}`);
    else write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${text}`);
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger(options, { ...bound, ...fields }),
  };
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = createLogger({ write: () => undefined, level: 'error' });
