import { formatArgv, formatBytes, formatByteRate, formatClient, formatClock, formatConnections, formatDuration, formatUpstreamHealth, formatUpstreamLookups, formatUpstreamQueue, formatPercent, formatRate, formatReserve, fit, sparkline, truncate, hitRatios } from './format.js';
import type { CompletedAction, RunningAction, StatusSnapshot } from './status-snapshot.js';

export interface PlainOptions {
  /** Line width to fit (longer command lines are cut). */
  width?: number;
  /** How many finished actions to list. */
  recent?: number;
  /** How many waiting actions to list. */
  queued?: number;
}

/** What a slot's action is doing: "staging", "running", "uploading" (or its stage, lower case). */
export function activity(a: RunningAction): string {
  return a.stage === 'EXECUTING' ? (a.phase ?? 'running') : a.stage.toLowerCase();
}

/** "exit 0", "exit 3", "cached", or the status when the action did not exit (DEADLINE_EXCEEDED). */
export function outcome(a: CompletedAction): string {
  if (a.cached) return 'cached';
  if (a.status !== 'OK') return a.status;
  return a.exitCode === null ? 'no exit' : `exit ${a.exitCode}`;
}

/**
 * The snapshot as plain text: what `reexec status` prints when stdout is not a terminal, and
 * each frame of `--watch`. No colours, no cursor movement; every line fits `width`.
 */
