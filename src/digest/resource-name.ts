import { invalidArgument } from '../util/status-error.js';
import { Digest } from './digest.js';
import { digestFunctionForHashLength, digestFunctionFromName, type DigestFunction } from './digest-function.js';
import { InstanceName, type InstancePolicy } from './instance-name.js';

/** Compressors reexec can name; whether one is served is the ByteStream service's business. */
export type CompressorName = 'identity' | 'zstd' | 'deflate' | 'brotli';
const COMPRESSORS = new Set<string>(['zstd', 'deflate', 'brotli']);

/** REAPI digest function names that may appear in resource names, including ones not served. */
const KNOWN_FUNCTION_NAMES = new Set(['sha256', 'sha1', 'md5', 'vso', 'sha384', 'sha512', 'murmur3', 'sha256tree', 'blake3', 'gitsha1']);

export interface ResourceName {
  instance: InstanceName;
  digest: Digest;
  /** 'identity' for "blobs/...", else the compressor of "compressed-blobs/{c}/...". */
  compressor: CompressorName;
  /** For uploads: the client's UUID (not unique: BuildStream 1.6 reuses one per process). */
  uploadId?: string;
}

function parseBlobPart(parts: string[], start: number, raw: string, compressed: boolean): { digest: Digest; compressor: CompressorName; end: number } {
  let i = start;
  let compressor: CompressorName = 'identity';
  if (compressed) {
    const c = parts[i++];
    if (c === undefined || !COMPRESSORS.has(c)) {
      throw invalidArgument(`resource name "${raw}": unknown compressor "${c ?? ''}" (expected one of zstd, deflate, brotli)`, 'resource_name');
    }
    compressor = c as CompressorName;
  }
  let fn: DigestFunction | undefined;
  const maybeFn = parts[i];
  if (maybeFn !== undefined && KNOWN_FUNCTION_NAMES.has(maybeFn) && parts.length > i + 2) {
    fn = digestFunctionFromName(maybeFn);
    if (!fn) throw invalidArgument(`resource name "${raw}": digest function "${maybeFn}" is not supported by this server`, 'resource_name');
    i++;
  }
  const hash = parts[i];
  const sizeText = parts[i + 1];
  if (hash === undefined || sizeText === undefined) {
    throw invalidArgument(`resource name "${raw}" is incomplete: expected ".../blobs/{hash}/{size}"`, 'resource_name');
  }
  if (!/^[0-9]+$/.test(sizeText)) {
    throw invalidArgument(`resource name "${raw}": size "${sizeText}" is not a non-negative integer`, 'resource_name');
  }
  if (!Number.isSafeInteger(Number(sizeText))) {
    throw invalidArgument(`resource name "${raw}": size "${sizeText}" is too large`, 'resource_name');
  }
  if (!fn) fn = digestFunctionForHashLength(hash.length);
  const digest = Digest.of(fn, hash, Number(sizeText), 'resource_name');
  return { digest, compressor, end: i + 2 };
}

/** Parse a ByteStream read name: "[{instance}/]blobs/{hash}/{size}" or "…/compressed-blobs/{c}/{hash}/{size}". */
export function parseReadResourceName(raw: string, instances?: InstancePolicy): ResourceName {
  if (!raw) throw invalidArgument('resource_name is empty', 'resource_name');
  const parts = raw.split('/');
  const at = parts.findIndex((p) => p === 'blobs' || p === 'compressed-blobs');
  if (at < 0) throw invalidArgument(`resource name "${raw}" is not a blob name: expected "[{instance}/]blobs/{hash}/{size}"`, 'resource_name');
  const instanceText = parts.slice(0, at).join('/');
  const instance = instances ? instances.parse(instanceText) : InstanceName.parse(instanceText);
  const { digest, compressor, end } = parseBlobPart(parts, at + 1, raw, parts[at] === 'compressed-blobs');
  // Only upload names may carry trailing metadata (REAPI: "{/optional_metadata}" on Write only).
  if (end !== parts.length) {
    throw invalidArgument(
      `resource name "${raw}" has ${parts.length - end} extra segment(s) after the size ("${parts.slice(end).join('/')}"): a read name ends with ".../{hash}/{size}"`,
      'resource_name',
    );
  }
  return { instance, digest, compressor };
}

/** Parse a ByteStream write name: "[{instance}/]uploads/{uuid}/blobs/{hash}/{size}[/{metadata}]". */
export function parseWriteResourceName(raw: string, instances?: InstancePolicy): ResourceName {
  if (!raw) throw invalidArgument('resource_name is empty', 'resource_name');
  const parts = raw.split('/');
  const at = parts.indexOf('uploads');
  if (at < 0) {
    throw invalidArgument(`resource name "${raw}" is not an upload name: expected "[{instance}/]uploads/{uuid}/blobs/{hash}/{size}"`, 'resource_name');
  }
  const instanceText = parts.slice(0, at).join('/');
  const instance = instances ? instances.parse(instanceText) : InstanceName.parse(instanceText);
  const uploadId = parts[at + 1];
  const kind = parts[at + 2];
  if (!uploadId || (kind !== 'blobs' && kind !== 'compressed-blobs')) {
    throw invalidArgument(`resource name "${raw}" is not an upload name: expected "[{instance}/]uploads/{uuid}/blobs/{hash}/{size}"`, 'resource_name');
  }
  const { digest, compressor } = parseBlobPart(parts, at + 3, raw, kind === 'compressed-blobs');
  return { instance, digest, compressor, uploadId };
}
