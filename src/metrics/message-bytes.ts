/**
 * Byte accounting for gRPC messages. grpc-js hands server interceptors deserialized messages,
 * never their wire size, so the method definitions' (de)serializers note sizes here, keyed by
 * the message object, and the metrics interceptor picks them up:
 * - a request is deserialized before the interceptor sees it: its size waits in `received`;
 * - a response is claimed by the call sending it before it is serialized: the serializer adds
 *   its size to that call's tally as it goes.
 * WeakMaps: nothing here keeps a message alive.
 */
export interface ByteTally {
  addSent(bytes: number): void;
}

const received = new WeakMap<object, number>();
const claims = new WeakMap<object, ByteTally>();

/** Called by a request deserializer. Returns the message, for chaining. */
export function noteReceived<T>(message: T, bytes: number): T {
  if (typeof message === 'object' && message !== null) received.set(message, bytes);
  return message;
}

/** The wire size of a request message, once (0 if unknown: a service not built with method()). */
export function takeReceivedBytes(message: unknown): number {
  if (typeof message !== 'object' || message === null) return 0;
  const n = received.get(message) ?? 0;
  received.delete(message);
  return n;
}

/** A call is about to send `message`: its serialized size goes to `tally`. */
export function claimSent(message: unknown, tally: ByteTally): void {
  if (typeof message === 'object' && message !== null) claims.set(message, tally);
}

/** Called by a response serializer. */
export function noteSent(message: unknown, bytes: number): void {
  if (typeof message !== 'object' || message === null) return;
  const tally = claims.get(message);
  if (tally) {
    claims.delete(message);
    tally.addSent(bytes);
  }
}
