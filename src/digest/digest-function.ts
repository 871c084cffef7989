import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { invalidArgument } from '../util/status-error.js';

/** An incremental hasher: node's crypto Hash and the BLAKE3 binding's hasher both fit. */
export interface Hasher {
  update(data: Uint8Array): Hasher;
  digest(encoding: 'hex'): string;
}

/**
 * A hash function reexec can address blobs with. Values match REAPI's DigestFunction.Value
 * enum; `name` is the lower-case form used in ByteStream resource names and storage keys.
 */
export interface DigestFunction {
  readonly name: string;
  /** REAPI DigestFunction.Value. */
  readonly value: number;
  /** Length of a hex-encoded hash. */
  readonly hexLength: number;
  /** Hash of the empty blob, always present in the CAS. */
  readonly emptyHash: string;
  /**
   * Whether a hash of this length, sent without a digest function, means this function.
   * False for BLAKE3: REAPI reads an unlabelled 64-digit hash as SHA-256.
   */
  readonly inferable: boolean;
  newHash(): Hasher;
}

function define(name: string, value: number, newHash: () => Hasher, inferable = true): DigestFunction {
  const emptyHash = newHash().digest('hex');
  return { name, value, hexLength: emptyHash.length, emptyHash, inferable, newHash };
}

const nodeHash = (algorithm: string) => (): Hasher => createHash(algorithm);

export const SHA256 = define('sha256', 1, nodeHash('sha256'));
export const SHA1 = define('sha1', 2, nodeHash('sha1'));
export const SHA384 = define('sha384', 5, nodeHash('sha384'));
export const SHA512 = define('sha512', 6, nodeHash('sha512'));

/**
 * BLAKE3 through @napi-rs/blake-hash, a prebuilt native binding (several times node's SHA-256
 * on one core). Loaded optionally: where npm installed no prebuilt binary for the platform,
 * reexec serves the other functions and does not advertise BLAKE3.
 */
function loadBlake3(): DigestFunction | undefined {
  let Blake3Hasher: new () => Hasher;
  try {
    Blake3Hasher = (createRequire(import.meta.url)('@napi-rs/blake-hash') as { Blake3Hasher: new () => Hasher }).Blake3Hasher;
  } catch {
    return undefined;
  }
  return define('blake3', 9, () => new Blake3Hasher(), false);
}
export const BLAKE3: DigestFunction | undefined = loadBlake3();

/** Every function reexec serves, the default first. */
export const DIGEST_FUNCTIONS: readonly DigestFunction[] = [SHA256, SHA1, SHA384, SHA512, ...(BLAKE3 ? [BLAKE3] : [])];

const byValue = new Map(DIGEST_FUNCTIONS.map((f) => [f.value, f]));
const byName = new Map(DIGEST_FUNCTIONS.map((f) => [f.name, f]));
const byHexLength = new Map(DIGEST_FUNCTIONS.filter((f) => f.inferable).map((f) => [f.hexLength, f]));

/** REAPI DigestFunction.Value names, for messages. */
const VALUE_NAMES: Record<number, string> = {
  0: 'UNKNOWN', 1: 'SHA256', 2: 'SHA1', 3: 'MD5', 4: 'VSO', 5: 'SHA384', 6: 'SHA512', 7: 'MURMUR3',
  8: 'SHA256TREE', 9: 'BLAKE3', 10: 'GITSHA1',
};

const supportedList = DIGEST_FUNCTIONS.map((f) => f.name.toUpperCase()).join(', ');

/**
 * The digest function a request asks for. REAPI: UNKNOWN (0) means "infer from the hash
 * length", which for 64 hex digits is SHA-256 (BuildStream and buildbox never set it), never
 * BLAKE3: that is chosen only by an explicit digest_function or a "blake3/" resource name.
 */
export function digestFunctionFromValue(value: number | null | undefined, hashForInference?: string): DigestFunction {
  if (!value) {
    if (hashForInference !== undefined) {
      const inferred = byHexLength.get(hashForInference.length);
      if (inferred) return inferred;
    }
    return SHA256;
  }
  const fn = byValue.get(value);
  if (!fn) {
    throw invalidArgument(
      `digest function ${VALUE_NAMES[value] ?? value} is not supported by this server (supported: ${supportedList})`,
      'digest_function',
    );
  }
  return fn;
}

/** The digest function named in a ByteStream resource name ("sha256", "blake3"...). */
export function digestFunctionFromName(name: string): DigestFunction | undefined {
  return byName.get(name.toLowerCase());
}

/** The function an unlabelled hash of this length means (SHA-256 when none matches). */
export function digestFunctionForHashLength(length: number): DigestFunction {
  return byHexLength.get(length) ?? SHA256;
}
