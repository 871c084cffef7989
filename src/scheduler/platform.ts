import { posix } from 'node:path';
import type { IPlatform } from '../proto.js';
import { failedPrecondition, invalidArgument } from '../util/status-error.js';

/**
 * Canonical ISA names are BuildStream's; the REAPI lexicon's and common aliases map onto them.
 * https://github.com/bazelbuild/remote-apis/blob/main/build/bazel/remote/execution/v2/platform.md
 */
const ISA_ALIASES: Record<string, string> = {
  'x86-64': 'x86-64',
  x86_64: 'x86-64',
  amd64: 'x86-64',
  'x86-32': 'x86-32',
  i386: 'x86-32',
  i686: 'x86-32',
  aarch64: 'aarch64',
  'arm-a64': 'aarch64',
  arm64: 'aarch64',
  'aarch64-be': 'aarch64-be',
  'arm-a64-be': 'aarch64-be',
  aarch32: 'aarch32',
  'arm-a32': 'aarch32',
  armhf: 'aarch32',
  'power-isa-le': 'power-isa-le',
  ppc64le: 'power-isa-le',
  ppc64el: 'power-isa-le',
  'power-isa-be': 'power-isa-be',
  ppc64: 'power-isa-be',
  rv64g: 'rv64g',
  riscv64: 'rv64g',
  rv32g: 'rv32g',
  's390x': 's390x',
  'sparc-v9': 'sparc-v9',
  la64v100: 'la64v100',
  loongarch64: 'la64v100',
};

export function canonicalIsa(name: string): string | undefined {
  return ISA_ALIASES[name] ?? ISA_ALIASES[name.toLowerCase()];
}

/** The ISA this Node process runs on, in canonical form. */
export function hostIsa(arch: string = process.arch): string {
  const map: Record<string, string> = { x64: 'x86-64', ia32: 'x86-32', arm64: 'aarch64', arm: 'aarch32', ppc64: 'power-isa-le', s390x: 's390x', riscv64: 'rv64g', loong64: 'la64v100' };
  return map[arch] ?? arch;
}

export type SandboxKind = 'rootfs' | 'host-tools';

/** The platform property that selects reexec's host-toolchain sandbox (Bazel, recc). */
export const SANDBOX_PROPERTY = 'reexec-sandbox';

/**
 * The platform property BuildStream 2.6+ sends for `sandbox: remote-apis-socket: path: …`: a
 * UNIX socket at that path inside the sandbox speaks REAPI to this server (nested recc or
 * Bazel). BuildStream sends the path without its leading "/" (relative to the input root).
 */
export const REMOTE_APIS_SOCKET_PROPERTY = 'remoteApisSocketPath';

/** What an action asks of the machine that runs it, validated. */
export interface PlatformRequirements {
  osFamily: string;
  /** Canonical ISA names, all of which the worker must provide (REAPI: multi-valued AND). */
  isas: string[];
  uid: number;
  gid: number;
  network: boolean;
  sandbox: SandboxKind;
  /** remoteApisSocketPath, normalised: where the REAPI socket goes, relative to the input root. */
  remoteApisSocket?: string;
  /** The properties as the client sent them, for messages, the status view and matching bots. */
  raw: Array<{ name: string; value: string }>;
  /**
   * Properties reexec's own sandbox does not know that some bot offers (e.g. pool=gpu): only
   * a worker offering them can run the action.
   */
  extra?: Array<{ name: string; value: string }>;
}

/** What a worker offers: every value of each property it can serve (buildbox-worker's --platform flags). */
export type OfferedProperties = ReadonlyMap<string, ReadonlySet<string>>;

export function offeredProperties(props: Iterable<{ name: string; value: string }>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const p of props) {
    const v = normalValue(p.name, p.value);
    if (!out.has(p.name)) out.set(p.name, new Set());
    out.get(p.name)!.add(v);
  }
  return out;
}

/** Values compared as the REAPI lexicon means them: ISA names canonical, OSFamily case-insensitive. */
function normalValue(name: string, value: string): string {
  if (name === 'ISA') return canonicalIsa(value) ?? value;
  if (name === 'OSFamily') return value.toLowerCase();
  return value;
}

/**
 * Whether a worker offering `offer` can run an action asking for `requested`: every property
 * the action asks for is among the worker's (several values of one key are all required).
 */
export function offersAll(offer: OfferedProperties, requested: ReadonlyArray<{ name: string; value: string }>): boolean {
  return requested.every((p) => offer.get(p.name)?.has(normalValue(p.name, p.value)) ?? false);
}

const KNOWN = ['OSFamily', 'ISA', 'unixUID', 'unixGID', 'network', SANDBOX_PROPERTY, REMOTE_APIS_SOCKET_PROPERTY];

