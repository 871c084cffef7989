import { rpc, TYPE_URL_PREFIX } from '../proto.js';
import { asStatusError, type StatusError } from './status-error.js';

/** google.rpc.Status for a StatusError, with its structured details (PreconditionFailure, BadRequest). */
export function toRpcStatus(err: StatusError): rpc.IStatus {
  const details = [];
  if (err.preconditionFailures.length > 0) {
    details.push({
      type_url: TYPE_URL_PREFIX + 'google.rpc.PreconditionFailure',
      value: rpc.PreconditionFailure.encode({ violations: err.preconditionFailures.map((v) => ({ ...v })) }).finish(),
    });
  }
  if (err.fieldViolations.length > 0) {
    details.push({
      type_url: TYPE_URL_PREFIX + 'google.rpc.BadRequest',
      value: rpc.BadRequest.encode({ fieldViolations: err.fieldViolations.map((v) => ({ ...v })) }).finish(),
    });
  }
  return { code: err.code, message: err.message, details };
}

/** Any thrown value as a google.rpc.Status. */
export function errorToRpcStatus(err: unknown): rpc.IStatus {
  return toRpcStatus(asStatusError(err));
}
