/**
 * google.protobuf.Timestamp and Duration, to and from milliseconds: written once. Both are
 * { seconds, nanos }; protobufjs may hand seconds over as a Long or a string, so every reader
 * goes through Number().
 */
export interface ProtoTime {
  seconds?: number | string | { toString(): string } | null;
  nanos?: number | null;
}

/** Milliseconds (fractional) of a Timestamp or Duration; undefined when the message is absent. */
export function protoTimeToMs(t: ProtoTime | null | undefined): number | undefined {
  if (!t) return undefined;
  return Number(t.seconds ?? 0) * 1000 + Number(t.nanos ?? 0) / 1e6;
}

/** As protoTimeToMs, but an all-zero message (proto3's "not set") is absent too. */
export function setProtoTimeToMs(t: ProtoTime | null | undefined): number | undefined {
  return t && (Number(t.seconds ?? 0) !== 0 || Number(t.nanos ?? 0) !== 0) ? protoTimeToMs(t) : undefined;
}

/** A Timestamp (ms since the epoch) or Duration (ms) as { seconds, nanos }. */
export function protoTimeFromMs(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** A Date as a Timestamp. */
export const timestampOf = (d: Date): { seconds: number; nanos: number } => protoTimeFromMs(d.getTime());