/** A socket path inside the input root: relative (a leading "/" is dropped, as BuildStream does), normalised, never the root itself nor above it. */
function socketPath(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const bad = (why: string): Error => invalidArgument(`platform property ${REMOTE_APIS_SOCKET_PROPERTY}="${value}" ${why}`);
  if (value.includes('\0')) throw bad('contains a NUL byte');
  const rel = posix.normalize(value.replace(/^\/+/, '')).replace(/\/+$/, '');
  if (rel === '' || rel === '.') throw bad('names the root directory: it must name a file, e.g. /tmp/reapi.sock');
  if (rel === '..' || rel.startsWith('../')) throw bad('leaves the input root');
  if (rel === 'proc' || rel.startsWith('proc/')) throw bad('is inside /proc, where nothing can be mounted');
  return rel;
}

function single(props: Array<{ name: string; value: string }>, name: string): string | undefined {
  const values = props.filter((p) => p.name === name).map((p) => p.value);
  if (values.length > 1) throw invalidArgument(`platform property ${name} is given ${values.length} times (${values.join(', ')}); it takes one value`);
  return values[0];
}

function idProperty(props: Array<{ name: string; value: string }>, name: string): number {
  const v = single(props, name);
  if (v === undefined) return 0;
  if (!/^[0-9]+$/.test(v) || Number(v) > 4294967294) throw invalidArgument(`platform property ${name}="${v}" is not a valid numeric id`);
  return Number(v);
}

/**
 * Read an action's platform. Every property is either honoured or refused: since
 * BuildStream 2.5 a property the server cannot honour must fail the build loudly, never be
 * ignored. Refusals are FAILED_PRECONDITION naming the property and what would work.
 */
export function parsePlatform(
  platform: IPlatform | null | undefined,
  defaultIsa = hostIsa(),
  /** Whether some worker (a bot) offers a property reexec's sandbox does not know: it is kept in `extra`. */
  offeredElsewhere: (name: string, value: string) => boolean = () => false,
): PlatformRequirements {
  const raw = (platform?.properties ?? []).map((p) => ({ name: p.name ?? '', value: p.value ?? '' }));
  const extra: Array<{ name: string; value: string }> = [];
  for (const p of raw) {
    if (!KNOWN.includes(p.name)) {
      if (offeredElsewhere(p.name, p.value)) {
        extra.push(p);
        continue;
      }
      throw failedPrecondition(
        `platform property ${p.name}="${p.value}" is not supported by this server (it honours ${KNOWN.join(', ')}, and what a connected bot offers)`,
        [{ type: 'UNSUPPORTED_PLATFORM_PROPERTY', subject: p.name, description: `value "${p.value}"` }],
      );
    }
  }
  const osFamily = single(raw, 'OSFamily') ?? 'linux';
  if (osFamily.toLowerCase() !== 'linux') {
    throw failedPrecondition(`platform property OSFamily="${osFamily}" cannot be served: this server runs Linux actions only`, [
      { type: 'UNSUPPORTED_PLATFORM_PROPERTY', subject: 'OSFamily', description: osFamily },
    ]);
  }
  const isaValues = raw.filter((p) => p.name === 'ISA').map((p) => p.value);
  const isas = [...new Set((isaValues.length ? isaValues : [defaultIsa]).map((v) => {
    const c = canonicalIsa(v);
    if (!c) {
      throw failedPrecondition(`platform property ISA="${v}" names an unknown instruction set (known: ${[...new Set(Object.values(ISA_ALIASES))].join(', ')})`, [
        { type: 'UNSUPPORTED_PLATFORM_PROPERTY', subject: 'ISA', description: v },
      ]);
    }
    return c;
  }))];
  const network = single(raw, 'network');
  if (network !== undefined && network !== 'on' && network !== 'off') {
    throw invalidArgument(`platform property network="${network}" must be "on" or "off"`);
  }
  const sandbox = single(raw, SANDBOX_PROPERTY) ?? 'rootfs';
  if (sandbox !== 'rootfs' && sandbox !== 'host-tools') {
    throw invalidArgument(`platform property ${SANDBOX_PROPERTY}="${sandbox}" must be "rootfs" (input root is /) or "host-tools" (host filesystem read-only, input root as working tree)`);
  }
  const remoteApisSocket = socketPath(single(raw, REMOTE_APIS_SOCKET_PROPERTY));
  return {
    osFamily: 'linux',
    isas,
    uid: idProperty(raw, 'unixUID'),
    gid: idProperty(raw, 'unixGID'),
    network: network === 'on',
    sandbox,
    ...(remoteApisSocket ? { remoteApisSocket } : {}),
    raw,
    extra,
  };
}
