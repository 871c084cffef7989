import { posix } from 'node:path';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { Job } from '../scheduler/operation.js';
import { parsePlatform, REMOTE_APIS_SOCKET_PROPERTY, type PlatformRequirements } from '../scheduler/platform.js';
import { HOST_TOOLS_ROOT, MAX_SOCKET_PATH_BYTES } from '../runner/bubblewrap-runner.js';
import { failedPrecondition, invalidArgument, StatusError } from '../util/status-error.js';
import { fetchInputTree, type InputTree, type TreeLimits } from '../worker/input-tree.js';
import { resolveOutputPath } from '../worker/output-collector.js';
import { protoTimeToMs } from '../util/proto-time.js';

export interface JobOptions {
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  hostIsa: string;
  /** Largest input root accepted: deeper or bigger ones are refused with INVALID_ARGUMENT. */
  treeLimits?: TreeLimits;
  /** Whether a bot offers a platform property reexec's own sandbox does not know (it is then valid). */
  offeredElsewhere?: (name: string, value: string) => boolean;
}

async function loadMessage<T>(cas: BlobStore, digest: Digest, what: string, decode: (b: Uint8Array) => T): Promise<T> {
  const bytes = await cas.get(digest);
  if (!bytes) throw failedPrecondition(`${what} ${digest} is not in the CAS: upload it first`, [{ type: 'MISSING', subject: digest.blobPath, description: what }]);
  try {
    return decode(bytes);
  } catch (err) {
    throw invalidArgument(`${what} ${digest} is not a valid ${what} message: ${(err as Error).message}`);
  }
}

/**
 * Output paths: relative, inside the root once normalised against the working directory, and
 * each listed once per list. REAPI 2.1+: when `output_paths` is set, `output_files` and
 * `output_directories` are ignored (Bazel 6.3+ sends both, the legacy lists repeating the same
 * paths); otherwise a file may not also be listed as a directory.
 */
export function validateOutputs(command: re.ICommand): void {
  const wd = command.workingDirectory ?? '';
  if (wd.startsWith('/') || resolveOutputPath('', wd || '.') === undefined) {
    throw invalidArgument(`working_directory "${wd}" must be a relative path inside the input root`, 'working_directory');
  }
  const lists: Array<[string, readonly string[]]> =
    (command.outputPaths ?? []).length > 0
      ? [['output_paths', command.outputPaths ?? []]]
      : [
          ['output_files', command.outputFiles ?? []],
          ['output_directories', command.outputDirectories ?? []],
        ];
  const listed = new Map<string, string>();
  for (const [field, paths] of lists) {
    const seen = new Set<string>();
    paths.forEach((p, i) => {
      const where = `${field}[${i}]`;
      if (p.startsWith('/')) throw invalidArgument(`${where} "${p}" is absolute: output paths are relative to the working directory`, where);
      if (resolveOutputPath(wd, p) === undefined) throw invalidArgument(`${where} "${p}" escapes the input root (working directory "${wd}")`, where);
      if (seen.has(p)) throw invalidArgument(`${where} "${p}" is listed twice`, where);
      const other = listed.get(p);
      if (other) throw invalidArgument(`${where} "${p}" is also listed in ${other}: a path is either an output file or an output directory`, where);
      seen.add(p);
    });
    for (const p of paths) listed.set(p, field);
  }
}

/** output_node_properties reexec reports: NodeProperties fields. Anything else is refused (REAPI: INVALID_ARGUMENT). */
export const OUTPUT_NODE_PROPERTIES = ['mtime', 'unix_mode'] as const;

export function validateOutputNodeProperties(command: re.ICommand): void {
  (command.outputNodeProperties ?? []).forEach((name, i) => {
    if (!(OUTPUT_NODE_PROPERTIES as readonly string[]).includes(name)) {
      throw invalidArgument(
        `output_node_properties[${i}] "${name}" is not a node property this server reports (it reports ${OUTPUT_NODE_PROPERTIES.join(', ')})`,
        `output_node_properties[${i}]`,
      );
    }
  });
}

/** The socket of remoteApisSocketPath as the action sees it: connect() takes at most 107 bytes (sun_path). */
function checkSocketPath(platform: PlatformRequirements): void {
  if (!platform.remoteApisSocket) return;
  const inSandbox = posix.join(platform.sandbox === 'host-tools' ? HOST_TOOLS_ROOT : '/', platform.remoteApisSocket);
  if (Buffer.byteLength(inSandbox) > MAX_SOCKET_PATH_BYTES) {
    throw invalidArgument(
      `platform property ${REMOTE_APIS_SOCKET_PROPERTY}: the socket would be at "${inSandbox}", ${Buffer.byteLength(inSandbox)} bytes, longer than the ${MAX_SOCKET_PATH_BYTES} bytes a UNIX socket path may have: choose a shorter path such as /tmp/reapi.sock`,
    );
  }
}

