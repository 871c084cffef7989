/**
 * What `reexec status` shows: one snapshot of the daemon, produced by the daemon
 * (collectStatus) and rendered by the CLI. Shared as JSON over the Admin API.
 */
export interface StatusSnapshot {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  listeners: string[];
  dataDir: string;
}
