import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { call } from '../../src/client/reapi-client.js';
import type { connect } from '../../src/client/reapi-client.js';
import type { LocalTree } from '../../src/client/merkle.js';
import { Digest } from '../../src/digest/digest.js';
import { SHA256, type DigestFunction } from '../../src/digest/digest-function.js';
import { re, longrunning } from '../../src/proto.js';

type Clients = ReturnType<typeof connect>;

export async function uploadTree(clients: Clients, tree: LocalTree): Promise<void> {
  const all = [...tree.blobs.values()];
  let batch: typeof all = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const res: any = await call(clients.cas, 'BatchUpdateBlobs', {
      requests: batch.map((b) => ({ digest: b.digest.toProto(), data: b.data })),
      digestFunction: batch[0]!.digest.fn.value,
    });
    for (const r of res.responses) if (r.status?.code) throw new Error(`upload failed: ${r.status.message}`);
    batch = [];
    bytes = 0;
  };
  for (const b of all) {
    if (b.data.byteLength > 1024 * 1024) {
      await writeBlob(clients, b.digest, b.data);
      continue;
    }
    if (bytes + b.data.byteLength > 2 * 1024 * 1024) await flush();
    batch.push(b);
    bytes += b.data.byteLength;
  }
  await flush();
}

/** ByteStream.Write in 1 MiB chunks (naming the digest function unless it is SHA-256). */
export function writeBlob(clients: Clients, digest: Digest, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = (clients.byteStream as any).Write((err: grpc.ServiceError | null) => (err ? reject(err) : resolve()));
    const fnPart = digest.fn === SHA256 ? '' : `${digest.fn.name}/`;
    const name = `uploads/${randomUUID()}/blobs/${fnPart}${digest.hash}/${digest.sizeBytes}`;
    const chunk = 1024 * 1024;
    for (let off = 0; off < data.byteLength || off === 0; off += chunk) {
      const end = Math.min(data.byteLength, off + chunk);
      stream.write({ resourceName: off === 0 ? name : '', writeOffset: off, data: data.subarray(off, end), finishWrite: end === data.byteLength });
      if (end === data.byteLength) break;
    }
    stream.end();
  });
}

export async function uploadBlob(clients: Clients, data: Uint8Array, fn: DigestFunction = SHA256): Promise<Digest> {
  const digest = Digest.compute(data, fn);
  await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digest.toProto(), data }], digestFunction: fn.value });
  return digest;
}

export interface ActionSpec {
  args: string[];
  env?: Array<[string, string]>;
  outputPaths?: string[];
  outputFiles?: string[];
  outputDirectories?: string[];
  workingDirectory?: string;
  platform?: Array<[string, string]>;
  /** Put the platform in the Command (pre-2.2 clients) instead of the Action. */
  platformInCommand?: boolean;
  timeoutSeconds?: number;
  doNotCache?: boolean;
  outputNodeProperties?: string[];
}

/** Command and Action are hashed with the input root's digest function. */

export async function uploadAction(clients: Clients, root: Digest, spec: ActionSpec): Promise<Digest> {
  const platform = { properties: (spec.platform ?? [['OSFamily', 'linux']]).map(([name, value]) => ({ name, value })).sort((a, b) => (a.name < b.name ? -1 : 1)) };
  const command = re.Command.encode({
    arguments: spec.args,
    environmentVariables: (spec.env ?? [['PATH', '/usr/bin:/bin']]).map(([name, value]) => ({ name, value })),
    outputPaths: spec.outputPaths ?? [],
    outputFiles: spec.outputFiles ?? [],
    outputDirectories: spec.outputDirectories ?? [],
    workingDirectory: spec.workingDirectory ?? '',
    platform: spec.platformInCommand ? platform : undefined,
    outputNodeProperties: spec.outputNodeProperties ?? [],
  }).finish();
  const commandDigest = await uploadBlob(clients, command, root.fn);
  const action = re.Action.encode({
    commandDigest: commandDigest.toProto(),
    inputRootDigest: root.toProto(),
    platform: spec.platformInCommand ? undefined : platform,
    timeout: spec.timeoutSeconds ? { seconds: spec.timeoutSeconds } : undefined,
    doNotCache: spec.doNotCache ?? false,
  }).finish();
  return uploadBlob(clients, action, root.fn);
}

/** Run Execute (with the action digest's function) and collect every Operation the stream sends. */
export function execute(clients: Clients, actionDigest: Digest, extra: Record<string, unknown> = {}): Promise<{ operations: longrunning.Operation[]; response?: re.ExecuteResponse; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const operations: longrunning.Operation[] = [];
    const stream = (clients.execution as any).Execute({ actionDigest: actionDigest.toProto(), digestFunction: actionDigest.fn.value, ...extra });
    stream.on('data', (op: longrunning.Operation) => operations.push(op));
    stream.on('error', (error: grpc.ServiceError) => resolve({ operations, error }));
    stream.on('end', () => {
      const last = operations[operations.length - 1];
      resolve({ operations, response: last?.response ? re.ExecuteResponse.decode(last.response.value!) : undefined });
    });
  });
}

export async function readBlob(clients: Clients, d: re.IDigest | null | undefined, fn: DigestFunction = SHA256): Promise<Buffer> {
  if (!d || !d.hash) return Buffer.alloc(0);
  const res: any = await call(clients.cas, 'BatchReadBlobs', { digests: [d], digestFunction: fn.value });
  return Buffer.from(res.responses[0].data);
}