/** The working directory must exist in the input tree (a directory, reached through directories). */
function checkWorkingDirectory(tree: InputTree, wd: string): void {
  if (!wd) return;
  let dir = tree.directories.get(tree.root.key)!;
  let fnDigest = tree.root;
  for (const part of wd.split('/').filter((p) => p && p !== '.')) {
    const sub = dir.directories.find((d) => d.name === part);
    if (!sub) throw invalidArgument(`working_directory "${wd}" does not exist in the input root (no directory "${part}")`, 'working_directory');
    fnDigest = Digest.fromProto(sub.digest, tree.root.fn);
    dir = tree.directories.get(fnDigest.key)!;
  }
}

/**
 * Everything Execute checks before an action is queued, so that a bad request fails at once
 * with a status naming what is wrong: the Action, Command and every input blob present,
 * valid Directory messages, outputs inside the root, and a platform some pool can serve.
 */
export async function buildJob(
  cas: BlobStore,
  instance: InstanceName,
  actionDigest: Digest,
  opts: JobOptions,
  priority = 0,
  /** Throws when no worker can serve the platform: called as early as the platform is known. */
  checkPlatform: (p: PlatformRequirements) => void = () => undefined,
): Promise<Job> {
  const action = await loadMessage(cas, actionDigest, 'Action', (b) => re.Action.decode(b));
  // REAPI 2.2+ clients put the platform in the Action: refuse an impossible one before
  // looking at any input, so a client learns it without uploading anything more.
  if ((action.platform?.properties?.length ?? 0) > 0) checkPlatform(parsePlatform(action.platform, opts.hostIsa, opts.offeredElsewhere));
  const fn = actionDigest.fn;
  const commandDigest = Digest.fromProto(action.commandDigest, fn, 'Action.command_digest');
  const rootDigest = Digest.fromProto(action.inputRootDigest, fn, 'Action.input_root_digest');
  const [command, inputTree] = await Promise.all([
    loadMessage(cas, commandDigest, 'Command', (b) => re.Command.decode(b)).catch((e) => e as Error),
    fetchInputTree(cas, rootDigest, opts.treeLimits).catch((e) => e as Error),
  ]);
  // Report a missing Command together with missing inputs, so one round of uploads fixes both.
  const errors = [command, inputTree].filter((e): e is Error => e instanceof Error);
  if (errors.length > 0) {
    const missing = errors.filter((e): e is StatusError => e instanceof StatusError && e.preconditionFailures.length > 0);
    if (missing.length === errors.length && missing.length > 1) {
      throw failedPrecondition(missing.map((e) => e.message).join('; '), missing.flatMap((e) => [...e.preconditionFailures]));
    }
    throw errors[0];
  }
  if (command instanceof Error || inputTree instanceof Error) throw new Error('unreachable');
  if (command.arguments.length === 0 || !command.arguments[0]) throw invalidArgument(`Command ${commandDigest} has no arguments`, 'arguments');
  validateOutputs(command);
  validateOutputNodeProperties(command);
  checkWorkingDirectory(inputTree, command.workingDirectory);
  // REAPI 2.2+: the platform lives in the Action; older clients put it in the Command.
  const platform = parsePlatform((action.platform?.properties?.length ?? 0) > 0 ? action.platform : command.platform, opts.hostIsa, opts.offeredElsewhere);
  checkPlatform(platform);
  checkSocketPath(platform);
  let timeoutMs = opts.defaultTimeoutMs;
  if (action.timeout && (Number(action.timeout.seconds) > 0 || Number(action.timeout.nanos) > 0)) {
    timeoutMs = Math.floor(protoTimeToMs(action.timeout)!);
    if (timeoutMs > opts.maxTimeoutMs) {
      throw invalidArgument(`Action.timeout of ${Math.round(timeoutMs / 1000)} s is above this server's maximum of ${Math.round(opts.maxTimeoutMs / 1000)} s`, 'timeout');
    }
  }
  return { instance, actionDigest, action, command, platform, inputTree, priority, doNotCache: action.doNotCache, timeoutMs };
}
