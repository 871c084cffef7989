/**
 * Where time comes from, for behaviour that depends on it (gc grace periods, retention of
 * incomplete cache entries, access-time refreshes, leases). Production code takes a Clock and
 * defaults to `systemClock`; tests pass a ManualClock and move it instead of spying on Date.now.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock that moves only when told to (tests). */
export class ManualClock implements Clock {
  constructor(private ms = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.ms;
  }
  /** Move forward by `ms` milliseconds. */
  advance(ms: number): void {
    this.ms += ms;
  }
  /** Jump to an absolute time (ms since the epoch). */
  set(ms: number): void {
    this.ms = ms;
  }
}
