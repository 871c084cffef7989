import type { Digest } from '../digest/digest.js';
import { re, type IAction, type ICommand, type protobuf } from '../proto.js';
import { Code } from '../util/status-error.js';
import { setProtoTimeToMs } from '../util/proto-time.js';

/**
 * One line of the action history: an Execute call (the action ran, or its result came from
 * the action cache) or a GetActionResult (hit or miss). Plain data, stored as msgpack in
 * LMDB and sent over the Admin API: what was recorded stays readable after the blobs it
 * names are evicted.
 */
export interface HistoryEntry {
  /** Unique and ordered by time (the LMDB key): see entryId. */
  id: string;
  /** When the call finished, ms since the epoch. */
  at: number;
  kind: EntryKind;
  /** execute: ran, or cached (answered from the action cache); lookup: hit or miss. */
  outcome: Outcome;
  instance: string;
  /** The digest function's name ("sha256"). */
  digestFunction: string;
  /** The Action's digest, "HASH/SIZE". */
  action: string;
  /** The Operation name an Execute call returned. */
  operation?: string;
  client: ClientInfo;
  /** What the client said about the call (the requestmetadata-bin header), if it said anything. */
  request?: RequestInfo;
  /** The command line, shortened (argvTruncated says so); the whole one is in the Command blob. */
  argv?: string[];
  argvTruncated?: boolean;
  workingDirectory?: string;
  outputPaths?: string[];
  /** Platform properties, in the order the action gives them. */
  platform?: Array<[string, string]>;
  /** The worker slot that ran it ("reexec/native-0"). For a cache hit: the one that ran it first. */
  worker?: string;
  timings?: Timings;
  /** The call's status (ExecuteResponse.status; NOT_FOUND for a lookup miss). */
  status: { code: number; message?: string };
  exitCode?: number;
  /** An Execute whose action did not succeed: an error status (not a cancellation) or a non-zero exit code. */
  failed: boolean;
  outputs?: OutputSummary;
  /** "HASH/SIZE" of the logs in the CAS. */
  stdout?: string;
  stderr?: string;
  /** The ActionResult (without inlined bytes), when it is small enough to keep. */
  result?: Uint8Array;
}

export type EntryKind = 'execute' | 'lookup';
export type Outcome = 'ran' | 'cached' | 'hit' | 'miss';

export interface ClientInfo {
  /** The peer as gRPC names it ("ipv4:127.0.0.1:41234", "unix:…"). */
  peer: string;
  /** The name of the access token the call presented, when the daemon has a token file. */
  identity?: string;
}

/** RequestMetadata, flattened (empty strings dropped). */
export interface RequestInfo {
  tool?: string;
  toolVersion?: string;
  actionId?: string;
  invocationId?: string;
  correlatedInvocationsId?: string;
  mnemonic?: string;
  targetId?: string;
  configurationId?: string;
}

/** ExecutedActionMetadata's timestamps, ms since the epoch. */
export interface Timings {
  queued?: number;
  workerStart?: number;
  inputFetchStart?: number;
  inputFetchEnd?: number;
  executionStart?: number;
  executionEnd?: number;
  uploadStart?: number;
  uploadEnd?: number;
  workerEnd?: number;
}

export interface OutputSummary {
  files: number;
  directories: number;
  symlinks: number;
  /** Bytes of the output files (directories count their Tree messages only). */
  bytes: number;
}

/** The phases of a run, in ms, as `history` and `show` print them. */
export interface PhaseDurations {
  queued?: number;
  staging?: number;
  running?: number;
  uploading?: number;
  total?: number;
}

/** The header REAPI clients send their RequestMetadata in. */
export const REQUEST_METADATA_HEADER = 'build.bazel.remote.execution.v2.requestmetadata-bin';

/** Arguments kept in an entry, and characters: enough to recognise a command, bounded. */
const MAX_ARGS = 64;
const MAX_ARG_CHARS = 512;
const MAX_ARGV_CHARS = 4096;
const MAX_OUTPUT_PATHS = 64;
/** Largest ActionResult kept in an entry (the rest of an entry is a few hundred bytes). */
const MAX_RESULT_BYTES = 32 * 1024;

