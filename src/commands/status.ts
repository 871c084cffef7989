import { Flags } from '@oclif/core';
import { BaseCommand, EXIT_NOT_RUNNING } from '../cli/base-command.js';
import { resolveDaemon } from '../cli/daemon-endpoint.js';
import { DaemonUnreachableError } from '../client/daemon-errors.js';
import { HistoryClient } from '../history/history-client.js';
import { renderPlain } from '../status/render-plain.js';
import { StatusClient } from '../status/status-client.js';
import type { StatusSnapshot } from '../status/status-snapshot.js';

export { EXIT_NOT_RUNNING };

const isCi = (): boolean => ['CI', 'CONTINUOUS_INTEGRATION'].some((k) => k in process.env && process.env[k] !== '0' && process.env[k] !== 'false');

export default class Status extends BaseCommand {
  static override summary = 'Show what the reexec daemon is doing: a live dashboard, or a plain or JSON snapshot.';
  static override description =
    'On a terminal, a dashboard refreshed several times a second: worker slots and what they run, the queue, recent completions, ' +
    'cache hit rate, store size and RPC traffic, and the action history (keys: tab or 1-4 switch views, p pauses, q quits; in History, ↑↓ select an action and f shows failures only). ' +
    'When stdout is not a terminal it prints one plain-text snapshot; --watch keeps printing them; --json prints the snapshot as JSON. ' +
    "The daemon is found through the config (a unix listener if it has one, else the first address, with the config's TLS files and a token with the admin right from its token file), " +
    `or --endpoint (grpcs:// for TLS; REEXEC_TOKEN gives a token). Exit status ${EXIT_NOT_RUNNING} when no daemon answers.`;
  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --json',
    '<%= config.bin %> status --watch --interval 5',
    '<%= config.bin %> status --endpoint grpc://127.0.0.1:50051',
    'REEXEC_TOKEN=... <%= config.bin %> status --endpoint grpcs://buildhost:50051',
    '<%= config.bin %> status --endpoint unix:/run/user/1000/reexec.sock',
  ];

  static override flags = {
    endpoint: Flags.string({ char: 'e', description: 'the daemon to ask: grpc://HOST:PORT, grpcs://HOST:PORT, HOST:PORT or unix:PATH (default: from the config)' }),
    watch: Flags.boolean({ char: 'w', description: 'print a plain snapshot every --interval seconds until interrupted (with --json: one JSON object per line)' }),
    interval: Flags.string({ char: 'i', description: 'seconds between refreshes (default: 0.4 for the dashboard, 2 for --watch)' }),
    plain: Flags.boolean({ description: 'print one plain-text snapshot even on a terminal' }),
  };

  private client: StatusClient | undefined;

  protected override unreachableExitCode = EXIT_NOT_RUNNING;

  protected override unreachableSuggestion(): string {
    return (
      `Is the daemon running? Start it with \`reexec start\` (or \`reexec start --detach\` to run it in the background)` +
      `${this.argv.some((a) => a.startsWith('--endpoint') || a === '-e') ? '' : ', or reach another one with --endpoint grpc://HOST:PORT or unix:PATH'}.`
    );
  }

  async run(): Promise<StatusSnapshot | void> {
    const { flags } = await this.parse(Status);
    const { endpoint, security } = resolveDaemon({ endpoint: flags.endpoint, config: flags.config, need: 'admin' });
    const interval = flags.interval === undefined ? undefined : Number(flags.interval);
    if (interval !== undefined && !(interval >= 0.1)) this.error(`--interval must be a number of seconds, at least 0.1 (got "${flags.interval}")`, { exit: 2 });

    this.client = new StatusClient(endpoint, security);
    const client = this.client;
    try {
      const first = await client.fetch();
      if (flags.watch) return await this.watch(client, first, (interval ?? 2) * 1000);
      if (this.jsonEnabled()) return first;
      const interactive = process.stdout.isTTY && process.stdin.isTTY && !flags.plain && !isCi();
      if (!interactive) {
        process.stdout.write(renderPlain(first, { width: process.stdout.columns || 120 }));
        return;
      }
      // Loaded only here: plain and JSON output never pay for React and ink.
      const { runDashboard } = await import('../tui/run-dashboard.js');
      const history = new HistoryClient(endpoint, security);
      try {
        await runDashboard({ fetch: () => client.fetch(), endpoint, intervalMs: (interval ?? 0.4) * 1000, first, history });
      } finally {
        history.close();
      }
    } finally {
      client.close();
    }
  }

  private async watch(client: StatusClient, first: StatusSnapshot, intervalMs: number): Promise<void> {
    let snapshot: StatusSnapshot | undefined = first;
    for (let n = 0; ; n++) {
      if (snapshot) {
        if (this.jsonEnabled()) process.stdout.write(JSON.stringify(snapshot) + '\n');
        else process.stdout.write(`${n > 0 ? '\n' : ''}${renderPlain(snapshot, { width: process.stdout.columns || 120 })}`);
      }
      await new Promise((r) => setTimeout(r, intervalMs));
      try {
        snapshot = await client.fetch();
      } catch (err) {
        // A daemon that stops while watched ends the watch with the same report and status.
        if (err instanceof DaemonUnreachableError) throw err;
        this.warn((err as Error).message);
        snapshot = undefined;
      }
    }
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    // The daemon's errors (unreachable, refused, not reexec) are reported by the base command.
    this.client?.close();
    return super.catch(err);
  }
}
