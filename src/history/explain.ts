import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import { re, type protobuf } from '../proto.js';
import type { HistoryEntry } from './entry.js';
import { entryDigest } from './failed-actions.js';
import { shapeKey, targetKey, type HistoryStore } from './history-store.js';
import { diffTrees, type PathChange } from './tree-diff.js';
import { protoTimeToMs } from '../util/proto-time.js';

/** One recorded or stored action, with what the CAS still holds of it. */
export interface ActionSide {
  entry?: HistoryEntry;
  digest: Digest;
  action?: re.Action;
  command?: re.Command;
}

/** An argument added ("+", at its index in the new list) or removed ("-", at its index in the old one). */
export interface ListChange {
  op: '+' | '-';
  index: number;
  value: string;
}

export interface ValueChange {
  name: string;
  before?: string;
  after?: string;
}

export interface Explanation {
  /** The action explained (the later one). */
  subject: ActionSide;
  /** What it was compared with (the earlier one), if anything. */
  other?: ActionSide;
  chosenBy: 'target' | 'command' | 'given' | '';
  reason: string;
  identical: boolean;
  unavailable: string[];
  arguments: ListChange[];
  environment: ValueChange[];
  platform: ValueChange[];
  fields: ValueChange[];
  inputs: PathChange[];
  inputsNotListed: number;
}

/** Load an action's Action and Command from the CAS (each absent when gone or malformed). */
export async function loadSide(cas: BlobStore, digest: Digest, entry?: HistoryEntry): Promise<ActionSide> {
  const side: ActionSide = { digest, ...(entry ? { entry } : {}) };
  const bytes = await cas.get(digest);
  if (!bytes) return side;
  try {
    side.action = re.Action.decode(bytes);
  } catch {
    return side;
  }
  try {
    const cd = side.action.commandDigest ? Digest.fromProto(side.action.commandDigest, digest.fn) : undefined;
    const cb = cd ? await cas.get(cd) : undefined;
    if (cb) side.command = re.Command.decode(cb);
  } catch {
    /* malformed: compared as missing */
  }
  return side;
}

/** The platform that decides how an action runs: the Action's (REAPI 2.2+), else the Command's. */
export function effectivePlatform(side: Pick<ActionSide, 'action' | 'command' | 'entry'>): Array<[string, string]> {
  const props = side.action?.platform?.properties?.length ? side.action.platform.properties : side.command?.platform?.properties;
  if (props) return props.map((p) => [p.name ?? '', p.value ?? '']);
  return side.entry?.platform ?? [];
}

const argvOf = (s: ActionSide): string[] | undefined => (s.command ? s.command.arguments : s.entry?.argv);
const outputsOf = (c: re.ICommand): string[] => ((c.outputPaths ?? []).length > 0 ? [...c.outputPaths!] : [...(c.outputFiles ?? []), ...(c.outputDirectories ?? [])]);

/**
 * The shortest edit turning `a` into `b` (longest common subsequence), as removals (indices in
 * `a`) and additions (indices in `b`). Lists too long for that are compared position by position.
 */
export function diffLists(a: readonly string[], b: readonly string[]): ListChange[] {
  const out: ListChange[] = [];
  if (a.length * b.length > 4_000_000) {
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) {
      if (a[i] === b[i]) continue;
      if (i < a.length) out.push({ op: '-', index: i, value: a[i]! });
      if (i < b.length) out.push({ op: '+', index: i, value: b[i]! });
    }
    return out;
  }
  // lcs[i][j]: length of the LCS of a[i..] and b[j..].
  const lcs: Uint32Array[] = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      i++;
      j++;
    } else if (i < a.length && (j >= b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      out.push({ op: '-', index: i, value: a[i]! });
      i++;
    } else {
      out.push({ op: '+', index: j, value: b[j]! });
      j++;
    }
  }
  return out;
}

