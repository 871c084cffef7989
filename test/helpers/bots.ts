import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLIENTS_ROOT_SCRIPT } from './clients-root.js';
import { REPO_ROOT } from './daemon-process.js';
import { waitFor as waitForCondition } from './wait.js';

/**
 * A bot host made of the clients root's buildbox-casd (its local CAS, a proxy to the server)
 * and buildbox-worker (running actions with buildbox-run-bubblewrap), as README "More
 * machines" sets one up. Each runs in a process group of its own, so that kill() takes the
 * worker and what it runs down at once, as a crashed machine would.
 */
export interface BotHost {
  id: string;
  /** The worker's output so far. */
  output(): string;
  casdOutput(): string;
  /** Resolves when the worker process has exited. */
  exited: Promise<number | null>;
  running(): boolean;
  /** SIGKILL the worker's process group (and casd's): a machine that died. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL whatever is left. */
  stop(): Promise<void>;
}

export interface BotHostOptions {
  /** The server as the bot reaches it (http://HOST:PORT). */
  url: string;
  id: string;
  /** --platform flags: what the bot offers. */
  platform: Array<[string, string]>;
  /** An access token for the Bots service and casd (written to a file the bot reads). */
  token?: string;
  /** casd's token, when it differs from the worker's. */
  casToken?: string;
  /** The server's certificate (a path inside the clients root), for https:// servers. */
  serverCert?: string;
  /** A client certificate and key (paths inside the clients root), for mutual TLS. */
  clientCert?: { cert: string; key: string };
  /** Run inside this network namespace (ip netns exec). */
  netns?: string;
  /** Extra buildbox-worker flags. */
  workerArgs?: string[];
}

