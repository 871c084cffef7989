import type * as grpc from '@grpc/grpc-js';
import { fetchAsset, type AssetStore, type AssetKind, type FoundAsset, type Qualifier } from '../asset/asset-store.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromValue } from '../digest/digest-function.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { asset, re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { invalidArgument, notFound } from '../util/status-error.js';
import { method, OK_STATUS, unary } from './grpc-adapters.js';
import { protoTimeFromMs, setProtoTimeToMs, type ProtoTime } from '../util/proto-time.js';

const FETCH = 'build.bazel.remote.asset.v1.Fetch';
const PUSH = 'build.bazel.remote.asset.v1.Push';

export const fetchDefinition = {
  FetchBlob: method(FETCH, 'FetchBlob', asset.FetchBlobRequest, asset.FetchBlobResponse),
  FetchDirectory: method(FETCH, 'FetchDirectory', asset.FetchDirectoryRequest, asset.FetchDirectoryResponse),
};
export const pushDefinition = {
  PushBlob: method(PUSH, 'PushBlob', asset.PushBlobRequest, asset.PushBlobResponse),
  PushDirectory: method(PUSH, 'PushDirectory', asset.PushDirectoryRequest, asset.PushDirectoryResponse),
};

const toMs = (t: ProtoTime | null | undefined): number | undefined => {
  const ms = setProtoTimeToMs(t);
  return ms === undefined ? undefined : Math.floor(ms);
};
const fromMs = (ms: number | undefined): ProtoTime | undefined => (ms === undefined ? undefined : protoTimeFromMs(ms));

/**
 * The probe BuildStream sends to detect a Remote Asset server is a request with no URI: it must
 * get INVALID_ARGUMENT (OK would send BuildStream 1.6 to a legacy protocol; PERMISSION_DENIED or
 * UNIMPLEMENTED disables the cache). So this check comes first, before anything else.
 */
function requireUris(uris: readonly string[], rpcName: string): void {
  if (uris.length === 0) throw invalidArgument(`${rpcName}: at least one URI is required`, 'uris');
  uris.forEach((u, i) => {
    if (!u) throw invalidArgument(`${rpcName}: uris[${i}] is empty`, `uris[${i}]`);
  });
}

function qualifiersOf(qs: readonly asset.IQualifier[]): Qualifier[] {
  const seen = new Set<string>();
  return qs.map((q, i) => {
    const name = q.name ?? '';
    if (!name) throw invalidArgument(`qualifiers[${i}] has no name`, `qualifiers[${i}].name`);
    if (seen.has(name)) throw invalidArgument(`qualifier "${name}" appears twice`, `qualifiers[${i}].name`);
    seen.add(name);
    return { name, value: q.value ?? '' };
  });
}

/** Reference lists: BuildStream up to 2.6 sends empty digests in them; they mean nothing. */
function references(list: readonly re.IDigest[], fnValue: number, field: string): Digest[] {
  return list.flatMap((d, i) => (d.hash || Number(d.sizeBytes ?? 0) !== 0 ? [Digest.fromRequest(d, fnValue, `${field}[${i}]`)] : []));
}

export function assetServices(
  log: Logger,
  assets: AssetStore,
  opts: { instances: InstancePolicy },
): { fetch: grpc.UntypedServiceImplementation; push: grpc.UntypedServiceImplementation } {
  const fetchOne = async (
    kind: AssetKind,
    req: asset.FetchBlobRequest | asset.FetchDirectoryRequest,
    rpcName: string,
  ): Promise<{ found: FoundAsset; fnValue: number }> => {
    requireUris(req.uris, rpcName);
    const instance = opts.instances.parse(req.instanceName);
    const fn = digestFunctionFromValue(req.digestFunction);
    const found = await fetchAsset(assets, instance, kind, req.uris, qualifiersOf(req.qualifiers), toMs(req.oldestContentAccepted));
    // A gRPC NOT_FOUND error, not an OK reply with a status inside: BuildStream 1.6 ignores
    // response.status and would take an OK reply for a hit.
    if (!found || found.digest.fn !== fn) {
      throw notFound(`no ${kind} asset for ${req.uris.map((u) => `"${u}"`).join(', ')}${req.qualifiers.length ? ' with the given qualifiers' : ''}`);
    }
    return { found, fnValue: fn.value };
  };

  return {
    fetch: {
      FetchBlob: unary(log, 'FetchBlob', async (req: asset.FetchBlobRequest) => {
        const { found, fnValue } = await fetchOne('blob', req, 'FetchBlob');
        return {
          status: OK_STATUS,
          uri: found.uri,
          qualifiers: found.qualifiers,
          expiresAt: fromMs(found.expireAt),
          blobDigest: found.digest.toProto(),
          digestFunction: fnValue,
        };
      }),
      FetchDirectory: unary(log, 'FetchDirectory', async (req: asset.FetchDirectoryRequest) => {
        const { found, fnValue } = await fetchOne('directory', req, 'FetchDirectory');
        return {
          status: OK_STATUS,
          uri: found.uri,
          qualifiers: found.qualifiers,
          expiresAt: fromMs(found.expireAt),
          rootDirectoryDigest: found.digest.toProto(),
          digestFunction: fnValue,
        };
      }),
    },
    push: {
      PushBlob: unary(log, 'PushBlob', async (req: asset.PushBlobRequest) => {
        requireUris(req.uris, 'PushBlob');
        const instance = opts.instances.parse(req.instanceName);
        await assets.put(instance, req.uris, qualifiersOf(req.qualifiers), {
          kind: 'blob',
          digest: Digest.fromRequest(req.blobDigest, req.digestFunction, 'blob_digest'),
          referencesBlobs: references(req.referencesBlobs, req.digestFunction, 'references_blobs'),
          referencesDirectories: references(req.referencesDirectories, req.digestFunction, 'references_directories'),
          expireAt: toMs(req.expireAt),
        });
        return {};
      }),
      PushDirectory: unary(log, 'PushDirectory', async (req: asset.PushDirectoryRequest) => {
        requireUris(req.uris, 'PushDirectory');
        const instance = opts.instances.parse(req.instanceName);
        await assets.put(instance, req.uris, qualifiersOf(req.qualifiers), {
          kind: 'directory',
          digest: Digest.fromRequest(req.rootDirectoryDigest, req.digestFunction, 'root_directory_digest'),
          referencesBlobs: references(req.referencesBlobs, req.digestFunction, 'references_blobs'),
          referencesDirectories: references(req.referencesDirectories, req.digestFunction, 'references_directories'),
          expireAt: toMs(req.expireAt),
        });
        return {};
      }),
    },
  };
}
