/**
 * The targets of `reexec bench` from its flags: `--endpoint` (repeatable, optionally labelled
 * `NAME=URL`; `temporary` is the bench's own temporary daemon), `--local`, and per-endpoint
 * security flags written `NAME=VALUE`.
 */

/** A problem with the flags, in words for the user. */
export class TargetArgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetArgError';
  }
}

export interface TargetArg {
  /** Heads the target's column; names it in per-endpoint flags (NAME=VALUE) and in REEXEC_TOKEN_<NAME>. */
  label: string;
  kind: 'endpoint' | 'local' | 'temporary';
  /** For kind endpoint: the address as given (grpc[s]://HOST:PORT, HOST:PORT or unix:PATH). */
  endpoint?: string;
}

/** The value `--endpoint` takes for the bench's own temporary daemon. */
export const TEMPORARY = 'temporary';

const LABEL = /^([A-Za-z][A-Za-z0-9_.-]*)=(.+)$/;

/**
 * `--endpoint` values in the order given, after `--local` when it is set (columns in that
 * order; ratios are to the first). Without either: the temporary daemon alone.
 */
export function parseTargets(endpoints: readonly string[], local: boolean): TargetArg[] {
  const out: TargetArg[] = [];
  if (local) out.push({ label: 'local', kind: 'local' });
  for (const value of endpoints) {
    const m = LABEL.exec(value);
    // "grpc://h:1" has no "=" before its "://"; a label never holds ":" or "/".
    const [label, address] = m ? [m[1]!, m[2]!] : [undefined, value];
    if (address === TEMPORARY) out.push({ label: label ?? TEMPORARY, kind: 'temporary' });
    else out.push({ label: label ?? address, kind: 'endpoint', endpoint: address });
  }
  if (out.length === 0) out.push({ label: TEMPORARY, kind: 'temporary' });
  const seen = new Set<string>();
  for (const t of out) {
    if (seen.has(t.label)) throw new TargetArgError(`two targets are called "${t.label}": label them apart, e.g. --endpoint a=${t.endpoint ?? t.label} --endpoint b=...`);
    seen.add(t.label);
  }
  return out;
}

/**
 * A per-endpoint flag (--token, --server-cert, --client-cert, --client-key): each value is
 * `NAME=VALUE` for the endpoint labelled NAME, or a bare VALUE for every --endpoint target
 * (at most one bare value). NAME= counts only when NAME is a label (a token may end in "=").
 */
export function perTarget(flag: string, values: readonly string[], targets: readonly TargetArg[]): Map<string, string> {
  const endpointLabels = targets.filter((t) => t.kind === 'endpoint').map((t) => t.label);
  const out = new Map<string, string>();
  let bare: string | undefined;
  for (const v of values) {
    const eq = v.indexOf('=');
    const name = eq > 0 ? v.slice(0, eq) : undefined;
    if (name !== undefined && targets.some((t) => t.label === name)) {
      if (!endpointLabels.includes(name)) throw new TargetArgError(`${flag} ${name}=...: "${name}" is not an --endpoint target (--local and the temporary daemon bring their own security)`);
      if (out.has(name)) throw new TargetArgError(`${flag} given twice for "${name}"`);
      out.set(name, v.slice(eq + 1));
    } else {
      if (bare !== undefined) throw new TargetArgError(`${flag} given twice without a label: write ${flag} NAME=VALUE, NAME being an --endpoint label (${endpointLabels.join(', ') || 'none'})`);
      bare = v;
    }
  }
  if (bare !== undefined) {
    if (endpointLabels.length === 0) throw new TargetArgError(`${flag} needs an --endpoint`);
    for (const l of endpointLabels) if (!out.has(l)) out.set(l, bare);
  }
  return out;
}

/** The environment variable that holds the token of the endpoint labelled `label`: REEXEC_TOKEN_ and the label in capitals, other characters as _. */
export const tokenEnvName = (label: string): string => `REEXEC_TOKEN_${label.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
