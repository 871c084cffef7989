import { readFileSync } from 'node:fs';

/**
 * Telling one process from another that later got the same pid. A pid alone is not an
 * identity: after a crash or SIGKILL the pid in a lock or pid file can belong to any process
 * started since. Linux gives every process a start time (clock ticks since boot, field 22 of
 * /proc/PID/stat) that a reused pid cannot share with its previous owner, so (pid, start time)
 * names one process for as long as the machine runs.
 */

export interface ProcessInfo {
  /** Start time in clock ticks since boot. */
  startTicks: number;
  /** One-letter state: R, S, D, Z (a zombie: exited, not yet reaped), ... */
  state: string;
}

/** What /proc says about a process; undefined when there is none (or no /proc). */
export function processInfo(pid: number): ProcessInfo | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last ")".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(fields[19]);
  return Number.isFinite(startTicks) ? { startTicks, state: fields[0] ?? '?' } : undefined;
}

/** This process's start time, recorded next to its pid in lock and pid files. */
export function ownStartTicks(): number | undefined {
  return processInfo(process.pid)?.startTicks;
}

/** Whether a process with this pid exists and has not exited (a zombie has). */
export function processAlive(pid: number): boolean {
  const info = processInfo(pid);
  if (info) return info.state !== 'Z' && info.state !== 'X';
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Whether `pid` is still the process that recorded `startTicks`: alive, and (when both start
 * times are known) started at that very tick. Without a recorded start time, liveness is all
 * there is to go on.
 */
export function sameProcess(pid: number, startTicks: number | undefined): boolean {
  if (!processAlive(pid)) return false;
  if (startTicks === undefined) return true;
  const info = processInfo(pid);
  return info === undefined || info.startTicks === startTicks;
}

/** The command line of a process (argv), or undefined when it cannot be read. */
export function processArgv(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  } catch {
    return undefined;
  }
}

/**
 * The systemd service a process runs as, read from its cgroup: its name ("reexec.service") and
 * whether it is a user manager's (under user@UID.service) or the system's; undefined when
 * none (a login session, a terminal: user@UID.service itself is the user manager).
 */
export function systemdUnitOf(pid: number): { name: string; user: boolean } | undefined {
  try {
    return systemdUnitIn(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The service of /proc/PID/cgroup's text ("0::/system.slice/reexec.service"). */
export function systemdUnitIn(cgroup: string): { name: string; user: boolean } | undefined {
  for (const line of cgroup.split('\n')) {
    const parts = line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1).split('/');
    const name = parts.findLast((part) => part.endsWith('.service'));
    if (name && !/^user@\d+\.service$/.test(name)) return { name, user: parts.some((p) => /^user@\d+\.service$/.test(p)) };
  }
  return undefined;
}
