import type * as grpc from '@grpc/grpc-js';
import { reexec } from '../gen/proto.js';
import type { ActionHistory } from '../history/action-history.js';
import type { EntryKind, HistoryEntry } from '../history/entry.js';
import type { Explanation } from '../history/explain.js';
import type { HistoryFilter } from '../history/history-store.js';
import { entryToWire } from '../history/wire.js';
import type { Logger } from '../util/logger.js';
import { invalidArgument, unimplemented } from '../util/status-error.js';
import { method, serverStream, unary } from './grpc-adapters.js';

const h = reexec.admin.v1;
const SERVICE = 'reexec.admin.v1.History';

export const historyDefinition = {
  ListHistory: method(SERVICE, 'ListHistory', h.ListHistoryRequest, h.HistoryPage, { response: true }),
  ShowAction: method(SERVICE, 'ShowAction', h.ShowActionRequest, h.ActionDetails),
  ReadActionLog: method(SERVICE, 'ReadActionLog', h.ReadActionLogRequest, h.LogChunk, { response: true }),
  ExplainAction: method(SERVICE, 'ExplainAction', h.ExplainActionRequest, h.Explanation),
  PrepareShell: method(SERVICE, 'PrepareShell', h.PrepareShellRequest, h.ShellPlan),
};

/** Entries per page of ListHistory. */
const PAGE = 200;
/** While watching with nothing new: an empty page this often keeps proxies and the idle timeout from cutting the stream. */
const KEEPALIVE_MS = 20_000;
const LOG_CHUNK = 64 * 1024;

function filterOf(req: reexec.admin.v1.ListHistoryRequest): HistoryFilter {
  if (req.kind && req.kind !== 'execute' && req.kind !== 'lookup') throw invalidArgument(`kind must be "execute", "lookup" or empty, not "${req.kind}"`, 'kind');
  const f: HistoryFilter = {};
  if (req.failedOnly) f.failed = true;
  if (Number(req.sinceUnixMs) > 0) f.sinceMs = Number(req.sinceUnixMs);
  if (req.tool) f.tool = req.tool;
  if (req.target) f.target = req.target;
  if (req.invocation) f.invocation = req.invocation;
  if (req.kind) f.kind = req.kind as EntryKind;
  if (req.actionPrefix) f.action = req.actionPrefix.toLowerCase();
  return f;
}

const side = (s: Explanation['subject'] | undefined): { entry?: reexec.admin.v1.IHistoryEntry; digest: string } => ({
  ...(s?.entry ? { entry: entryToWire(s.entry) } : {}),
  digest: s ? s.digest.toString() : '',
});

export function explanationToWire(x: Explanation): reexec.admin.v1.IExplanation {
  const subject = side(x.subject);
  const other = side(x.other);
  return {
    ...(subject.entry ? { entry: subject.entry } : {}),
    actionDigest: subject.digest,
    ...(other.entry ? { otherEntry: other.entry } : {}),
    otherActionDigest: other.digest,
    chosenBy: x.chosenBy,
    reason: x.reason,
    identical: x.identical,
    unavailable: x.unavailable,
    arguments: x.arguments,
    environment: x.environment,
    platform: x.platform,
    fields: x.fields,
    inputs: x.inputs,
    inputsNotListed: x.inputsNotListed,
  };
}

/**
 * reexec.admin.v1.History: the action history over the Admin API (admin right). Thin: the
 * work is ActionHistory's. `history` undefined: the daemon records none (history.enabled).
 */
export function historyService(log: Logger, history: ActionHistory | undefined): grpc.UntypedServiceImplementation {
  const need = (): ActionHistory => {
    if (!history) throw unimplemented('the action history is off in this daemon (history.enabled: false in its config): set it to true and restart the daemon to record actions');
    return history;
  };
  return {
    ListHistory: serverStream(log, 'ListHistory', async (req: reexec.admin.v1.ListHistoryRequest, out, ctx) => {
      const hist = need();
      const filter = filterOf(req);
      const limit = req.limit > 0 ? Math.min(req.limit, 100_000) : 50;
      // Subscribe before reading, so nothing recorded in between is missed (duplicates are dropped by id).
      const pending: HistoryEntry[] = [];
      let wake: (() => void) | undefined;
      const stop = req.watch
        ? hist.watch(filter, (e) => {
            pending.push(e);
            wake?.();
          })
        : undefined;
      try {
        const first = await hist.list(filter, limit, req.oldestFirst);
        for (let i = 0; i < first.length; i += PAGE) await out.write({ entries: first.slice(i, i + PAGE).map(entryToWire) });
        if (!req.watch) {
          if (first.length === 0) await out.write({ entries: [] });
          return;
        }
        const seen = new Set(first.map((e) => e.id));
        for (;;) {
          const fresh = pending.splice(0).filter((e) => !seen.has(e.id));
          await out.write({ entries: fresh.map(entryToWire) });
          if (ctx.cancelled()) return;
          await new Promise<void>((resolve) => {
            wake = resolve;
            if (pending.length > 0) resolve();
            setTimeout(resolve, KEEPALIVE_MS).unref();
          });
          wake = undefined;
          if (ctx.cancelled()) return;
        }
      } finally {
        stop?.();
      }
    }),

    ShowAction: unary(log, 'ShowAction', async (req: reexec.admin.v1.ShowActionRequest) => need().show(req.ref, req.tailBytes)),

    ReadActionLog: serverStream(log, 'ReadActionLog', async (req: reexec.admin.v1.ReadActionLogRequest, out) => {
      const stream = await need().readLog(req.ref, req.stream);
      let buf: Buffer[] = [];
      let n = 0;
      for await (const c of stream) {
        buf.push(Buffer.from(c));
        n += c.byteLength;
        if (n >= LOG_CHUNK) {
          await out.write({ data: Buffer.concat(buf) });
          buf = [];
          n = 0;
        }
      }
      if (n > 0) await out.write({ data: Buffer.concat(buf) });
    }),

    ExplainAction: unary(log, 'ExplainAction', async (req: reexec.admin.v1.ExplainActionRequest) => explanationToWire(await need().explain(req.ref, req.against || undefined))),

    PrepareShell: unary(log, 'PrepareShell', async (req: reexec.admin.v1.PrepareShellRequest) => need().prepareShell(req.ref)),
  };
}