/** Differences of two name → value lists (several values of a name joined with ", "). */
export function diffValues(a: ReadonlyArray<readonly [string, string]>, b: ReadonlyArray<readonly [string, string]>): ValueChange[] {
  const collect = (xs: ReadonlyArray<readonly [string, string]>): Map<string, string> => {
    const m = new Map<string, string>();
    for (const [k, v] of xs) m.set(k, m.has(k) ? `${m.get(k)}, ${v}` : v);
    return m;
  };
  const ma = collect(a);
  const mb = collect(b);
  const out: ValueChange[] = [];
  for (const name of [...new Set([...ma.keys(), ...mb.keys()])].sort()) {
    const before = ma.get(name);
    const after = mb.get(name);
    if (before === after) continue;
    out.push({ name, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}) });
  }
  return out;
}

const envOf = (c: re.ICommand): Array<[string, string]> => (c.environmentVariables ?? []).map((e) => [e.name ?? '', e.value ?? '']);

/** How far apart two actions' commands are (fewer is closer); for choosing what to compare with. */
function distance(a: ActionSide, b: ActionSide): number {
  const args = diffLists(argvOf(a) ?? [], argvOf(b) ?? []).length;
  if (!a.command || !b.command) return 1000 + args;
  return args + diffValues(envOf(a.command), envOf(b.command)).length + diffValues(effectivePlatform(a), effectivePlatform(b)).length + (a.command.workingDirectory !== b.command.workingDirectory ? 1 : 0);
}

/** Candidates looked at when choosing the closest earlier action. */
const MAX_CANDIDATES = 20;

/**
 * The closest earlier action to `subject`: among the recorded actions before it with the same
 * target and mnemonic (RequestMetadata), else the same argv[0] and output paths, the one whose
 * command differs least (the newest of equals).
 */
export async function closestEarlier(store: HistoryStore, cas: BlobStore, subject: ActionSide): Promise<{ side: ActionSide; chosenBy: 'target' | 'command'; reason: string } | undefined> {
  const entry = subject.entry;
  const tk = entry ? targetKey(entry) : undefined;
  const argv0 = argvOf(subject)?.[0];
  const outs = subject.command ? outputsOf(subject.command) : entry?.outputPaths;
  const sk = shapeKey(argv0, outs);
  const searches: Array<{ by: 'target' | 'command'; entries: Iterable<HistoryEntry> }> = [];
  if (tk) searches.push({ by: 'target', entries: store.byTarget(tk, entry?.id) });
  if (sk) searches.push({ by: 'command', entries: store.byShape(sk, entry?.id) });
  for (const { by, entries } of searches) {
    const seen = new Set<string>([subject.digest.toString()]);
    let best: { side: ActionSide; d: number } | undefined;
    for (const e of entries) {
      if (entry && e.at > entry.at) continue;
      if (seen.has(e.action)) continue;
      seen.add(e.action);
      const side = await loadSide(cas, entryDigest(e, e.action), e);
      const d = distance(side, subject);
      if (!best || d < best.d) best = { side, d };
      if (seen.size > MAX_CANDIDATES) break;
    }
    if (!best) continue;
    const e = best.side.entry!;
    const when = entry ? ago(entry.at - e.at) : `at ${new Date(e.at).toISOString()}`;
    const reason =
      by === 'target'
        ? `the closest earlier action of the same target ${e.request?.targetId}${e.request?.mnemonic ? ` and mnemonic ${e.request.mnemonic}` : ''}, recorded ${when}${seen.size > 2 ? ` (the closest of ${seen.size - 1})` : ''}`
        : `the closest earlier action with the same program (${argv0}) and outputs, recorded ${when}${seen.size > 2 ? ` (the closest of ${seen.size - 1})` : ''}`;
    return { side: best.side, chosenBy: by, reason };
  }
  return undefined;
}

function ago(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 1) return 'just before';
  if (s < 120) return `${s} s before`;
  if (s < 7200) return `${Math.round(s / 60)} min before`;
  if (s < 172800) return `${Math.round(s / 3600)} h before`;
  return `${Math.round(s / 86400)} days before`;
}

const hex = (b: Uint8Array | null | undefined): string => (b && b.length ? Buffer.from(b).toString('hex') : '');
const timeoutText = (t: protobuf.IDuration | null | undefined): string => (t && (Number(t.seconds) || Number(t.nanos)) ? `${protoTimeToMs(t)! / 1000}s` : '');

