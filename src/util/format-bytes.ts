const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.50 KiB", 505.68 → "506 B", -2048 → "-2.00 KiB": three significant digits at most. */
export function formatBytes(n: number): string {
  // 1023.6 B shows as "1.00 KiB", not "1024 B".
  let v = Math.abs(n) < 1024 ? Math.round(Math.abs(n)) : Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  // Whole bytes below a KiB (a rate or an average is not a whole number of bytes).
  const text = u === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${n < 0 && text !== '0' ? '-' : ''}${text} ${UNITS[u]}`;
}

/** Bytes per second: "506 B/s", "1.50 MiB/s". */
export const formatByteRate = (bytesPerSecond: number): string => `${formatBytes(bytesPerSecond)}/s`;
