import * as grpc from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';
import { claimSent, takeReceivedBytes, type ByteTally } from './message-bytes.js';
import type { RpcStatus } from '../status/status-snapshot.js';
import { RollingCounter } from './rolling-counter.js';
import { needsRequest, rpcOutcome, type RpcOutcome } from './rpc-outcome.js';

/** grpc.status 4 → "DEADLINE_EXCEEDED". */
const CODE_NAMES = new Map<number, string>(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v as number, k]),
);
export const codeName = (code: number): string => CODE_NAMES.get(code) ?? String(code);

/**
 * The status dashboard polls the Admin service: leaving it out of the recent rates keeps the
 * dashboard from measuring itself. Prometheus still counts it.
 */
const NOT_IN_RECENT = new Set(['reexec.admin.v1.Admin']);

/** Seconds; Execute and WaitExecution streams last as long as the action runs. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600];

interface CodeState {
  handled: { inc(): void };
  latency: { observe(v: number): void };
}

const OUTCOMES: readonly RpcOutcome[] = ['ok', 'miss', 'error'];

interface MethodState {
  labels: { grpc_service: string; grpc_method: string };
  type: string;
  started: { inc(): void };
  msgIn: { inc(v?: number): void };
  msgOut: { inc(v?: number): void };
  bytesIn: { inc(v?: number): void };
  bytesOut: { inc(v?: number): void };
  byCode: Map<number, CodeState>;
  byOutcome: Record<RpcOutcome, { inc(): void }>;
  /** Absent for services left out of the recent rates. */
  window: MethodWindow | undefined;
}

interface MethodWindow {
  calls: RollingCounter;
  misses: RollingCounter;
  errors: RollingCounter;
  seconds: RollingCounter;
}

function splitPath(path: string): { service: string; method: string } {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? { service: m[1]!, method: m[2]! } : { service: 'unknown', method: path };
}

function callType(def: { requestStream: boolean; responseStream: boolean }): string {
  if (def.requestStream && def.responseStream) return 'bidi_stream';
  if (def.requestStream) return 'client_stream';
  if (def.responseStream) return 'server_stream';
  return 'unary';
}

/**
 * RPC metrics: counts and latency by method and status code, bytes in and out. Everything is
 * measured by a server interceptor, so it sees every call the server handles, including those
 * refused before a handler ran (unparseable requests, oversized messages).
 */
export class RpcMetrics {
  private readonly started: Counter<'grpc_service' | 'grpc_method' | 'grpc_type'>;
  private readonly handled: Counter<'grpc_service' | 'grpc_method' | 'grpc_type' | 'grpc_code'>;
  private readonly latency: Histogram<'grpc_service' | 'grpc_method' | 'grpc_type' | 'grpc_code'>;
  private readonly bytesIn: Counter<'grpc_service' | 'grpc_method'>;
  private readonly bytesOut: Counter<'grpc_service' | 'grpc_method'>;
  private readonly msgIn: Counter<'grpc_service' | 'grpc_method'>;
  private readonly msgOut: Counter<'grpc_service' | 'grpc_method'>;
  private readonly outcomes: Counter<'grpc_service' | 'grpc_method' | 'outcome'>;
  private readonly recentCalls: RollingCounter;
  private readonly recentMisses: RollingCounter;
  private readonly recentErrors: RollingCounter;
  private readonly recentIn: RollingCounter;
  private readonly recentOut: RollingCounter;
  private readonly perMethod = new Map<string, MethodWindow>();