type Differences = Omit<Explanation, 'subject' | 'other' | 'chosenBy' | 'reason'>;
const noDifferences = (identical: boolean): Differences => ({ identical, unavailable: [], arguments: [], environment: [], platform: [], fields: [], inputs: [], inputsNotListed: 0 });

/** Compare two actions: `before` (the earlier) and `after` (the one explained). */
export async function compareActions(cas: BlobStore, before: ActionSide, after: ActionSide): Promise<Differences> {
  const out = noDifferences(before.digest.equals(after.digest));
  if (out.identical) return out;
  const gone = (side: ActionSide, what: string): string => `the ${what} of action ${side.digest} is no longer in the CAS`;
  for (const side of [before, after]) {
    if (!side.action) out.unavailable.push(`${gone(side, 'Action')}: only what the history recorded (arguments, platform) is compared`);
    else if (!side.command) out.unavailable.push(`${gone(side, 'Command')}: its environment is not compared`);
  }
  const argsA = argvOf(before);
  const argsB = argvOf(after);
  if (argsA && argsB) {
    out.arguments = diffLists(argsA, argsB);
    if ((!before.command && before.entry?.argvTruncated) || (!after.command && after.entry?.argvTruncated)) out.unavailable.push('the arguments were recorded shortened: differences past the recorded part are not seen');
  } else out.unavailable.push('the arguments of one side are unknown (neither its Command nor a recorded command line)');
  if (before.command && after.command) {
    out.environment = diffValues(envOf(before.command), envOf(after.command));
    const field = (name: string, a: string, b: string): void => void (a !== b && out.fields.push({ name, before: a, after: b }));
    field('working_directory', before.command.workingDirectory ?? '', after.command.workingDirectory ?? '');
    field('output_paths', outputsOf(before.command).join(' '), outputsOf(after.command).join(' '));
  }
  out.platform = diffValues(effectivePlatform(before), effectivePlatform(after));
  if (before.action && after.action) {
    const field = (name: string, a: string, b: string): void => void (a !== b && out.fields.push({ name, before: a, after: b }));
    field('timeout', timeoutText(before.action.timeout), timeoutText(after.action.timeout));
    field('do_not_cache', String(before.action.doNotCache), String(after.action.doNotCache));
    field('salt', hex(before.action.salt), hex(after.action.salt));
    const ra = before.action.inputRootDigest ? Digest.fromProto(before.action.inputRootDigest, before.digest.fn) : undefined;
    const rb = after.action.inputRootDigest ? Digest.fromProto(after.action.inputRootDigest, after.digest.fn) : undefined;
    if (ra && rb && !ra.equals(rb)) {
      const d = await diffTrees(cas, ra, rb);
      out.inputs = d.changes;
      out.inputsNotListed = d.notListed;
      out.unavailable.push(...d.problems);
    }
  } else out.unavailable.push('the input roots are not compared (an Action is gone)');
  return out;
}

/** Explain `subject`: against `given`, else against the closest earlier action in the history. */
export async function explainAction(store: HistoryStore, cas: BlobStore, subject: ActionSide, given?: ActionSide): Promise<Explanation> {
  let other: ActionSide | undefined = given;
  let chosenBy: Explanation['chosenBy'] = given ? 'given' : '';
  let reason = given ? `compared with ${given.digest}, as asked` : '';
  if (!given) {
    const found = await closestEarlier(store, cas, subject);
    if (found) ({ side: other, chosenBy, reason } = found);
  }
  if (!other) {
    const how = subject.entry?.request?.targetId
      ? `of the same target ${subject.entry.request.targetId}${subject.entry.request.mnemonic ? ` and mnemonic ${subject.entry.request.mnemonic}` : ''}, nor one`
      : '';
    return {
      subject,
      chosenBy: '',
      reason: `no earlier action ${how} with the same program and outputs is in the history: nothing to compare with (compare with a given action: --against DIGEST)`.replace(/\s+/g, ' '),
      ...noDifferences(false),
    };
  }
  return { subject, other, chosenBy, reason, ...(await compareActions(cas, other, subject)) };
}
