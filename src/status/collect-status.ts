import type { StatusSnapshot } from './status-snapshot.js';

/** The parts of the daemon a status snapshot reads. */
export interface StatusSources {
  version: string;
  startedAt: Date;
  listeners: string[];
  dataDir: string;
}

export function collectStatus(src: StatusSources): StatusSnapshot {
  return {
    version: src.version,
    startedAt: src.startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - src.startedAt.getTime()) / 1000),
    listeners: src.listeners,
    dataDir: src.dataDir,
  };
}
