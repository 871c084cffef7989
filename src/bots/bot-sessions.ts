import { randomUUID } from 'node:crypto';
import type { ActionCache } from '../ac/action-cache.js';
import { cacheSuccessful } from '../execution/build-executor.js';
import { packAny, re, rw, type protobuf } from '../proto.js';
import { offeredProperties, offersAll, type OfferedProperties } from '../scheduler/platform.js';
import { BOTS_POOL, type Lease, type Scheduler, type Worker } from '../scheduler/scheduler.js';
import type { Execution } from '../scheduler/operation.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/logger.js';
import { Code, invalidArgument, notFound } from '../util/status-error.js';

const { LeaseState, BotStatus } = rw;
type LeaseState = rw.LeaseState;

export interface BotSessionsOptions {
  /** A session whose bot has not called for this long is over: its lease runs elsewhere. */
  sessionTimeoutMs: number;
  /** The longest an UpdateBotSession is held waiting for work (less when the call's deadline is nearer). */
  maxPollMs: number;
}

/** What status and metrics show of a bot. */
export interface BotInfo {
  botId: string;
  session: string;
  host: string;
  properties: Array<{ name: string; value: string }>;
  status: string;
  lease?: { id: string; state: string; execution: string; actionDigest: string; operations: string[] };
  lastContact: Date;
  leasesCompleted: number;
}

/** The lease a session holds, as the bot last heard of it. */
interface SessionLease {
  lease: Lease;
  state: LeaseState;
  /** Stops watching the lease for a cancel (it left the session). */
  unwatch: () => void;
}

interface Session {
  readonly name: string;
  readonly botId: string;
  readonly host: string;
  readonly offer: OfferedProperties;
  readonly properties: Array<{ name: string; value: string }>;
  readonly worker: Worker;
  status: rw.BotStatus;
  current?: SessionLease;
  /** Leases the bot must be told are CANCELLED, until it stops reporting them. */
  cancelled: Map<string, true>;
  lastContact: number;
  calls: number;
  closed?: string;
  /** Wakes a held UpdateBotSession (a lease was cancelled). */
  wake?: () => void;
  completed: number;
}

/** How often a bot is asked to report (the expire_time sent to it), at most. */
const REPORT_INTERVAL_MS = 5_000;

const ANY_DIGEST = 'build.bazel.remote.execution.v2.Digest';
const ANY_ACTION_RESULT = 'build.bazel.remote.execution.v2.ActionResult';
const ANY_EXECUTE_RESPONSE = 'build.bazel.remote.execution.v2.ExecuteResponse';

const typeName = (any: protobuf.IAny | null | undefined): string => (any?.type_url ?? '').slice((any?.type_url ?? '').lastIndexOf('/') + 1);

const timestamp = (ms: number): { seconds: number; nanos: number } => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });

/** A bot's properties: those of its primary device (buildbox-worker's --platform flags) and the worker-wide ones. */
export function botProperties(worker: rw.IWorker | null | undefined): Array<{ name: string; value: string }> {
  const device = worker?.devices?.[0]?.properties ?? [];
  const seen = new Set<string>();
  return [...device, ...(worker?.properties ?? [])]
    .map((p) => ({ name: p.key ?? '', value: p.value ?? '' }))
    .filter((p) => p.name && !seen.has(`${p.name}\u0000${p.value}`) && seen.add(`${p.name}\u0000${p.value}`));
}

/**
 * The Remote Workers API's bot sessions over the scheduler's leases: each session is a worker
 * that offers its bot's properties and holds at most one lease. A lease goes PENDING (sent
 * with the Action digest as payload), ACTIVE (the bot says so), then COMPLETED (the bot's
 * ActionResult becomes the ExecuteResponse, cached like a local one) or CANCELLED (the
 * client cancelled; the bot is told). A bot that stops calling loses its session and its lease
 * runs elsewhere; a new session of the same bot_id ends the old one the same way.
 */
