import { Flags } from '@oclif/core';
import { AdminCommand } from '../cli/admin-command.js';
import { UserError } from '../cli/base-command.js';
import { parseDuration } from '../config/config.js';
import type { HistoryEntry } from '../history/entry.js';
import { HistoryClient } from '../history/history-client.js';
import { formatLine, formatTable } from '../history/render.js';

/** "1h", "90m", "2d", "30s" ago, or a date ("2026-11-30", "2026-11-30T12:00"): ms since the epoch. */
export function parseSince(text: string, now = Date.now()): number {
  if (/^\s*[0-9]+(\.[0-9]+)?\s*[smhd]?\s*$/.test(text)) return now - parseDuration(text, '--since') * 1000;
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new UserError(`--since "${text}" is neither a duration (30s, 15m, 1h, 2d) nor a date (2026-11-30, 2026-11-30T12:00)`);
  return t;
}

export default class History extends AdminCommand {
  static override summary = 'List the actions the daemon ran or looked up, newest first.';
  static override description =
    'Every Execute (run, or answered from the action cache) and every GetActionResult (hit or miss) the daemon recorded: when, how it ended, how long it took, ' +
    'the action digest (give its start to `reexec show` or `reexec explain`), the tool, and the target and command. ' +
    'Filters combine: --failed (actions that exited non-zero or failed), --since, --tool (from the RequestMetadata clients send: bazel, bst, recc…), --target, --invocation. ' +
    '--json prints one JSON object per line; --watch keeps printing new entries as they are recorded until interrupted.';
  static override examples = [
    '<%= config.bin %> history',
    '<%= config.bin %> history --failed --since 1h',
    '<%= config.bin %> history --tool bazel --target //src:hello',
    '<%= config.bin %> history --invocation 8f0e2c',
    '<%= config.bin %> history --watch',
    '<%= config.bin %> history --json --limit 1000 > history.jsonl',
  ];

  static override flags = {
    failed: Flags.boolean({ description: 'only actions that failed (a non-zero exit code, or an error such as a timeout)' }),
    since: Flags.string({ description: 'only entries since this long ago (30s, 15m, 1h, 2d) or this date (2026-11-30T12:00)' }),
    tool: Flags.string({ description: 'only calls from this tool, as its RequestMetadata names it (bazel, bst, recc, …)' }),
    target: Flags.string({ description: 'only actions whose target id (RequestMetadata) contains this' }),
    invocation: Flags.string({ description: 'only calls of this tool invocation (its id, or the start of it)' }),
    kind: Flags.string({ options: ['execute', 'lookup'], description: 'only Execute calls, or only action cache lookups (GetActionResult)' }),
    limit: Flags.integer({ char: 'n', min: 1, max: 100_000, description: 'how many entries (default 50; with --watch, how many to print before following)' }),
    watch: Flags.boolean({ char: 'w', description: 'then keep printing new entries as they are recorded (oldest first, like tail -f) until interrupted' }),
  };

  private client: HistoryClient | undefined;

  async run(): Promise<HistoryEntry[] | void> {
    const { flags } = await this.parse(History);
    const { endpoint, security } = this.daemonAccess(flags);
    const req = {
      limit: flags.limit ?? (flags.watch ? 20 : 50),
      failedOnly: flags.failed,
      sinceUnixMs: flags.since ? parseSince(flags.since) : 0,
      tool: flags.tool ?? '',
      target: flags.target ?? '',
      invocation: flags.invocation ?? '',
      kind: flags.kind ?? '',
    };
    this.client = new HistoryClient(endpoint, security);
    const client = this.client;
    const width = process.stdout.isTTY ? process.stdout.columns || 120 : undefined;
    try {
      if (flags.watch) {
        const json = this.jsonEnabled();
        const follow = client.follow({ ...req, watch: true, oldestFirst: true }, (e) => {
          process.stdout.write(json ? JSON.stringify(e) + '\n' : formatLine(e, width) + '\n');
        });
        const stop = (): void => follow.cancel();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          await follow.done;
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
        return;
      }
      const entries = await client.list(req);
      if (this.jsonEnabled()) {
        // One object per line, as --watch prints them (a script reads both the same way).
        for (const e of entries) process.stdout.write(JSON.stringify(e) + '\n');
        return;
      }
      if (entries.length === 0) {
        const filtered = req.failedOnly || req.sinceUnixMs || req.tool || req.target || req.invocation || req.kind;
        this.log(filtered ? 'No recorded action matches these filters.' : 'The history is empty: no action has been executed or looked up since the history was enabled.');
        return;
      }
      process.stdout.write(formatTable(entries, { width }));
      return;
    } finally {
      client.close();
    }
  }

  // --json prints JSON lines itself: oclif must not print the return value again.
  protected override logJson(json: unknown): void {
    if (json === undefined) return;
    super.logJson(json);
  }
}
