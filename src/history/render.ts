import * as grpc from '@grpc/grpc-js';
import type { reexec } from '../gen/proto.js';
import { formatArgv, formatBytes, formatClient, formatDuration, fit, truncate } from '../status/format.js';
import { shellQuote } from '../util/shell-quote.js';
import { phaseDurations, type HistoryEntry } from './entry.js';
import { entryFromWire, propsFromWire, timingsFromWire } from './wire.js';

/** Text of `reexec history`, `show` and `explain`, and of the dashboard's History view. */

const count = (n: number | null | undefined, one: string, many = `${one}s`): string => `${Number(n ?? 0)} ${Number(n ?? 0) === 1 ? one : many}`;
const codeName = (code: number): string => grpc.status[code] ?? `code ${code}`;

/** "3fa9c1e2b4d0": enough of a hash to name an action (`show` and `explain` take any unique prefix). */
export const shortDigest = (digest: string, n = 12): string => digest.slice(0, n);

/** How an entry ended, in a few characters: "✓ ran", "✗ exit 7", "✗ DEADLINE_EXCEEDED", "cached", "hit", "miss". */
export function outcomeText(e: HistoryEntry): string {
  if (e.kind === 'lookup') return e.outcome;
  if (e.status.code === grpc.status.CANCELLED) return '⊘ cancelled';
  if (e.status.code !== grpc.status.OK) return `✗ ${codeName(e.status.code)}`;
  if ((e.exitCode ?? 0) !== 0) return `✗ exit ${e.exitCode}`;
  return e.outcome === 'cached' ? '✓ cached' : '✓ ran';
}

/** What the action is, for a person: target and mnemonic when the client said, then the command. */
export function whatText(e: HistoryEntry): string {
  const parts: string[] = [];
  if (e.request?.targetId) parts.push(e.request.targetId);
  if (e.request?.mnemonic) parts.push(e.request.mnemonic);
  if (e.argv?.length) parts.push(formatArgv(e.argv) + (e.argvTruncated ? ' …' : ''));
  else if (parts.length === 0) parts.push(e.kind === 'lookup' ? '(action cache lookup)' : '(command unknown)');
  return parts.join(' · ');
}

/** "12:04:05" today, else "2026-11-30 12:04:05" (local time). */
export function whenText(at: number, now = Date.now()): string {
  const d = new Date(at);
  const pad = (x: number): string => String(x).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date(now);
  const sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() && d.getDate() === today.getDate();
  return sameDay ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** The run's duration: queued to done (blank for lookups and cache hits, which did not run now). */
export function durationText(e: HistoryEntry): string {
  if (e.kind !== 'execute' || e.outcome === 'cached') return '';
  const d = phaseDurations(e.timings);
  const ms = d.total ?? d.running;
  return ms === undefined ? '' : formatDuration(ms);
}

/** A few words on the tool: "bazel 7.7.1", "buildbox-casd". */
export const toolText = (e: HistoryEntry): string => e.request?.tool ?? '';

export interface TableOptions {
  /** Line width to fit; undefined: no limit (a pipe). */
  width?: number;
  now?: number;
}

/** The `reexec history` table: one line per entry, in the order given. */
export function formatTable(entries: readonly HistoryEntry[], opts: TableOptions = {}): string {
  const now = opts.now ?? Date.now();
  const rows = entries.map((e) => ({ when: whenText(e.at, now), outcome: outcomeText(e), dur: durationText(e), digest: shortDigest(e.action), tool: toolText(e), what: whatText(e) }));
  const w = (k: keyof (typeof rows)[number], min: number): number => Math.max(min, ...rows.map((r) => [...r[k]].length));
  const cols = { when: w('when', 4), outcome: w('outcome', 6), dur: w('dur', 4), digest: 12, tool: Math.min(14, w('tool', 4)) };
  const wide = (opts.width === undefined || opts.width >= 100) && rows.some((r) => r.tool);
  const head = [fit('TIME', cols.when), fit('RESULT', cols.outcome), fit('TOOK', cols.dur, 'right'), fit('ACTION', cols.digest), ...(wide ? [fit('TOOL', cols.tool)] : []), 'WHAT'].join('  ');
  const lines = [head];
  for (const r of rows) {
    const line = [fit(r.when, cols.when), fit(r.outcome, cols.outcome), fit(r.dur, cols.dur, 'right'), fit(r.digest, cols.digest), ...(wide ? [fit(r.tool, cols.tool)] : []), r.what].join('  ');
    lines.push(opts.width === undefined ? line : truncate(line, opts.width));
  }
  return lines.map((l) => l.trimEnd()).join('\n') + '\n';
}

/** One entry as a line of `--watch` (the table's columns, without the header). */
export function formatLine(e: HistoryEntry, width?: number): string {
  const line = [whenText(e.at), fit(outcomeText(e), 11), fit(durationText(e), 6, 'right'), shortDigest(e.action), toolText(e), whatText(e)].filter((x) => x !== '').join('  ');
  return width === undefined ? line : truncate(line, width);
}

function timingsLine(t: ReturnType<typeof timingsFromWire>): string | undefined {
  const d = phaseDurations(t);
  const parts = (['queued', 'staging', 'running', 'uploading', 'total'] as const).flatMap((k) => (d[k] === undefined ? [] : [`${k} ${formatDuration(d[k]!)}`]));
  return parts.length ? parts.join(' · ') : undefined;
}

const indent = (text: string, by = '  '): string =>
  text
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => by + l)
    .join('\n');

