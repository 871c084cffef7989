/**
 * Wait for a condition instead of sleeping a fixed time: polls `condition` every `intervalMs`
 * until it returns a truthy value (resolved to), and fails naming `what` after `timeoutMs`.
 * The bound is generous on purpose (a loaded 2-core machine is slow, never wrong): it only
 * stops a test that would otherwise hang.
 */
export async function waitFor<T>(what: string, condition: () => T | Promise<T>, options: { timeoutMs?: number; intervalMs?: number } = {}): Promise<NonNullable<T>> {
  const { timeoutMs = 60_000, intervalMs = 20 } = options;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v as NonNullable<T>;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message ?? String(last)})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