export class BotSessions {
  private readonly sessions = new Map<string, Session>();
  private readonly byBot = new Map<string, Session>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly scheduler: Scheduler,
    private readonly ac: ActionCache,
    private readonly log: Logger,
    private readonly opts: BotSessionsOptions,
    private readonly clock: Clock = scheduler.clock,
  ) {
    this.timer = setInterval(() => this.expire(), Math.max(100, Math.min(1000, opts.sessionTimeoutMs / 4)));
    this.timer.unref();
  }

  create(parent: string, bot: rw.IBotSession | null | undefined, peer: string): rw.IBotSession {
    const botId = bot?.botId ?? '';
    if (!botId) throw invalidArgument('bot_session.bot_id is empty: a bot names itself (buildbox-worker: its last argument)', 'bot_session.bot_id');
    const properties = botProperties(bot?.worker);
    const old = this.byBot.get(botId);
    if (old) this.close(old, `bot ${botId} started a new session (${peer}): it restarted`);
    const offer = offeredProperties(properties);
    const name = `${parent ? `${parent.replace(/\/+$/, '')}/` : ''}botSessions/${randomUUID()}`;
    const session: Session = {
      name,
      botId,
      host: peer,
      offer,
      properties,
      worker: { name: `bot ${botId}`, pool: BOTS_POOL, accepts: (job) => offersAll(offer, job.platform.raw) },
      status: bot?.status ?? BotStatus.OK,
      cancelled: new Map(),
      lastContact: this.clock.now(),
      calls: 0,
      completed: 0,
    };
    this.sessions.set(name, session);
    this.byBot.set(botId, session);
    this.scheduler.remoteConnected(botId, offer);
    this.log.info(`bot ${botId} connected from ${peer}, offering ${properties.map((p) => `${p.name}=${p.value}`).join(', ') || 'no properties'}`, { bot: botId, session: name });
    return this.message(session);
  }

  /**
   * The bot reports its leases; it gets back its session with a new lease when there is work
   * for it, waiting for some until `deadline` (ms) nears or `signal` (the call) is aborted.
   */
  async update(name: string, bot: rw.IBotSession | null | undefined, deadline: number, signal?: AbortSignal): Promise<rw.IBotSession> {
    const session = this.sessions.get(name);
    if (!session) throw notFound(`bot session "${name}" does not exist: it expired or was replaced by a newer session of the same bot; create a new one`);
    if (session.closed) throw notFound(`bot session "${name}" is over: ${session.closed}; create a new one`);
    if (bot?.botId && bot.botId !== session.botId) throw invalidArgument(`bot_session.bot_id "${bot.botId}" is not the bot of session ${name} ("${session.botId}")`, 'bot_session.bot_id');
    session.calls++;
    try {
      this.touch(session);
      if (bot?.status) session.status = bot.status;
      await this.report(session, bot?.leases ?? []);
      if (!session.current && session.cancelled.size === 0 && this.healthy(session)) {
        const lease = await this.waitForLease(session, deadline, signal);
        if (lease) {
          if (signal?.aborted || session.closed) {
            // Nobody will read this answer: the lease goes back without counting as an attempt.
            this.scheduler.release(lease.id);
          } else {
            session.current = { lease, state: LeaseState.PENDING, unwatch: this.watch(session, lease) };
            this.log.info(`lease ${lease.id} of execution ${lease.execution.id} (${lease.execution.job.actionDigest}) to bot ${session.botId}`, { bot: session.botId });
          }
        }
      }
      this.touch(session);
      return this.message(session);
    } finally {
      session.calls--;
      session.lastContact = this.clock.now();
    }
  }

  private healthy(session: Session): boolean {
    return session.status === BotStatus.OK || session.status === BotStatus.BOT_STATUS_UNSPECIFIED;
  }

  private touch(session: Session): void {
    session.lastContact = this.clock.now();
    this.scheduler.remoteSeen(session.botId);
    if (session.current) this.scheduler.renew(session.current.lease.id, session.lastContact + this.opts.sessionTimeoutMs);
  }

  /** Hold the call until a lease for this bot comes, the deadline nears, or the call ends. */
  private async waitForLease(session: Session, deadline: number, signal?: AbortSignal): Promise<Lease | undefined> {
    const now = this.clock.now();
    const leaseDeadline = now + this.opts.sessionTimeoutMs;
    const now1 = this.scheduler.tryLease(session.worker, leaseDeadline);
    if (now1) return now1;
    // Answer a little before the bot's deadline, so that the answer reaches it.
    const room = Number.isFinite(deadline) ? Math.max(0, Math.min(deadline - now - 1000, (deadline - now) * 0.9)) : this.opts.maxPollMs;
    const holdMs = Math.min(room, this.opts.maxPollMs);
    if (holdMs <= 0) return undefined;
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), holdMs);
    session.wake = () => stop.abort();
    const onCallEnd = (): void => stop.abort();
    signal?.addEventListener('abort', onCallEnd, { once: true });
    try {
      return await this.scheduler.lease(session.worker, stop.signal, this.clock.now() + this.opts.sessionTimeoutMs);
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
      session.wake = undefined;
      signal?.removeEventListener('abort', onCallEnd);
    }
  }

  /** A cancelled execution's lease: the bot is told CANCELLED at once (its held call returns). */
  private watch(session: Session, lease: Lease): () => void {
    const onAbort = (): void => {
      if (session.current?.lease !== lease) return;
      session.current = undefined;
      session.cancelled.set(lease.id, true);
      // The client cancelled, or the lease expired and runs elsewhere: the bot is told to stop.
      this.scheduler.fail(lease.id, `cancelled; bot ${session.botId} was told to stop`);
      session.wake?.();
    };
    lease.signal.addEventListener('abort', onAbort, { once: true });
    return () => lease.signal.removeEventListener('abort', onAbort);
  }

  /** The session's lease leaves it (completed, given back, or the session ended). */
  private drop(session: Session): void {
    session.current?.unwatch();
    session.current = undefined;
  }

  /** What the bot says about its leases. Reports of leases it no longer holds are ignored. */
  private async report(session: Session, leases: rw.ILease[]): Promise<void> {
    const reported = new Set<string>();
    for (const l of leases) {
      const id = l.id ?? '';
      reported.add(id);
      if (session.cancelled.has(id)) {
        if (l.state === LeaseState.COMPLETED || l.state === LeaseState.CANCELLED) session.cancelled.delete(id);
        continue;
      }
      const current = session.current;
      if (!current || current.lease.id !== id) continue; // a repeated completion, or a lease that ran elsewhere
      if (l.state === LeaseState.ACTIVE) {
        current.state = LeaseState.ACTIVE;
        current.lease.execution.phase = 'running';
      } else if (l.state === LeaseState.COMPLETED) {
        this.drop(session);
        session.completed++;
        const response = this.responseOf(session, current.lease, l);
        try {
          await cacheSuccessful(this.ac, current.lease.execution.job, response);
        } catch (err) {
          this.log.warn(`could not cache the result of execution ${current.lease.execution.id} from bot ${session.botId}: ${(err as Error).message}`);
        }
        if (!this.scheduler.completeLease(current.lease.id, response)) {
          this.log.info(`bot ${session.botId} finished lease ${id}, which had already ended (it ran elsewhere or was cancelled)`);
        }
      } else if (l.state === LeaseState.CANCELLED) {
        this.drop(session);
        this.scheduler.fail(current.lease.id, `bot ${session.botId} gave the lease back`);
      }
    }
    // A bot that stopped reporting the cancelled leases has let them go.
    for (const id of [...session.cancelled.keys()]) if (!reported.has(id)) session.cancelled.delete(id);
  }

  /** The ExecuteResponse of a COMPLETED lease: the bot's ActionResult, and its status when the bot could not run the action. */
  private responseOf(session: Session, lease: Lease, l: rw.ILease): re.IExecuteResponse {
    const status = { code: l.status?.code ?? Code.OK, message: l.status?.message ?? '' };
    let result: re.IActionResult | undefined;
    try {
      const type = typeName(l.result);
      if (type === ANY_ACTION_RESULT) result = re.ActionResult.decode(l.result!.value!);
      else if (type === ANY_EXECUTE_RESPONSE) {
        const r = re.ExecuteResponse.decode(l.result!.value!);
        result = r.result ?? undefined;
        if (status.code === Code.OK && r.status?.code) Object.assign(status, { code: r.status.code, message: r.status.message ?? '' });
      } else if (l.result?.type_url && status.code === Code.OK) {
        return { status: { code: Code.INTERNAL, message: `bot ${session.botId} returned a ${l.result.type_url}, not an ActionResult` } };
      }
    } catch (err) {
      return { status: { code: Code.INTERNAL, message: `bot ${session.botId} returned a result that does not decode: ${(err as Error).message}` } };
    }
    if (status.code === Code.OK && !result) return { status: { code: Code.INTERNAL, message: `bot ${session.botId} completed lease ${lease.id} without a result` } };
    if (result) {
      const meta = (result.executionMetadata ??= {});
      if (!meta.worker) meta.worker = session.botId;
      meta.queuedTimestamp ??= timestamp(lease.execution.queuedAt.getTime());
    }
    return { ...(result ? { result } : {}), status, cachedResult: false, ...(status.message ? { message: status.message } : {}) };
  }

  private leaseMessage(current: SessionLease): rw.ILease {
    const ex = current.lease.execution;
    return {
      id: current.lease.id,
      state: current.state,
      // Always sent: buildbox-worker takes the payload of the lease as the server last sent it.
      payload: packAny(ANY_DIGEST, re.Digest.encode(ex.job.actionDigest.toProto()).finish()),
      expireTime: timestamp(current.lease.deadline),
    };
  }

  private message(session: Session): rw.IBotSession {
    // buildbox-worker calls again shortly before the expire_time it is given (and a busy bot only
    // then): a short one brings cancels to it within seconds, while the session itself lasts
    // sessionTimeoutMs without a call.
    const expire = session.lastContact + Math.min(REPORT_INTERVAL_MS, this.opts.sessionTimeoutMs / 2);
    return {
      name: session.name,
      botId: session.botId,
      status: session.status,
      leases: [
        ...(session.current ? [this.leaseMessage(session.current)] : []),
        ...[...session.cancelled.keys()].map((id) => ({ id, state: LeaseState.CANCELLED })),
      ],
      expireTime: timestamp(expire),
    };
  }

  /** End a session: its lease runs elsewhere. */
  private close(session: Session, why: string): void {
    if (session.closed) return;
    session.closed = why;
    session.wake?.();
    const current = session.current;
    this.drop(session);
    if (current) this.scheduler.fail(current.lease.id, why);
    this.sessions.delete(session.name);
    if (this.byBot.get(session.botId) === session) {
      this.byBot.delete(session.botId);
      this.scheduler.remoteGone(session.botId);
    }
    this.log.warn(`bot session ${session.name} of ${session.botId} ended: ${why}`, { bot: session.botId });
  }

  /** Sessions whose bot stopped calling are over. */
  expire(now = this.clock.now()): void {
    for (const s of [...this.sessions.values()]) {
      if (s.calls === 0 && now - s.lastContact > this.opts.sessionTimeoutMs) {
        this.close(s, `bot ${s.botId} did not call UpdateBotSession for ${Math.round((now - s.lastContact) / 1000)} s`);
      }
    }
  }

  /** Bot id → the execution it runs, for the status view (the bots' "slots"). */
  running(): Map<string, Execution> {
    return new Map([...this.sessions.values()].filter((s) => s.current).map((s) => [s.botId, s.current!.lease.execution]));
  }

  list(): BotInfo[] {
    return [...this.sessions.values()].map((s) => ({
      botId: s.botId,
      session: s.name,
      host: s.host,
      properties: s.properties,
      status: s.status === BotStatus.BOT_STATUS_UNSPECIFIED ? 'OK' : (BotStatus[s.status] ?? String(s.status)),
      ...(s.current
        ? {
            lease: {
              id: s.current.lease.id,
              state: LeaseState[s.current.state] ?? String(s.current.state),
              execution: s.current.lease.execution.id,
              actionDigest: s.current.lease.execution.job.actionDigest.toString(),
              operations: s.current.lease.execution.operationNames,
            },
          }
        : {}),
      lastContact: new Date(s.lastContact),
      leasesCompleted: s.completed,
    }));
  }

  stop(): void {
    clearInterval(this.timer);
    for (const s of [...this.sessions.values()]) {
      s.closed = 'the server is shutting down';
      s.wake?.();
    }
  }
}

