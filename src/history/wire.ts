import { reexec } from '../gen/proto.js';
import type { EntryKind, HistoryEntry, Outcome, RequestInfo, Timings } from './entry.js';

/** The Admin API's messages of the history, and the plain types they carry. */
export const wire = reexec.admin.v1;
export type WireEntry = reexec.admin.v1.IHistoryEntry;

const TIMING_FIELDS: Array<[keyof Timings, keyof reexec.admin.v1.ITimings]> = [
  ['queued', 'queuedUnixMs'],
  ['workerStart', 'workerStartUnixMs'],
  ['inputFetchStart', 'inputFetchStartUnixMs'],
  ['inputFetchEnd', 'inputFetchEndUnixMs'],
  ['executionStart', 'executionStartUnixMs'],
  ['executionEnd', 'executionEndUnixMs'],
  ['uploadStart', 'uploadStartUnixMs'],
  ['uploadEnd', 'uploadEndUnixMs'],
  ['workerEnd', 'workerEndUnixMs'],
];

const REQUEST_FIELDS: Array<[keyof RequestInfo, keyof reexec.admin.v1.IRequestInfo]> = [
  ['tool', 'toolName'],
  ['toolVersion', 'toolVersion'],
  ['actionId', 'actionId'],
  ['invocationId', 'toolInvocationId'],
  ['correlatedInvocationsId', 'correlatedInvocationsId'],
  ['mnemonic', 'actionMnemonic'],
  ['targetId', 'targetId'],
  ['configurationId', 'configurationId'],
];

export function timingsToWire(t: Timings | undefined): reexec.admin.v1.ITimings | undefined {
  if (!t) return undefined;
  const out: reexec.admin.v1.ITimings = {};
  for (const [k, w] of TIMING_FIELDS) if (t[k] !== undefined) out[w] = t[k];
  return out;
}

export function timingsFromWire(w: reexec.admin.v1.ITimings | null | undefined): Timings | undefined {
  if (!w) return undefined;
  const out: Timings = {};
  for (const [k, f] of TIMING_FIELDS) if (w[f] !== null && w[f] !== undefined) out[k] = Number(w[f]);
  return Object.keys(out).length > 0 ? out : undefined;
}

export function entryToWire(e: HistoryEntry): WireEntry {
  const request: reexec.admin.v1.IRequestInfo | undefined = e.request ? {} : undefined;
  if (e.request && request) for (const [k, w] of REQUEST_FIELDS) if (e.request[k]) request[w] = e.request[k];
  return {
    id: e.id,
    atUnixMs: e.at,
    kind: e.kind,
    outcome: e.outcome,
    instance: e.instance,
    digestFunction: e.digestFunction,
    actionDigest: e.action,
    operation: e.operation ?? '',
    clientPeer: e.client.peer,
    clientIdentity: e.client.identity ?? '',
    request,
    argv: e.argv ?? [],
    argvTruncated: e.argvTruncated ?? false,
    workingDirectory: e.workingDirectory ?? '',
    outputPaths: e.outputPaths ?? [],
    platform: (e.platform ?? []).map(([name, value]) => ({ name, value })),
    worker: e.worker ?? '',
    timings: timingsToWire(e.timings),
    statusCode: e.status.code,
    statusMessage: e.status.message ?? '',
    ...(e.exitCode !== undefined ? { exitCode: e.exitCode } : {}),
    failed: e.failed,
    outputs: e.outputs,
    stdoutDigest: e.stdout ?? '',
    stderrDigest: e.stderr ?? '',
  };
}

/** A wire entry as the plain HistoryEntry (what `--json` prints), without the kept ActionResult. */
export function entryFromWire(w: WireEntry): HistoryEntry {
  const e: HistoryEntry = {
    id: w.id ?? '',
    at: Number(w.atUnixMs ?? 0),
    kind: (w.kind ?? 'execute') as EntryKind,
    outcome: (w.outcome ?? 'ran') as Outcome,
    instance: w.instance ?? '',
    digestFunction: w.digestFunction ?? 'sha256',
    action: w.actionDigest ?? '',
    client: { peer: w.clientPeer ?? '', ...(w.clientIdentity ? { identity: w.clientIdentity } : {}) },
    status: { code: w.statusCode ?? 0, ...(w.statusMessage ? { message: w.statusMessage } : {}) },
    failed: !!w.failed,
  };
  if (w.operation) e.operation = w.operation;
  if (w.request) {
    const r: RequestInfo = {};
    for (const [k, f] of REQUEST_FIELDS) if (w.request[f]) r[k] = String(w.request[f]);
    if (Object.keys(r).length > 0) e.request = r;
  }
  if (w.argv?.length) e.argv = [...w.argv];
  if (w.argvTruncated) e.argvTruncated = true;
  if (w.workingDirectory) e.workingDirectory = w.workingDirectory;
  if (w.outputPaths?.length) e.outputPaths = [...w.outputPaths];
  if (w.platform?.length) e.platform = w.platform.map((p) => [p.name ?? '', p.value ?? '']);
  if (w.worker) e.worker = w.worker;
  const t = timingsFromWire(w.timings);
  if (t) e.timings = t;
  if (w.exitCode !== null && w.exitCode !== undefined) e.exitCode = w.exitCode;
  if (w.outputs) e.outputs = { files: Number(w.outputs.files ?? 0), directories: Number(w.outputs.directories ?? 0), symlinks: Number(w.outputs.symlinks ?? 0), bytes: Number(w.outputs.bytes ?? 0) };
  if (w.stdoutDigest) e.stdout = w.stdoutDigest;
  if (w.stderrDigest) e.stderr = w.stderrDigest;
  return e;
}

export const propsToWire = (props: ReadonlyArray<readonly [string, string]> | ReadonlyArray<{ name?: string | null; value?: string | null }>): reexec.admin.v1.IProperty[] =>
  props.map((p) => (Array.isArray(p) ? { name: p[0], value: p[1] } : { name: (p as { name?: string | null }).name ?? '', value: (p as { value?: string | null }).value ?? '' }));

export const propsFromWire = (props: reexec.admin.v1.IProperty[] | null | undefined): Array<[string, string]> => (props ?? []).map((p) => [p.name ?? '', p.value ?? '']);