/** A clients-root command in a process group of its own (optionally in a network namespace). */
export function spawnInRoot(root: string, argv: string[], netns?: string): ChildProcess {
  const cmd = [...(netns ? ['ip', 'netns', 'exec', netns] : []), 'sh', CLIENTS_ROOT_SCRIPT, 'run', root, ...argv];
  return spawn(cmd[0]!, cmd.slice(1), { cwd: REPO_ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    /* gone */
  }
}

/**
 * Start a bot host in `work` (a folder made by makeClientsWork: `work` its host path,
 * `inside` the same folder in the clients root).
 */
export async function startBotHost(root: string, work: string, inside: string, opts: BotHostOptions): Promise<BotHost> {
  const dir = join(work, `bot-${opts.id}`);
  const dirInside = `${inside}/bot-${opts.id}`;
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const tokenArgs: string[] = [];
  if (opts.token !== undefined) writeFileSync(join(dir, 'token'), opts.token, { mode: 0o600 });
  const casToken = opts.casToken ?? opts.token;
  if (casToken !== undefined) {
    writeFileSync(join(dir, 'cas-token'), casToken, { mode: 0o600 });
    tokenArgs.push(`--access-token=${dirInside}/cas-token`);
  }
  const certArgs = [...(opts.serverCert ? [`--server-cert=${opts.serverCert}`] : []), ...(opts.clientCert ? [`--client-cert=${opts.clientCert.cert}`, `--client-key=${opts.clientCert.key}`] : [])];
  let casdOut = '';
  const casd = spawnInRoot(root, ['buildbox-casd', `--cas-remote=${opts.url}`, ...tokenArgs, ...certArgs, `--bind=unix:${dirInside}/casd.sock`, `${dirInside}/cache`], opts.netns);
  casd.stdout!.on('data', (b: Buffer) => (casdOut += b.toString()));
  casd.stderr!.on('data', (b: Buffer) => (casdOut += b.toString()));
  // casd is ready when its socket exists.
  for (let i = 0; ; i++) {
    if (readdirSync(dir).includes('casd.sock')) break;
    if (casd.exitCode !== null) throw new Error(`buildbox-casd of bot ${opts.id} exited ${casd.exitCode}:\n${casdOut}`);
    if (i > 600) throw new Error(`buildbox-casd of bot ${opts.id} did not create its socket in 60 s:\n${casdOut}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  let out = '';
  const worker = spawnInRoot(
    root,
    [
      'buildbox-worker',
      `--bots-remote=${opts.url}`,
      ...(opts.token !== undefined ? [`--bots-access-token=${dirInside}/token`] : []),
      ...(opts.serverCert ? [`--bots-server-cert=${opts.serverCert}`] : []),
      ...(opts.clientCert ? [`--bots-client-cert=${opts.clientCert.cert}`, `--bots-client-key=${opts.clientCert.key}`] : []),
      `--cas-remote=unix:${dirInside}/casd.sock`,
      '--buildbox-run=buildbox-run-bubblewrap',
      // FUSE staging needs /dev/fuse, which the clients root's namespace lacks: hard links from casd's cache.
      // buildbox-run-bubblewrap fetches the input root itself: staging through casd's
      // LocalCAS StageTree fails in the clients root ("Unexpected error in RPC handling").
      '--runner-arg=--disable-localcas',
      ...opts.platform.map(([k, v]) => `--platform=${k}=${v}`),
      ...(opts.workerArgs ?? []),
      opts.id,
    ],
    opts.netns,
  );
  worker.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  worker.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
  const casdExited = new Promise<void>((resolve) => (casd.exitCode !== null ? resolve() : casd.once('exit', () => resolve())));
  let alive = true;
  void exited.then(() => (alive = false));
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    killGroup(worker, signal);
    killGroup(casd, signal);
    const timer = setTimeout(() => {
      killGroup(worker, 'SIGKILL');
      killGroup(casd, 'SIGKILL');
    }, 5_000);
    await Promise.all([exited, casdExited]);
    clearTimeout(timer);
  };
  return {
    id: opts.id,
    output: () => out,
    casdOutput: () => casdOut,
    exited,
    running: () => alive,
    kill: () => end('SIGKILL'),
    stop: () => end('SIGTERM'),
  };
}

/** Host pids of processes whose argv is exactly `argv` (an action's command, found on the host). */
/** SIGKILL `pid` unless it has already gone (ESRCH). */
export function killIfAlive(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export function processesWithArgs(argv: readonly string[]): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .flatMap((p) => {
      try {
        const args = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').slice(0, argv.length);
        return args.length === argv.length && args.every((a, i) => (i === 0 ? a.endsWith(argv[0]!) : a === argv[i])) ? [Number(p)] : [];
      } catch {
        return [];
      }
    });
}

/** Wait for a condition (the bound only turns a hang into a failure: bots start slowly on a loaded machine). */
export function waitFor<T>(what: string, condition: () => T | Promise<T>, timeoutMs = 120_000): Promise<NonNullable<T>> {
  return waitForCondition(what, condition, { timeoutMs, intervalMs: 100 });
}

/** A network namespace with a veth pair to the host: the bot in it is another host to the server. */
export interface NetNs {
  name: string;
  /** The host's end, the address the server listens on. */
  hostAddress: string;
  /** The namespace's end. */
  nsAddress: string;
  /** The host's end of the veth pair: `ip link set IF down` cuts the namespace off (a network outage). */
  hostInterface: string;
  remove(): void;
}

export function createNetNs(): NetNs {
  const n = 1 + Math.floor(Math.random() * 250);
  const tag = `${process.pid % 10000}${n}`;
  const name = `reexec-bot-${tag}`;
  const host = `rxh${tag}`;
  const peer = `rxb${tag}`;
  const hostAddress = `10.77.${n}.1`;
  const nsAddress = `10.77.${n}.2`;
  const ip = (...args: string[]): void => {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  ip('netns', 'add', name);
  try {
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    ip('link', 'set', peer, 'netns', name);
    ip('addr', 'add', `${hostAddress}/30`, 'dev', host);
    ip('link', 'set', host, 'up');
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${nsAddress}/30`, 'dev', peer);
    ip('netns', 'exec', name, 'ip', 'link', 'set', peer, 'up');
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    try {
      ip('netns', 'del', name);
    } catch {
      /* best effort */
    }
    throw err;
  }
  return {
    name,
    hostAddress,
    nsAddress,
    hostInterface: host,
    remove: () => {
      // Deleting the namespace deletes its end of the pair, and with it the host's end.
      try {
        ip('netns', 'del', name);
      } catch {
        /* already gone */
      }
      try {
        ip('link', 'del', host);
      } catch {
        /* went with the namespace */
      }
    },
  };
}
