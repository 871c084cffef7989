import { createHash, type Hash } from 'node:crypto';
import { invalidArgument } from '../util/status-error.js';

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
  /** Node crypto algorithm. */
  readonly algorithm: string;
  /** Hash of the empty blob, always present in the CAS. */
  readonly emptyHash: string;
  newHash(): Hash;
}

function define(name: string, value: number, algorithm: string): DigestFunction {
  const emptyHash = createHash(algorithm).digest('hex');
  return {
    name,
    value,
    algorithm,
    hexLength: emptyHash.length,
    emptyHash,
    newHash: () => createHash(algorithm),
  };
}

export const SHA256 = define('sha256', 1, 'sha256');
export const SHA1 = define('sha1', 2, 'sha1');
export const SHA384 = define('sha384', 5, 'sha384');
export const SHA512 = define('sha512', 6, 'sha512');

/** Every function reexec serves, the default first. */
export const DIGEST_FUNCTIONS: readonly DigestFunction[] = [SHA256, SHA1, SHA384, SHA512];

const byValue = new Map(DIGEST_FUNCTIONS.map((f) => [f.value, f]));
const byName = new Map(DIGEST_FUNCTIONS.map((f) => [f.name, f]));
const byHexLength = new Map(DIGEST_FUNCTIONS.map((f) => [f.hexLength, f]));

/** REAPI DigestFunction.Value names, for messages. */
const VALUE_NAMES: Record<number, string> = {
  0: 'UNKNOWN', 1: 'SHA256', 2: 'SHA1', 3: 'MD5', 4: 'VSO', 5: 'SHA384', 6: 'SHA512', 7: 'MURMUR3',
  8: 'SHA256TREE', 9: 'BLAKE3', 10: 'GITSHA1',
};

const supportedList = DIGEST_FUNCTIONS.map((f) => f.name.toUpperCase()).join(', ');

/**
 * The digest function a request asks for. REAPI: UNKNOWN (0) means "infer from the hash
 * length", which for 64 hex digits is SHA-256 (BuildStream and buildbox never set it).
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
