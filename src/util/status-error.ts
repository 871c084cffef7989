import { status as Code } from '@grpc/grpc-js';

export { Code };

/** A violation of the kind REAPI puts in google.rpc.PreconditionFailure (type "MISSING" etc.). */
export interface PreconditionViolation {
  type: string;
  subject: string;
  description?: string;
}

/** A field violation of the kind google.rpc.BadRequest carries. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * The one error type of reexec's library code: a gRPC status code, a message that names the
 * offending value, and optional structured details. Services turn it into the call's status;
 * anything else thrown is a bug and becomes INTERNAL.
 */
export class StatusError extends Error {
  readonly code: Code;
  readonly preconditionFailures: readonly PreconditionViolation[];
  readonly fieldViolations: readonly FieldViolation[];

  constructor(
    code: Code,
    message: string,
    details: { preconditionFailures?: PreconditionViolation[]; fieldViolations?: FieldViolation[]; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'StatusError';
    this.code = code;
    this.preconditionFailures = details.preconditionFailures ?? [];
    this.fieldViolations = details.fieldViolations ?? [];
  }

  /** The same error with context prepended: "Failed to read Directory abc/12: Blob not found". */
  withContext(context: string): StatusError {
    return new StatusError(this.code, `${context}: ${this.message}`, {
      preconditionFailures: [...this.preconditionFailures],
      fieldViolations: [...this.fieldViolations],
      cause: this.cause,
    });
  }

  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }
}

export const invalidArgument = (message: string, field?: string): StatusError =>
  new StatusError(Code.INVALID_ARGUMENT, message, field ? { fieldViolations: [{ field, description: message }] } : {});
export const notFound = (message: string): StatusError => new StatusError(Code.NOT_FOUND, message);
export const failedPrecondition = (message: string, violations: PreconditionViolation[] = []): StatusError =>
  new StatusError(Code.FAILED_PRECONDITION, message, { preconditionFailures: violations });
export const outOfRange = (message: string): StatusError => new StatusError(Code.OUT_OF_RANGE, message);
export const resourceExhausted = (message: string): StatusError => new StatusError(Code.RESOURCE_EXHAUSTED, message);
export const unimplemented = (message: string): StatusError => new StatusError(Code.UNIMPLEMENTED, message);
export const internal = (message: string, cause?: unknown): StatusError => new StatusError(Code.INTERNAL, message, { cause });

/** Any thrown value as a StatusError; unexpected errors become INTERNAL with their message. */
export function asStatusError(err: unknown, context?: string): StatusError {
  const se = err instanceof StatusError ? err : internal(err instanceof Error ? err.message : String(err), err);
  return context ? se.withContext(context) : se;
}

/** Context-prepending wrapper for an async step. */
export async function withContext<T>(context: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asStatusError(err, context);
  }
}