/** The decoded header, or undefined when absent or not a RequestMetadata message. */
export function requestInfoOf(header: Buffer | string | undefined): RequestInfo | undefined {
  if (header === undefined || typeof header === 'string') return undefined;
  let m: re.RequestMetadata;
  try {
    m = re.RequestMetadata.decode(header);
  } catch {
    return undefined;
  }
  const out: RequestInfo = {};
  const set = (k: keyof RequestInfo, raw: string | null | undefined): void => {
    // buildbox-casd forwards calls as "CLIENT (via buildbox-casd)", with an empty CLIENT for BuildStream.
    const v = raw?.trim();
    if (v) out[k] = v.length > 1024 ? v.slice(0, 1024) : v;
  };
  set('tool', m.toolDetails?.toolName);
  set('toolVersion', m.toolDetails?.toolVersion);
  set('actionId', m.actionId);
  set('invocationId', m.toolInvocationId);
  set('correlatedInvocationsId', m.correlatedInvocationsId);
  set('mnemonic', m.actionMnemonic);
  set('targetId', m.targetId);
  set('configurationId', m.configurationId);
  return Object.keys(out).length > 0 ? out : undefined;
}

/** An argv bounded in count and size, and whether it was cut. */
export function shortenArgv(argv: readonly string[]): { argv: string[]; truncated: boolean } {
  const out: string[] = [];
  let chars = 0;
  let truncated = false;
  for (const a of argv) {
    if (out.length >= MAX_ARGS || chars >= MAX_ARGV_CHARS) {
      truncated = true;
      break;
    }
    const room = Math.min(MAX_ARG_CHARS, MAX_ARGV_CHARS - chars);
    const cut = a.length > room;
    out.push(cut ? `${a.slice(0, Math.max(0, room - 1))}…` : a);
    chars += Math.min(a.length, room);
    truncated ||= cut;
  }
  return { argv: out, truncated };
}

const tsMs = (t: protobuf.ITimestamp | null | undefined): number | undefined => {
  const ms = setProtoTimeToMs(t);
  return ms === undefined ? undefined : Math.floor(ms);
};

export function timingsOf(m: re.IExecutedActionMetadata | null | undefined): Timings | undefined {
  if (!m) return undefined;
  const t: Timings = {
    queued: tsMs(m.queuedTimestamp),
    workerStart: tsMs(m.workerStartTimestamp),
    inputFetchStart: tsMs(m.inputFetchStartTimestamp),
    inputFetchEnd: tsMs(m.inputFetchCompletedTimestamp),
    executionStart: tsMs(m.executionStartTimestamp),
    executionEnd: tsMs(m.executionCompletedTimestamp),
    uploadStart: tsMs(m.outputUploadStartTimestamp),
    uploadEnd: tsMs(m.outputUploadCompletedTimestamp),
    workerEnd: tsMs(m.workerCompletedTimestamp),
  };
  for (const k of Object.keys(t) as Array<keyof Timings>) if (t[k] === undefined) delete t[k];
  return Object.keys(t).length > 0 ? t : undefined;
}

export function phaseDurations(t: Timings | undefined): PhaseDurations {
  if (!t) return {};
  const span = (a?: number, b?: number): number | undefined => (a !== undefined && b !== undefined && b >= a ? b - a : undefined);
  return {
    queued: span(t.queued, t.workerStart),
    staging: span(t.inputFetchStart, t.inputFetchEnd),
    running: span(t.executionStart, t.executionEnd),
    uploading: span(t.uploadStart, t.uploadEnd),
    total: span(t.queued ?? t.workerStart, t.workerEnd ?? t.uploadEnd ?? t.executionEnd),
  };
}

function outputSummary(r: re.IActionResult): OutputSummary {
  const files = r.outputFiles ?? [];
  const dirs = r.outputDirectories ?? [];
  return {
    files: files.length,
    directories: dirs.length,
    symlinks: (r.outputSymlinks ?? []).length || (r.outputFileSymlinks ?? []).length + (r.outputDirectorySymlinks ?? []).length,
    bytes: files.reduce((n, f) => n + Number(f.digest?.sizeBytes ?? 0), 0) + dirs.reduce((n, d) => n + Number(d.treeDigest?.sizeBytes ?? 0), 0),
  };
}

const digestText = (d: re.IDigest | null | undefined): string | undefined => (d?.hash ? `${d.hash}/${Number(d.sizeBytes ?? 0)}` : undefined);

/** The ActionResult without inlined bytes, when it fits MAX_RESULT_BYTES. */
function keptResult(r: re.IActionResult): Uint8Array | undefined {
  const slim = re.ActionResult.create({ ...r, stdoutRaw: new Uint8Array(), stderrRaw: new Uint8Array(), outputFiles: (r.outputFiles ?? []).map((f) => ({ ...f, contents: new Uint8Array() })) });
  const bytes = re.ActionResult.encode(slim).finish();
  return bytes.byteLength <= MAX_RESULT_BYTES ? bytes : undefined;
}

