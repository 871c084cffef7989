import { afterAll } from 'vitest';

/**
 * Counts the hostile cases a security test file tries and prints the total when the file is
 * done, so a run shows how much was attempted, not just that nothing failed.
 */
export function caseTally(suite: string): { add(n?: number): void; readonly count: number } {
  let count = 0;
  afterAll(() => {
    process.stdout.write(`security: ${suite}: ${count} hostile case(s) tried\n`);
  });
  return {
    add(n = 1) {
      count += n;
    },
    get count() {
      return count;
    },
  };
}