export function renderPlain(s: StatusSnapshot, opts: PlainOptions = {}): string {
  const width = Math.max(60, opts.width ?? 100);
  const out: string[] = [];
  const line = (text = ""): void => void out.push(truncate(text, width).trimEnd());

  line(`reexec ${s.version} · up ${formatDuration(s.uptimeSeconds * 1000)} · serving ${s.listeners.join(', ') || '(nothing)'} · ${formatClock(s.takenAt)}`);
  line(`data dir ${s.dataDir} · metrics ${s.metrics.url ?? (s.metrics.error ? `unavailable (${s.metrics.error})` : 'off')}`);

  const ex = s.execution;
  line();
  if (!ex) {
    line('Workers: remote execution is disabled in the config');
  } else {
    line(`Workers (${ex.runningTotal} running, ${ex.queuedTotal} waiting)`);
    for (const p of ex.pools) {
      const busy = p.slots.filter((x) => x.action).length;
      const head = `  ${p.name} (${p.upstream ?? p.isas.join(', ')})`;
      if (p.unavailable) {
        line(`${head}  unavailable: ${p.unavailable}`);
        continue;
      }
      line(p.upstream ? `${head}  ${busy} in flight · ${p.queueDepth} waiting` : `${head}  ${busy}/${p.slots.length} busy · ${p.queueDepth} waiting`);
      const slotWidth = Math.max(...p.slots.map((x) => x.slot.length));
      for (const slot of p.slots) {
        const a = slot.action;
        if (!a) {
          line(`    ${fit(slot.slot, slotWidth)}  idle`);
          continue;
        }
        const client = formatClient(a.client);
        const fixed = `    ${fit(slot.slot, slotWidth)}  ${fit(activity(a), 9)}  ${fit(formatDuration(a.elapsedMs), 7, 'right')}  `;
        const room = width - fixed.length - (client ? client.length + 2 : 0);
        line(`${fixed}${fit(formatArgv(a.argv), Math.max(10, room))}${client ? `  ${client}` : ''}`);
      }
    }

    const queued = ex.queued.slice(0, opts.queued ?? 10);
    if (queued.length > 0) {
      line();
      line(`Queue (${ex.queuedTotal} waiting${ex.queuedTotal > queued.length ? `, first ${queued.length}` : ''})`);
      for (const q of queued) {
        line(`  ${fit(q.pool, 10)}  waiting ${fit(formatDuration(q.waitingMs), 7, 'right')}  prio ${fit(String(q.priority), 4)}  ${formatArgv(q.argv)}${q.platform ? `  (for a bot offering ${q.platform.join(', ')})` : ''}`);
      }
    }

    if (ex.bots && ex.bots.length > 0) {
      line();
      line(`Bots (${ex.bots.length} connected)`);
      const idWidth = Math.max(...ex.bots.map((b) => b.botId.length));
      for (const b of ex.bots) {
        const lease = b.lease ? `${b.lease.state.toLowerCase()} ${formatArgv(b.lease.argv)}` : 'idle';
        line(`  ${fit(b.botId, idWidth)}  ${fit(formatClient(b.host) || b.host, 21)}  ${b.status === 'OK' ? '' : `${b.status} `}seen ${formatDuration(b.idleSeconds * 1000)} ago · ${b.leasesCompleted} done · ${b.properties.join(' ')} · ${lease}`);
      }
    }

    const recent = ex.recent.slice(0, opts.recent ?? 10);
    line();
    const done = ex.throughput.executed.reduce((a, b) => a + b, 0);
    const cached = ex.throughput.cached.reduce((a, b) => a + b, 0);
    line(`Recent (last minute: ${done} executed, ${cached} cached)  ${sparkline(ex.throughput.executed.map((v, i) => v + ex.throughput.cached[i]!), 30)}`);
    if (recent.length === 0) line('  nothing finished yet');
    for (const r of recent) {
      const client = formatClient(r.client);
      const fixed = `  ${formatClock(r.completedAt)}  ${fit(outcome(r), 17)}  ${fit(r.cached ? '' : formatDuration(r.durationMs), 7, 'right')}  `;
      const room = width - fixed.length - (client ? client.length + 2 : 0);
      line(`${fixed}${fit(formatArgv(r.argv), Math.max(10, room))}${client ? `  ${client}` : ''}`);
    }
  }

  const ac = s.cache.ac;
  const cas = s.cache.cas;
  line();
  line('Cache');
  line(
    `  action cache  ${formatPercent(ac.hitRate)} hits (${ac.hits} hits, ${ac.misses} misses)` +
      ` · last minute ${formatPercent(ac.lastMinute.hitRate)} · ${ac.entries} entries  ${sparkline(hitRatios(ac.perSecond.hits, ac.perSecond.misses), 20, 1)}`,
  );
  const budget = cas.budgetBytes !== null ? ` of ${formatBytes(cas.budgetBytes)} budget (${formatPercent(cas.bytes / cas.budgetBytes)})` : ' (no budget configured)';
  const disk = cas.disk ? ` · disk ${formatBytes(cas.disk.freeBytes)} free of ${formatBytes(cas.disk.totalBytes)}` : '';
  line(`  CAS           ${cas.blobs} blobs, ${formatBytes(cas.bytes)}${budget}${disk}`);
  const reserve = formatReserve(cas.reserve);
  if (reserve) line(`  disk          ${reserve}`);
  if (s.gc) line(`  last GC       ${formatClock(s.gc.at)} (${s.gc.trigger}${s.gc.dryRun ? ', dry run' : ''}): ${s.gc.evictedBlobs} blobs, ${formatBytes(s.gc.evictedBytes)} in ${formatDuration(s.gc.durationSeconds * 1000)}`);

  if (s.upstream) {
    const u = s.upstream;
    line();
    line(`Upstream: ${formatUpstreamHealth(u)}`);
    line(`  CAS           ${formatUpstreamLookups(u.cas)}`);
    line(`  action cache  ${formatUpstreamLookups(u.ac)}`);
    line(`  assets        ${formatUpstreamLookups(u.assets)}`);
    line(`  transfer      ${formatBytes(u.bytesDown)} down (${u.blobsDown} blobs), ${formatBytes(u.bytesUp)} up (${u.blobsUp} blobs)${u.fetchErrors ? `, ${u.fetchErrors} failed fetches` : ''}`);
    line(`  upload queue  ${formatUpstreamQueue(u)}`);
  }

  const rpc = s.rpc;
  line();
  const rpcLine = `RPCs (last minute, admin calls left out): ${rpc.calls} calls (${formatRate(rpc.calls, rpc.windowSeconds)}), ${rpc.misses ?? 0} misses, ${rpc.errors} errors`;
  line(`${rpcLine}  ${sparkline(rpc.perSecond.calls, Math.max(0, Math.min(20, width - rpcLine.length - 2)))}`);
  const perSecond = (bytes: number): string => formatByteRate(rpc.windowSeconds > 0 ? bytes / rpc.windowSeconds : 0);
  line(`  in ${formatBytes(rpc.bytesIn)} (${perSecond(rpc.bytesIn)}), out ${formatBytes(rpc.bytesOut)} (${perSecond(rpc.bytesOut)})`);
  if (s.connections) line(`Connections: ${formatConnections(s.connections)}`);
  const methodWidth = Math.min(48, Math.max(0, ...rpc.methods.map((m) => m.method.length)));
  for (const m of rpc.methods.slice(0, 8)) {
    line(
      `  ${fit(m.method, methodWidth)}  ${fit(String(m.calls), 6, 'right')} calls  ${fit(String(m.misses ?? 0), 5, 'right')} misses  ${fit(String(m.errors), 4, 'right')} errors  mean ${formatDuration(m.meanMs)}`,
    );
  }
  return out.join('\n') + '\n';
}
