import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';

/**
 * reexec as a systemd service: the unit file `reexec init --systemd` writes, and the commands
 * that enable it. A user unit (the default) runs the daemon in the user's own systemd manager;
 * a system unit (--system) runs it as a dedicated user with the file system read-only but for
 * its data dir.
 *
 * What bubblewrap needs decides what the unit leaves out: actions run in new user, mount, PID,
 * network, IPC and UTS namespaces with a fresh procfs, so no PrivateUsers= (and, in a user
 * unit, nothing that implies it), no RestrictNamespaces=, and nothing that hides part of /proc
 * or /sys (ProtectKernelTunables=, ProtectKernelLogs=, ProtectControlGroups=, ProtectProc=,
 * ProcSubset=): the kernel mounts a new procfs in a user namespace only where /proc is fully
 * visible. NoNewPrivileges= only when bwrap is not setuid (it needs user namespaces then).
 */

export type UnitMode = 'user' | 'system';

export const UNIT_NAME = 'reexec.service';
/** The dedicated user of a system unit (`reexec init --systemd --system`). */
export const SERVICE_USER = 'reexec';
/** Where a system unit keeps its config and data unless told otherwise. */
export const SYSTEM_CONFIG = '/etc/reexec/config.yaml';
export const SYSTEM_DATA_DIR = '/var/lib/reexec';

export interface UnitOptions {
  mode: UnitMode;
  /** Absolute paths of node and of reexec's bin/run.js. */
  node: string;
  bin: string;
  configPath: string;
  dataDir: string;
  /** System units: the user and group the daemon runs as. */
  user?: string;
  /** Unix socket listeners: their directories must stay writable. */
  socketDirs?: string[];
  /** Whether bwrap is installed setuid root (then NoNewPrivileges= would break it). */
  bwrapSetuid?: boolean;
}

/** Seconds systemd waits for the graceful drain before SIGKILL (the daemon drains calls for up to 10 s). */
export const STOP_TIMEOUT_SECONDS = 60;

/**
 * One word of a command line or path list as systemd reads it: quoted when it holds anything
 * but plain path characters, with "%" (specifiers) and "$" (variables) doubled.
 */
export function systemdWord(s: string): string {
  const escaped = s.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[A-Za-z0-9_@+=:,./-]+$/.test(s) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function renderUnit(o: UnitOptions): string {
  if (![o.node, o.bin, o.configPath, o.dataDir].every(isAbsolute)) throw new Error('renderUnit: node, bin, config and data dir must be absolute paths');
  const exec = [o.node, o.bin, 'start', '--config', o.configPath, '--log-format', 'journal'].map(systemdWord).join(' ');
  const system = o.mode === 'system';
  const enable = enableCommands(o.mode);
  const lines: string[] = [
    `# reexec as a systemd ${o.mode} service, written by \`reexec init --systemd${system ? ' --system' : ''}\`.`,
    `# Enable and start it: ${enable.slice(0, 2).join(' && ')}`,
    `# Logs: ${enable[enable.length - 1]}`,
    '',
    '[Unit]',
    'Description=reexec Remote Execution API (REAPI v2) server',
    ...(system ? ['Wants=network-online.target', 'After=network-online.target'] : []),
    '',
    '[Service]',
    // exec: started once node runs; the daemon logs when it serves.
    'Type=exec',
    `ExecStart=${exec}`,
    // SIGTERM is reexec's graceful stop (drain calls, stop running actions, which run again
    // after the next start, flush the store): to the daemon only, which ends its sandboxes itself.
    '# SIGTERM: drain calls, stop running actions (they run again after the next start), flush the store.',
    'KillSignal=SIGTERM',
    'KillMode=mixed',
    `TimeoutStopSec=${STOP_TIMEOUT_SECONDS}`,
    'Restart=on-failure',
    'RestartSec=2',
    // Blob files and client connections.
    'LimitNOFILE=65536',
    // Logs go to the journal, a line per entry, its level as a syslog priority prefix.
    'StandardOutput=journal',
    'StandardError=journal',
    'SyslogIdentifier=reexec',
    'SyslogLevelPrefix=yes',
  ];
  if (system) {
    const user = o.user ?? SERVICE_USER;
    const stateDir = o.dataDir === SYSTEM_DATA_DIR;
    lines.push(
      `User=${systemdWord(user)}`,
      `Group=${systemdWord(user)}`,
      '# The host read-only to the daemon (and to actions), but for its data dir.',
      'ProtectSystem=strict',
      'ProtectHome=read-only',
      'PrivateTmp=yes',
      ...(stateDir ? ['StateDirectory=reexec', 'StateDirectoryMode=0700'] : []),
      // Unix sockets under /run: systemd makes (and removes) their directory, owned by the user.
      ...runtimeDirs(o.socketDirs ?? []).map((d) => `RuntimeDirectory=${systemdWord(d)}`),
      `ReadWritePaths=${[o.dataDir, ...(o.socketDirs ?? []).map((d) => `-${d}`)].map(systemdWord).join(' ')}`,
    );
    if (!o.bwrapSetuid) lines.push('NoNewPrivileges=yes');
  }
  lines.push(
    '# Left out on purpose: bubblewrap sandboxes need user namespaces and a fully visible /proc, so no',
    '# PrivateUsers=, RestrictNamespaces=, ProtectKernelTunables=, ProtectKernelLogs=, ProtectControlGroups=,',
    `# ProtectProc= or ProcSubset=${system ? '' : ' (and no other sandboxing: in a user unit it implies PrivateUsers=)'}.`,
    '',
    '[Install]',
    `WantedBy=${system ? 'multi-user.target' : 'default.target'}`,
    '',
  );
  return lines.join('\n');
}

function runtimeDirs(dirs: readonly string[]): string[] {
  return dirs.filter((d) => d.startsWith('/run/') && d.length > '/run/'.length).map((d) => d.slice('/run/'.length));
}

/** Where the unit goes: the user's systemd config, or /etc/systemd/system. */
export function defaultUnitPath(mode: UnitMode, env: NodeJS.ProcessEnv = process.env): string {
  if (mode === 'system') return join('/etc/systemd/system', UNIT_NAME);
  const config = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(config, 'systemd', 'user', UNIT_NAME);
}

/** What to run once the unit is written: reload, enable and start, (user: keep it running after logout), read its logs. */
export function enableCommands(mode: UnitMode): string[] {
  if (mode === 'system') return ['sudo systemctl daemon-reload', 'sudo systemctl enable --now reexec', 'journalctl -u reexec -f'];
  return ['systemctl --user daemon-reload', 'systemctl --user enable --now reexec', 'loginctl enable-linger "$USER"', 'journalctl --user -u reexec -f'];
}

/** Whether this machine booted with systemd (what sd_booted(3) checks). */
export function systemdRunning(root = '/'): boolean {
  return existsSync(join(root, 'run/systemd/system'));
}

/** Directories of unix socket listeners ("unix:/run/reexec/reexec.sock" → "/run/reexec"). */
export function socketDirs(listen: readonly string[]): string[] {
  return [...new Set(listen.filter((a) => a.startsWith('unix:')).map((a) => dirname(a.slice('unix:'.length).replace(/^\/\/(?=\/)/, ''))))];
}