let seq = 0;
/** Time-ordered unique ids: the ms timestamp, then a counter (entries of one ms stay apart and in order). */
export function entryId(at: number): string {
  seq = (seq + 1) % 1e6;
  return `${String(at).padStart(15, '0')}.${String(seq).padStart(6, '0')}`;
}

export const isCancelled = (status: { code: number }): boolean => status.code === Code.CANCELLED;

/** What the history records of a finished Execute call: plain data, however the scheduler holds it. */
export interface ExecuteFacts {
  at: number;
  operation: string;
  instance: string;
  actionDigest: Digest;
  action?: IAction;
  command?: ICommand;
  /** The worker slot, when the response's metadata does not name one. */
  worker?: string;
  response: re.IExecuteResponse;
  client: ClientInfo;
  request?: RequestInfo;
}

/** What a result says: exit code, outputs, where and when it ran, the logs' digests. */
function addResult(entry: HistoryEntry, r: re.IActionResult): void {
  entry.exitCode = r.exitCode ?? 0;
  entry.outputs = outputSummary(r);
  const worker = r.executionMetadata?.worker;
  if (worker) entry.worker = worker;
  const timings = timingsOf(r.executionMetadata);
  if (timings) entry.timings = timings;
  const so = digestText(r.stdoutDigest);
  const se = digestText(r.stderrDigest);
  if (so) entry.stdout = so;
  if (se) entry.stderr = se;
}

/** What every entry has: when, which action, who asked and what they said about it. */
function baseEntry(f: { at: number; instance: string; actionDigest: Digest; client: ClientInfo; request?: RequestInfo }, kind: EntryKind, outcome: Outcome, status: HistoryEntry['status'], failed: boolean): HistoryEntry {
  const entry: HistoryEntry = { id: entryId(f.at), at: f.at, kind, outcome, instance: f.instance, digestFunction: f.actionDigest.fn.name, action: f.actionDigest.toString(), client: f.client, status, failed };
  if (f.request) entry.request = f.request;
  return entry;
}

export function executeEntry(f: ExecuteFacts): HistoryEntry {
  const r = f.response;
  const status = { code: r.status?.code ?? Code.OK, ...(r.status?.message ? { message: r.status.message } : {}) };
  const result = r.result ?? undefined;
  const exitCode = result ? (result.exitCode ?? 0) : undefined;
  const failed = (status.code !== Code.OK && status.code !== Code.CANCELLED) || (exitCode !== undefined && exitCode !== 0);
  const entry = baseEntry(f, 'execute', r.cachedResult ? 'cached' : 'ran', status, failed);
  entry.operation = f.operation;
  const c = f.command;
  if (c && (c.arguments ?? []).length > 0) {
    const { argv, truncated } = shortenArgv(c.arguments ?? []);
    entry.argv = argv;
    if (truncated) entry.argvTruncated = true;
  }
  if (c?.workingDirectory) entry.workingDirectory = c.workingDirectory;
  const outs = c ? ((c.outputPaths ?? []).length > 0 ? c.outputPaths! : [...(c.outputFiles ?? []), ...(c.outputDirectories ?? [])]) : [];
  if (outs.length > 0) entry.outputPaths = outs.slice(0, MAX_OUTPUT_PATHS);
  const props = (f.action?.platform?.properties?.length ? f.action.platform.properties : c?.platform?.properties) ?? [];
  if (props.length > 0) entry.platform = props.map((p) => [p.name ?? '', p.value ?? '']);
  if (result) addResult(entry, result);
  if (!entry.worker && f.worker) entry.worker = f.worker;
  const kept = result ? keptResult(result) : undefined;
  if (kept) entry.result = kept;
  return entry;
}

/** What the history records of a GetActionResult. */
export interface LookupFacts {
  at: number;
  instance: string;
  actionDigest: Digest;
  /** The result served, or undefined for a miss. */
  result?: re.IActionResult;
  client: ClientInfo;
  request?: RequestInfo;
}

export function lookupEntry(f: LookupFacts): HistoryEntry {
  const entry = baseEntry(f, 'lookup', f.result ? 'hit' : 'miss', f.result ? { code: Code.OK } : { code: Code.NOT_FOUND }, false);
  if (f.result) addResult(entry, f.result);
  return entry;
}

/** The decoded ActionResult an entry kept, if any. */
export function resultOf(entry: HistoryEntry): re.ActionResult | undefined {
  if (!entry.result) return undefined;
  try {
    return re.ActionResult.decode(entry.result);
  } catch {
    return undefined;
  }
}
