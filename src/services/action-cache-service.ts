import type * as grpc from '@grpc/grpc-js';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import type { InstanceName, InstancePolicy } from '../digest/instance-name.js';
import { re, type IActionResult } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { invalidArgument, notFound, StatusError, Code } from '../util/status-error.js';
import { method, unary, type CallContext } from './grpc-adapters.js';

const SERVICE = 'build.bazel.remote.execution.v2.ActionCache';

export const actionCacheDefinition = {
  GetActionResult: method(SERVICE, 'GetActionResult', re.GetActionResultRequest, re.ActionResult),
  UpdateActionResult: method(SERVICE, 'UpdateActionResult', re.UpdateActionResultRequest, re.ActionResult),
};

/** Inlined stdout, stderr and output files together stay under this. */
const INLINE_BUDGET_BYTES = 1024 * 1024;

/**
 * Fill stdout_raw, stderr_raw and OutputFile.contents when a client asks for them and they fit
 * the budget. The spec lets a server leave any of them out; digests always stay.
 */
export async function inlineOutputs(
  cas: BlobStore,
  result: IActionResult,
  fn: DigestFunction,
  ask: { stdout: boolean; stderr: boolean; files: readonly string[] },
): Promise<IActionResult> {
  const out = re.ActionResult.create({ ...result });
  let budget = INLINE_BUDGET_BYTES;
  const take = async (d: re.IDigest | null | undefined): Promise<Uint8Array | undefined> => {
    if (!d || !d.hash) return undefined;
    const digest = Digest.fromProto(d, fn);
    if (digest.sizeBytes > budget) return undefined;
    const data = await cas.get(digest);
    if (data) budget -= data.byteLength;
    return data;
  };
  if (ask.stdout && !(result.stdoutRaw && result.stdoutRaw.length)) out.stdoutRaw = (await take(result.stdoutDigest)) ?? new Uint8Array();
  if (ask.stderr && !(result.stderrRaw && result.stderrRaw.length)) out.stderrRaw = (await take(result.stderrDigest)) ?? new Uint8Array();
  if (ask.files.length > 0 && result.outputFiles) {
    const wanted = new Set(ask.files);
    out.outputFiles = await Promise.all(
      result.outputFiles.map(async (f) => (wanted.has(f.path ?? '') ? { ...f, contents: (await take(f.digest)) ?? new Uint8Array() } : f)),
    );
  }
  return out;
}

/** Check the digests an ActionResult carries, so that nothing malformed is ever served back. */
export function validateActionResult(result: IActionResult, fn: DigestFunction): void {
  const check = (d: re.IDigest | null | undefined, field: string): void => {
    if (d) Digest.fromProto(d, fn, field);
  };
  (result.outputFiles ?? []).forEach((f, i) => {
    if (!f.path) throw invalidArgument(`action_result.output_files[${i}] has no path`, `action_result.output_files[${i}].path`);
    check(f.digest ?? {}, `action_result.output_files[${i}].digest`);
  });
  (result.outputDirectories ?? []).forEach((d, i) => {
    if (!d.treeDigest && !d.rootDirectoryDigest) {
      throw invalidArgument(`action_result.output_directories[${i}] ("${d.path}") has neither tree_digest nor root_directory_digest`);
    }
    check(d.treeDigest, `action_result.output_directories[${i}].tree_digest`);
    check(d.rootDirectoryDigest, `action_result.output_directories[${i}].root_directory_digest`);
  });
  check(result.stdoutDigest, 'action_result.stdout_digest');
  check(result.stderrDigest, 'action_result.stderr_digest');
}

export function actionCacheService(
  log: Logger,
  ac: ActionCache,
  cas: BlobStore,
  opts: {
    instances: InstancePolicy;
    updateEnabled: boolean;
    /** Told of every GetActionResult answered: the result, or undefined for a miss (the action history). */
    onLookup?: (instance: InstanceName, action: Digest, result: IActionResult | undefined, ctx: CallContext) => void;
  },
): grpc.UntypedServiceImplementation {
  return {
    GetActionResult: unary(log, 'GetActionResult', async (req: re.GetActionResultRequest, ctx) => {
      const instance = opts.instances.parse(req.instanceName);
      const action = Digest.fromRequest(req.actionDigest, req.digestFunction, 'action_digest');
      const result = await ac.get(instance, action);
      opts.onLookup?.(instance, action, result, ctx);
      // A miss is a plain NOT_FOUND: BuildStream treats any other error on Get as fatal.
      if (!result) throw notFound(`no action result for action ${action}${instance.value ? ` in instance "${instance.value}"` : ''}`);
      if (!req.inlineStdout && !req.inlineStderr && req.inlineOutputFiles.length === 0) return result;
      return inlineOutputs(cas, result, action.fn, { stdout: req.inlineStdout, stderr: req.inlineStderr, files: req.inlineOutputFiles });
    }),

    UpdateActionResult: unary(log, 'UpdateActionResult', async (req: re.UpdateActionResultRequest) => {
      const instance = opts.instances.parse(req.instanceName);
      if (!opts.updateEnabled) throw new StatusError(Code.PERMISSION_DENIED, 'this server does not accept action results from clients (update_enabled=false)');
      const action = Digest.fromRequest(req.actionDigest, req.digestFunction, 'action_digest');
      if (!req.actionResult) throw invalidArgument('action_result is missing', 'action_result');
      validateActionResult(req.actionResult, action.fn);
      await ac.put(instance, action, req.actionResult);
      return req.actionResult;
    }),
  };
}