  constructor(
    registry: Registry,
    private readonly now: () => number = Date.now,
  ) {
    const registers = [registry];
    // Names follow go-grpc-prometheus, so existing gRPC dashboards work unchanged.
    this.started = new Counter({ name: 'grpc_server_started_total', help: 'RPCs started on the server.', labelNames: ['grpc_service', 'grpc_method', 'grpc_type'], registers });
    this.handled = new Counter({ name: 'grpc_server_handled_total', help: 'RPCs completed on the server, by status code.', labelNames: ['grpc_service', 'grpc_method', 'grpc_type', 'grpc_code'], registers });
    this.latency = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Time from the start of an RPC to its status, by status code (streams: the whole stream).',
      labelNames: ['grpc_service', 'grpc_method', 'grpc_type', 'grpc_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.msgIn = new Counter({ name: 'grpc_server_msg_received_total', help: 'Request messages received.', labelNames: ['grpc_service', 'grpc_method'], registers });
    this.msgOut = new Counter({ name: 'grpc_server_msg_sent_total', help: 'Response messages sent.', labelNames: ['grpc_service', 'grpc_method'], registers });
    this.bytesIn = new Counter({ name: 'reexec_grpc_server_received_bytes_total', help: 'Serialized request message bytes received.', labelNames: ['grpc_service', 'grpc_method'], registers });
    this.bytesOut = new Counter({ name: 'reexec_grpc_server_sent_bytes_total', help: 'Serialized response message bytes sent.', labelNames: ['grpc_service', 'grpc_method'], registers });
    this.outcomes = new Counter({
      name: 'reexec_grpc_server_outcomes_total',
      help: 'RPCs completed, by what their status means: ok, miss (NOT_FOUND from a lookup: GetActionResult, FetchBlob, FetchDirectory) or error (anything else but OK and the Remote Asset probes).',
      labelNames: ['grpc_service', 'grpc_method', 'outcome'],
      registers,
    });
    this.recentCalls = new RollingCounter(60, now);
    this.recentMisses = new RollingCounter(60, now);
    this.recentErrors = new RollingCounter(60, now);
    this.recentIn = new RollingCounter(60, now);
    this.recentOut = new RollingCounter(60, now);
  }

  private window(name: string): MethodWindow {
    let w = this.perMethod.get(name);
    if (!w) {
      w = { calls: new RollingCounter(60, this.now), misses: new RollingCounter(60, this.now), errors: new RollingCounter(60, this.now), seconds: new RollingCounter(60, this.now) };
      this.perMethod.set(name, w);
    }
    return w;
  }

  /** Per method: its labels, labelled children and recent window, made on its first call. */
  private readonly methods = new Map<string, MethodState>();

  private methodState(def: { path: string; requestStream: boolean; responseStream: boolean }): MethodState {
    let st = this.methods.get(def.path);
    if (st) return st;
    const { service, method } = splitPath(def.path);
    const labels = { grpc_service: service, grpc_method: method };
    const type = callType(def);
    const recent = !NOT_IN_RECENT.has(service);
    st = {
      labels,
      type,
      started: this.started.labels({ ...labels, grpc_type: type }),
      msgIn: this.msgIn.labels(labels),
      msgOut: this.msgOut.labels(labels),
      bytesIn: this.bytesIn.labels(labels),
      bytesOut: this.bytesOut.labels(labels),
      byCode: new Map(),
      // Every outcome series exists from the method's first call, so rate() works at once.
      byOutcome: Object.fromEntries(OUTCOMES.map((o) => {
        const c = this.outcomes.labels({ ...labels, outcome: o });
        c.inc(0);
        return [o, c];
      })) as Record<RpcOutcome, { inc(): void }>,
      window: recent ? this.window(`${service.slice(service.lastIndexOf('.') + 1)}.${method}`) : undefined,
    };
    this.methods.set(def.path, st);
    return st;
  }

  private outcome(st: MethodState, code: number): CodeState {
    let c = st.byCode.get(code);
    if (!c) {
      const l = { ...st.labels, grpc_type: st.type, grpc_code: codeName(code) };
      c = { handled: this.handled.labels(l), latency: this.latency.labels(l) };
      st.byCode.set(code, c);
    }
    return c;
  }

  /** The interceptor to give the gRPC server. */
  readonly interceptor: grpc.ServerInterceptor = (def, call) => {
    const st = this.methodState(def);
    const w = st.window;
    const start = process.hrtime.bigint();
    st.started.inc();
    let finished = false;
    // Kept only for the few methods whose outcome depends on what was asked.
    const keepRequest = needsRequest(def.path);
    let request: unknown;
    const finish = (code: number): void => {
      if (finished) return;
      finished = true;
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const c = this.outcome(st, code);
      c.handled.inc();
      c.latency.observe(seconds);
      const outcome = rpcOutcome(def.path, code, request);
      request = undefined;
      st.byOutcome[outcome].inc();
      if (w) {
        this.recentCalls.add();
        w.calls.add();
        w.seconds.add(seconds);
        if (outcome === 'miss') {
          this.recentMisses.add();
          w.misses.add();
        } else if (outcome === 'error') {
          this.recentErrors.add();
          w.errors.add();
        }
      }
    };
    const tally: ByteTally = {
      addSent: (bytes) => {
        st.msgOut.inc();
        st.bytesOut.inc(bytes);
        if (w) this.recentOut.add(bytes);
      },
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMessage: (message, nextMessage) => {
            const bytes = takeReceivedBytes(message);
            if (keepRequest && request === undefined) request = message;
            st.msgIn.inc();
            st.bytesIn.inc(bytes);
            if (w) this.recentIn.add(bytes);
            nextMessage(message);
          },
          onCancel: () => finish(grpc.status.CANCELLED),
        }),
      sendMessage: (message, next) => {
        claimSent(message, tally);
        next(message);
      },
      sendStatus: (status, next) => {
        finish(status.code ?? grpc.status.UNKNOWN);
        next(status);
      },
    });
  };

  /** What the last minute of RPCs looked like, for the status snapshot. */
  recent(): RpcStatus {
    const methods = [...this.perMethod]
      .map(([method, w]) => {
        const calls = w.calls.sum();
        return { method, calls, misses: w.misses.sum(), errors: w.errors.sum(), meanMs: calls ? (w.seconds.sum() / calls) * 1000 : 0 };
      })
      .filter((m) => m.calls > 0)
      .sort((a, b) => b.calls - a.calls || (a.method < b.method ? -1 : 1));
    const calls = this.recentCalls.series();
    const bytesIn = this.recentIn.series();
    const bytesOut = this.recentOut.series();
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    return {
      windowSeconds: 60,
      calls: sum(calls),
      misses: this.recentMisses.sum(),
      errors: this.recentErrors.sum(),
      bytesIn: sum(bytesIn),
      bytesOut: sum(bytesOut),
      perSecond: { calls, bytesIn, bytesOut },
      methods,
    };
  }
}
