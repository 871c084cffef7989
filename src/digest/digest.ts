import { invalidArgument } from '../util/status-error.js';
import { SHA256, type DigestFunction, digestFunctionFromValue } from './digest-function.js';

const HEX = /^[0-9a-f]+$/;

/**
 * DigestFunction values REAPI leaves out of blob paths (MD5, VSO, MURMUR3 and the SHA family):
 * a hash of their length is unambiguous. Any other function (BLAKE3) is named.
 */
const UNLABELLED_FUNCTIONS = new Set([1 /* SHA256 */, 2 /* SHA1 */, 3 /* MD5 */, 4 /* VSO */, 5 /* SHA384 */, 6 /* SHA512 */, 7 /* MURMUR3 */]);

/** The wire shape of a REAPI Digest (what protobufjs decodes). */
export interface DigestLike {
  hash?: string | null;
  sizeBytes?: number | null;
}

/**
 * A validated, immutable content digest: which function, which hash, how many bytes.
 * Built only through the static parsers, so code holding a Digest can trust it.
 */
export class Digest {
  /** Storage key, unique across digest functions: "sha256:abc…". */
  readonly key: string;

  private constructor(
    readonly fn: DigestFunction,
    readonly hash: string,
    readonly sizeBytes: number,
  ) {
    this.key = `${fn.name}:${hash}`;
  }

  /** Validate a hash and size for a digest function; the message names the offending digest. */
  static of(fn: DigestFunction, hash: string, sizeBytes: number, field = 'digest'): Digest {
    if (typeof hash !== 'string' || hash.length !== fn.hexLength || !HEX.test(hash)) {
      throw invalidArgument(
        `${field}: "${hash}/${sizeBytes}" is not a valid ${fn.name.toUpperCase()} digest: the hash must be ${fn.hexLength} lower-case hex digits`,
        field,
      );
    }
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
      throw invalidArgument(`${field}: "${hash}/${sizeBytes}" has an invalid size ${sizeBytes}: sizes are non-negative integers`, field);
    }
    return new Digest(fn, hash, sizeBytes);
  }

  /** From a decoded proto Digest; an absent digest is an error naming the field. */
  static fromProto(d: DigestLike | null | undefined, fn: DigestFunction = SHA256, field = 'digest'): Digest {
    if (!d) throw invalidArgument(`${field} is missing`, field);
    return Digest.of(fn, d.hash ?? '', Number(d.sizeBytes ?? 0), field);
  }

  /** From a proto Digest and a request's digest_function value (0 = infer from hash length). */
  static fromRequest(d: DigestLike | null | undefined, digestFunction: number | null | undefined, field = 'digest'): Digest {
    return Digest.fromProto(d, digestFunctionFromValue(digestFunction, d?.hash ?? undefined), field);
  }

  /** The digest of some bytes. */
  static compute(data: Uint8Array, fn: DigestFunction = SHA256): Digest {
    return new Digest(fn, fn.newHash().update(data).digest('hex'), data.length);
  }

  static empty(fn: DigestFunction = SHA256): Digest {
    return new Digest(fn, fn.emptyHash, 0);
  }

  get isEmpty(): boolean {
    return this.sizeBytes === 0 && this.hash === this.fn.emptyHash;
  }

  equals(other: Digest): boolean {
    return this.key === other.key && this.sizeBytes === other.sizeBytes;
  }

  toProto(): { hash: string; sizeBytes: number } {
    return { hash: this.hash, sizeBytes: this.sizeBytes };
  }

  /**
   * "blobs/{digest_function/}{hash}/{size}": a ByteStream resource name without the instance,
   * which is also the `subject` of a MISSING violation in a PreconditionFailure (REAPI,
   * Execution.Execute). The function is named only when it is not one of the legacy ones.
   */
  get blobPath(): string {
    return `blobs/${UNLABELLED_FUNCTIONS.has(this.fn.value) ? '' : `${this.fn.name}/`}${this.hash}/${this.sizeBytes}`;
  }

  /** "hash/size", the form clients print and ByteStream names use. */
  toString(): string {
    return `${this.hash}/${this.sizeBytes}`;
  }
}
