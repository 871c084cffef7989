import { invalidArgument } from '../util/status-error.js';

/** Path segments that would make a ByteStream resource name ambiguous (REAPI forbids them). */
const RESERVED = new Set(['blobs', 'uploads', 'actions', 'actionResults', 'operations', 'capabilities', 'compressed-blobs']);

/**
 * A validated REAPI instance name: "" or slash-separated segments, none of them empty,
 * "." or "..", or one of the reserved words. BuildStream 1.6 sends "", Bazel what
 * --remote_instance_name says.
 */
export class InstanceName {
  private constructor(readonly value: string) {}

  static readonly DEFAULT = new InstanceName('');

  static parse(raw: string | null | undefined, field = 'instance_name'): InstanceName {
    const value = raw ?? '';
    if (value === '') return InstanceName.DEFAULT;
    const segments = value.split('/');
    for (const s of segments) {
      if (s === '' || s === '.' || s === '..') {
        throw invalidArgument(`${field} "${value}" is invalid: segments may not be empty, "." or ".."`, field);
      }
      if (RESERVED.has(s)) {
        throw invalidArgument(`${field} "${value}" is invalid: "${s}" is a reserved word in resource names`, field);
      }
    }
    return new InstanceName(value);
  }

  toString(): string {
    return this.value;
  }
}

/**
 * Which instance names the server accepts: any well-formed one ("*", the default), or a list.
 * CAS content is shared by all instances (it is content-addressed); the action cache and
 * assets are kept per instance.
 */
export class InstancePolicy {
  private readonly allowed: Set<string> | undefined;

  constructor(instances: readonly string[] | '*' = '*') {
    this.allowed = instances === '*' ? undefined : new Set(instances);
  }

  parse(raw: string | null | undefined, field = 'instance_name'): InstanceName {
    const name = InstanceName.parse(raw, field);
    if (this.allowed && !this.allowed.has(name.value)) {
      const list = [...this.allowed].map((s) => `"${s}"`).join(', ');
      throw invalidArgument(`unknown ${field} "${name.value}": this server serves ${list}`, field);
    }
    return name;
  }
}