/** The end of a log as text (cut at a line start when it was cut). */
function tailText(t: reexec.admin.v1.ILogTail, maxLines: number): string {
  let text = Buffer.from(t.tail ?? new Uint8Array()).toString('utf8');
  const cut = Number(t.size ?? 0) > (t.tail?.length ?? 0);
  let lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (cut && lines.length > 1) lines = lines.slice(1);
  if (lines.length > maxLines) lines = lines.slice(-maxLines);
  text = lines.join('\n');
  return text;
}

export function logSection(name: string, t: reexec.admin.v1.ILogTail | null | undefined, maxLines = 40): string[] {
  if (!t) return [];
  const size = Number(t.size ?? 0);
  if (!t.present) return [`${name}: ${formatBytes(size)}, no longer in the CAS (${t.digest})`];
  if (size === 0) return [`${name}: empty`];
  const body = tailText(t, maxLines);
  const whole = (t.tail?.length ?? 0) >= size && body.split('\n').length < maxLines;
  const head = `${name} (${formatBytes(size)}${whole ? '' : `, the end; --${name} for all of it`}):`;
  return [head, indent(body || '(nothing printable)')];
}

/** `reexec show`: everything about one action, in sections. */
export function formatShow(d: reexec.admin.v1.IActionDetails, opts: { tailLines?: number; now?: number } = {}): string {
  const out: string[] = [];
  const e = d.entry ? entryFromWire(d.entry) : undefined;
  out.push(`action      ${d.actionDigest} (${d.digestFunction})${e?.operation ? ` · ${e.operation}` : ''}`);
  if (e) {
    const how = e.kind === 'lookup' ? `GetActionResult ${e.outcome}` : `${outcomeText(e)}${e.status.message ? `: ${e.status.message}` : ''}`;
    out.push(`result      ${how} · ${whenText(e.at, opts.now)}${e.worker ? ` · on ${e.worker}` : ''}${d.otherEntries ? ` · ${count(d.otherEntries, 'other entry', 'other entries')} of this action in the history` : ''}`);
    const client = [formatClient(e.client.peer), e.client.identity ? `token ${e.client.identity}` : ''].filter(Boolean).join(', ');
    const r = e.request;
    const said = r ? [r.tool && `${r.tool}${r.toolVersion ? ` ${r.toolVersion}` : ''}`, r.targetId && `target ${r.targetId}`, r.mnemonic && `mnemonic ${r.mnemonic}`, r.invocationId && `invocation ${r.invocationId}`, r.configurationId && `configuration ${r.configurationId}`].filter(Boolean).join(' · ') : '';
    out.push(`client      ${client || 'unknown'}${said ? ` · ${said}` : ''}`);
    const t = timingsLine(e.timings);
    if (t) out.push(`timings     ${t}${e.outcome === 'cached' || e.outcome === 'hit' ? ' (of the run that made the cached result)' : ''}`);
  } else out.push('history     not recorded: shown from the CAS');
  const c = d.command;
  if (c) {
    out.push(`command     ${(c.arguments ?? []).map(shellQuote).join(' ')}`);
    if (c.workingDirectory) out.push(`working dir ${c.workingDirectory}`);
    out.push(`outputs     ${(c.outputPaths ?? []).join(' ') || '(none declared)'}`);
    const plat = propsFromWire(c.platform);
    out.push(`platform    ${plat.length ? plat.map(([k, v]) => `${k}=${v}`).join(' ') : '(none: the defaults)'}`);
    const env = propsFromWire(c.environment);
    out.push(`environment${env.length ? '' : ' (empty)'}`);
    for (const [k, v] of env) out.push(`  ${k}=${v}`);
  } else if (e?.argv) {
    out.push(`command     ${e.argv.map(shellQuote).join(' ')}${e.argvTruncated ? ' … (shortened)' : ''} (as recorded)`);
    if (e.platform?.length) out.push(`platform    ${e.platform.map(([k, v]) => `${k}=${v}`).join(' ')} (as recorded)`);
  }
  const a = d.action;
  if (a) {
    const extra = [a.timeoutMs ? `timeout ${formatDuration(Number(a.timeoutMs))}` : '', a.doNotCache ? 'do_not_cache' : '', a.saltHex ? `salt ${a.saltHex}` : ''].filter(Boolean).join(' · ');
    if (extra) out.push(`action      ${extra}`);
  }
  const ir = d.inputRoot;
  if (ir) {
    out.push(`input root  ${ir.digest}: ${count(ir.files, 'file')}, ${count(ir.directories, 'directory', 'directories')}, ${count(ir.symlinks, 'symlink')}, ${formatBytes(Number(ir.bytes))}${ir.complete ? '' : ` (incomplete: ${ir.problem})`}`);
    for (const l of ir.largest ?? []) out.push(`  ${fit(formatBytes(Number(l.bytes)), 10, 'right')}  ${l.path}`);
  }
  const res = d.result;
  if (res) {
    out.push(`exit code   ${res.exitCode}${res.source === 'action-cache' ? ' (the cached result)' : ''}`);
    const outs = res.outputs ?? [];
    if (outs.length) out.push('outputs:');
    for (const o of outs) out.push(`  ${fit(o.kind ?? '', 9)} ${o.path}${o.kind === 'symlink' ? ` -> ${o.target}` : `  ${formatBytes(Number(o.bytes ?? 0))}  ${o.digest}${o.executable ? '  executable' : ''}`}`);
  }
  out.push(...logSection('stdout', d.stdout, opts.tailLines), ...logSection('stderr', d.stderr, opts.tailLines));
  if (d.kept) out.push('kept        its blobs are kept from eviction (one of the newest failed actions: history.keep-failed)');
  if (d.note) out.push(`note        ${d.note}`);
  return out.join('\n') + '\n';
}

