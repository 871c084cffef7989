import { resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { loadConfig, parseSize } from '../config/config.js';
import { localAccess } from '../client/client-security.js';
import { DaemonUnreachableError } from '../client/daemon-errors.js';
import { envToken, resolveDaemon } from '../cli/daemon-endpoint.js';
import { DataDirLockedError } from '../daemon/data-dir-lock.js';
import type { GcProgress, GcRequest } from '../gc/garbage-collector.js';
import { formatGcSummary, GcProgressBar } from '../gc/gc-report.js';
import { collectGarbageOffline } from '../gc/offline-gc.js';
import { collectGarbageRemote } from '../gc/remote-gc.js';
import type { GcRunSummary } from '../gc/storage-gc.js';

export type GcResult = GcRunSummary & { via: 'daemon' | 'data-dir'; endpoint?: string; dataDir?: string };

export default class Gc extends BaseCommand {
  static override summary = 'Evict least-recently-used blobs from the cache now.';
  static override description =
    'Asks the running daemon (at the config\'s listen address, or --endpoint) to evict least-recently-used blobs until the CAS is down to --target ' +
    '(default: the low watermark of the config, unless only --keep-days is given), and blobs unused for more than --keep-days. ' +
    'With --data-dir, or when no daemon answers, it opens the store itself; ' +
    'that needs the data dir free (no daemon using it). Blobs used within the grace period (storage.grace-period; unless --ignore-grace) and inputs of queued or running actions are never evicted. ' +
    'On a full file system the disk reserve (storage.disk-reserve) makes room for the deletions. ' +
    'Action-cache entries and assets whose blobs are gone are never served, and are dropped when next looked up.';
  static override examples = [
    '<%= config.bin %> gc',
    '<%= config.bin %> gc --dry-run --target 50GiB',
    '<%= config.bin %> gc --keep-days 30',
    '<%= config.bin %> gc --data-dir /srv/reexec --target 0 --json',
    '<%= config.bin %> gc --endpoint grpc://127.0.0.1:50051',
    '<%= config.bin %> gc --ignore-grace --target 10GiB',
  ];

  static override flags = {
    endpoint: Flags.string({ description: 'the daemon to ask (grpc://HOST:PORT or unix:PATH); default: the config\'s listen address', exclusive: ['data-dir'] }),
    'data-dir': Flags.string({ char: 'd', description: 'collect in this data dir directly; no daemon may be using it' }),
    target: Flags.string({ description: 'evict until the CAS holds at most this much (e.g. 50GiB; 0 evicts everything evictable); default: the low watermark, or no target with --keep-days' }),
    'keep-days': Flags.integer({ min: 0, description: 'also evict every blob not used for this many days' }),
    'dry-run': Flags.boolean({ description: 'report what would be evicted; evict nothing' }),
    'ignore-grace': Flags.boolean({
      description:
        'evict blobs used within the grace period too (storage.grace-period), for a store that must shrink now; inputs of queued or running actions and uploads in progress are still never evicted',
    }),
  };

  protected override unreachableSuggestion(_err: DaemonUnreachableError): string {
    return 'Is the daemon running (reexec start)? Without a daemon, use --data-dir DIR.';
  }

  async run(): Promise<GcResult> {
    const { flags } = await this.parse(Gc);
    const request: GcRequest = { dryRun: flags['dry-run'], ...(flags['ignore-grace'] ? { ignoreGrace: true } : {}) };
    if (flags.target !== undefined) request.targetBytes = /^\s*0+\s*$/.test(flags.target) ? 0 : parseSize(flags.target, '--target');
    if (flags['keep-days'] !== undefined) request.maxAgeSeconds = flags['keep-days'] * 86400;
    const tty = !this.jsonEnabled() && process.stderr.isTTY;
    const bar = tty ? new GcProgressBar(process.stderr) : undefined;
    const progress = bar ? (p: GcProgress) => bar.update(p) : undefined;

    let result: GcResult;
    try {
      if (flags.endpoint) {
        // grpcs:// means TLS (the system's CAs); REEXEC_TOKEN gives the admin token.
        const { endpoint, security } = resolveDaemon({ endpoint: flags.endpoint, need: 'admin' });
        result = { ...(await collectGarbageRemote(endpoint, request, progress, { security })), via: 'daemon', endpoint };
      } else {
        const config = loadConfig(flags.config);
        if (flags['data-dir']) {
          config.dataDir = resolve(flags['data-dir']);
          result = { ...(await collectGarbageOffline(config, request, progress)), via: 'data-dir', dataDir: config.dataDir };
        } else {
          // The daemon's unix socket or TCP listener, with its TLS files and an admin token.
          const { endpoint, security } = localAccess(config, 'admin', envToken());
          try {
            result = { ...(await collectGarbageRemote(endpoint, request, progress, { security })), via: 'daemon', endpoint };
          } catch (err) {
            if (!(err instanceof DaemonUnreachableError)) throw err;
            // No daemon: collect in its data dir directly (refused if a daemon holds it after all).
            result = { ...(await collectGarbageOffline(config, request, progress)), via: 'data-dir', dataDir: config.dataDir };
          }
        }
      }
    } catch (err) {
      bar?.done();
      if (err instanceof DataDirLockedError && err.role === 'gc') throw new UserError(err.message);
      if (err instanceof DataDirLockedError) {
        throw new UserError(
          `a reexec daemon (pid ${err.pid}) is using ${err.dataDir}, so this command cannot open the store itself`,
          'Ask the daemon instead: run `reexec gc` without --data-dir (it finds the daemon through the config), or pass --endpoint grpc://HOST:PORT.',
        );
      }
      throw err;
    }
    bar?.done();
    if (!this.jsonEnabled()) {
      this.log(result.via === 'daemon' ? `reexec daemon at ${result.endpoint}:` : `data dir ${result.dataDir} (no daemon running):`);
      this.log(formatGcSummary(result));
    }
    return result;
  }
}
