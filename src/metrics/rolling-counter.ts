/**
 * Counts per second over the last `seconds` seconds: what the status snapshot reports as
 * "the last minute" and what the dashboard draws as sparklines. Memory is one number per
 * second, whatever the traffic.
 */
export class RollingCounter {
  private readonly buckets: Float64Array;
  /** The second (since the epoch) each bucket holds, so stale buckets read as zero. */
  private readonly stamps: Float64Array;

  constructor(
    readonly seconds = 60,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = new Float64Array(seconds);
    this.stamps = new Float64Array(seconds).fill(-1);
  }

  add(n = 1): void {
    const sec = Math.floor(this.now() / 1000);
    const i = sec % this.seconds;
    if (this.stamps[i] !== sec) {
      this.stamps[i] = sec;
      this.buckets[i] = 0;
    }
    this.buckets[i]! += n;
  }

  /**
   * One value per second, oldest first, ending with the current (partial) second.
   */
  series(): number[] {
    const sec = Math.floor(this.now() / 1000);
    const out: number[] = [];
    for (let s = sec - this.seconds + 1; s <= sec; s++) {
      const i = ((s % this.seconds) + this.seconds) % this.seconds;
      out.push(this.stamps[i] === s ? this.buckets[i]! : 0);
    }
    return out;
  }

  /** The total over the window. */
  sum(): number {
    return this.series().reduce((a, b) => a + b, 0);
  }
}