/** `reexec explain`: what differs from the action compared with. */
export function formatExplain(x: reexec.admin.v1.IExplanation): string {
  const out: string[] = [];
  const e = x.entry ? entryFromWire(x.entry) : undefined;
  out.push(`action      ${x.actionDigest}${e ? ` (${outcomeText(e)}, ${whenText(e.at)}${e.request?.targetId ? `, ${e.request.targetId}` : ''})` : ''}`);
  if (e && (e.outcome === 'cached' || e.outcome === 'hit')) out.push(`            it was answered from the cache: nothing missed. Compared anyway:`);
  if (!x.otherActionDigest) {
    out.push(`compared    ${x.reason}`);
    return out.join('\n') + '\n';
  }
  const o = x.otherEntry ? entryFromWire(x.otherEntry) : undefined;
  out.push(`with        ${x.otherActionDigest}${o ? ` (${outcomeText(o)}, ${whenText(o.at)})` : ''}`);
  out.push(`            ${x.reason}`);
  if (x.identical) {
    out.push('no difference: it is the same action (the same digest)');
    return out.join('\n') + '\n';
  }
  let differences = 0;
  const section = (title: string, lines: string[]): void => {
    if (lines.length === 0) return;
    differences += lines.length;
    out.push(title, ...lines.map((l) => `  ${l}`));
  };
  section(
    'arguments:',
    (x.arguments ?? []).map((c) => `${c.op} [${c.index}] ${shellQuote(c.value ?? '')}`),
  );
  const values = (cs: reexec.admin.v1.IValueChange[] | null | undefined, sep = '='): string[] =>
    (cs ?? []).map((c) => {
      const has = (v: string | null | undefined): boolean => v !== null && v !== undefined;
      if (!has(c.before)) return `+ ${c.name}${sep}${c.after}`;
      if (!has(c.after)) return `- ${c.name}${sep}${c.before}`;
      return `~ ${c.name}${sep}${c.before} → ${c.after}`;
    });
  section('environment:', values(x.environment));
  section('platform:', values(x.platform));
  section('action and command fields:', values(x.fields, ': '));
  const inputs = (x.inputs ?? []).map((p) => {
    const mark = p.change === 'added' ? '+' : p.change === 'removed' ? '-' : '~';
    if (p.change === 'added') return `${mark} ${p.path}  (${p.kind} ${p.after})`;
    if (p.change === 'removed') return `${mark} ${p.path}  (${p.kind} ${p.before})`;
    return `${mark} ${p.path}  (${p.kind}, ${p.what}: ${p.before} → ${p.after})`;
  });
  if (Number(x.inputsNotListed) > 0) inputs.push(`… and ${Number(x.inputsNotListed)} more`);
  section('input files:', inputs);
  if (differences === 0 && !x.identical) out.push('no difference found in what could be compared');
  for (const u of x.unavailable ?? []) out.push(`not compared: ${u}`);
  return out.join('\n') + '\n';
}

