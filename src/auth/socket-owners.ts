import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { endianness } from 'node:os';

/** The two ends of a TCP connection as the server sees them. */
export interface TcpEnds {
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

/** 16 bytes of an IPv6 address, or 4 of an IPv4 one; undefined if it is neither. */
export function addressBytes(address: string): Uint8Array | undefined {
  const a = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(a);
  if (family === 4) return Uint8Array.from(a.split('.').map(Number));
  if (family !== 6) return undefined;
  // An embedded IPv4 tail (::ffff:127.0.0.1) becomes two hex groups first.
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  const text = v4 ? `${v4[1]}${((+v4[2]! << 8) | +v4[3]!).toString(16)}:${((+v4[4]! << 8) | +v4[5]!).toString(16)}` : a;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const words = (s: string): number[] => (s ? s.split(':').map((x) => Number.parseInt(x, 16)) : []);
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  if (fill < 0) return undefined;
  const groups = [...head, ...new Array<number>(fill).fill(0), ...tail];
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 bytes, else undefined. */
function mappedV4(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length !== 16) return bytes.length === 4 ? bytes : undefined;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return undefined;
  return bytes[10] === 0xff && bytes[11] === 0xff ? bytes.subarray(12) : undefined;
}

const hex2 = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

/**
 * An address and port as /proc/net/tcp{,6} print them: the address as 32-bit words each in
 * the host's byte order (%08X), the port as a plain number (%04X).
 */
export function procNetEndpoint(bytes: Uint8Array, port: number, order: 'LE' | 'BE' = endianness()): string {
  let out = '';
  for (let w = 0; w < bytes.length; w += 4) {
    const word = [bytes[w]!, bytes[w + 1]!, bytes[w + 2]!, bytes[w + 3]!];
    if (order === 'LE') word.reverse();
    out += word.map(hex2).join('');
  }
  return `${out}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

const V4_MAPPED_PREFIX = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
const toMapped = (v4: Uint8Array): Uint8Array => Uint8Array.from([...V4_MAPPED_PREFIX, ...v4]);

/**
 * The rows to look for: the peer's socket has the peer's address and port as its local end and
 * ours as its remote end. An IPv4 peer's socket may be AF_INET (in /proc/net/tcp) or a
 * dual-stack AF_INET6 one with IPv4-mapped addresses (in /proc/net/tcp6, as Java clients such
 * as Bazel open them), whichever form the server saw the addresses in.
 */
export function procNetKeys(ends: TcpEnds, order: 'LE' | 'BE' = endianness()): { tcp?: string; tcp6?: string } {
  const peer = addressBytes(ends.remoteAddress);
  const ours = addressBytes(ends.localAddress);
  if (!peer || !ours) return {};
  const peer4 = mappedV4(peer);
  const ours4 = mappedV4(ours);
  const row = (p: Uint8Array, o: Uint8Array): string => `${procNetEndpoint(p, ends.remotePort, order)} ${procNetEndpoint(o, ends.localPort, order)}`;
  if (peer4 && ours4) return { tcp: row(peer4, ours4), tcp6: row(toMapped(peer4), toMapped(ours4)) };
  if (peer.length === 16 && ours.length === 16) return { tcp6: row(peer, ours) };
  return {};
}

/**
 * The uid column of the row whose "local remote" ends are `key` in a /proc/net/tcp{,6} text, if
 * that row is a live socket. Rows without an inode (TIME_WAIT, orphans whose process closed
 * them) are skipped: their uid column says 0 whoever owned them.
 */
export function ownerInProcNet(text: string, key: string): number | undefined {
  let from = 0;
  for (;;) {
    const at = text.indexOf(key, from);
    if (at < 0) return undefined;
    from = at + key.length;
    const start = text.lastIndexOf('\n', at) + 1;
    const end = text.indexOf('\n', at);
    const fields = text.slice(start, end < 0 ? undefined : end).trim().split(/\s+/);
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    if (fields[1] !== key.slice(0, key.indexOf(' '))) continue;
    const uid = Number(fields[7]);
    if (fields[9] === undefined || fields[9] === '0' || !Number.isInteger(uid)) continue;
    return uid;
  }
}

export type ProcNetReader = (file: 'tcp' | 'tcp6') => Promise<string>;
export type ProcNetSyncReader = (file: 'tcp' | 'tcp6') => string;

const readProcNet: ProcNetReader = (file) => readFile(`/proc/net/${file}`, 'utf8').catch(() => '');
const readProcNetSync: ProcNetSyncReader = (file) => {
  try {
    return readFileSync(`/proc/net/${file}`, 'utf8');
  } catch {
    return '';
  }
};

/** The uid for `keys` from the two tables (tcp first), read by `read`. */
function ownerIn(keys: { tcp?: string; tcp6?: string }, read: ProcNetSyncReader): number | undefined {
  let uid: number | undefined;
  if (keys.tcp) uid = ownerInProcNet(read('tcp'), keys.tcp);
  if (uid === undefined && keys.tcp6) uid = ownerInProcNet(read('tcp6'), keys.tcp6);
  return uid;
}

/** What is known of a connection's peer: its uid, undefined when no local socket matches. */
interface Lookup {
  done: boolean;
  uid: number | undefined;
  promise: Promise<number | undefined>;
}

/**
 * Which local user owns the other end of a TCP connection, from /proc/net/tcp and tcp6 (the
 * uid a socket row shows is its creator's). Looked up once per connection when it opens
 * (synchronously: a read of a few kilobytes on a build box, and then no call ever waits for
 * it) and forgotten when it closes, so calls on an open connection cost a map lookup; a peer
 * no row matches is another machine (or another network namespace). A connection the server
 * did not report is looked up without blocking, for each call.
 */
export class SocketOwners {
  private readonly connections = new Map<string, Lookup>();

  constructor(
    private readonly read: ProcNetReader = readProcNet,
    private readonly readSync: ProcNetSyncReader = readProcNetSync,
  ) {}

  private static key(e: TcpEnds): string {
    return `${e.remoteAddress}|${e.remotePort}|${e.localAddress}|${e.localPort}`;
  }

  private lookup(ends: TcpEnds): Lookup {
    const keys = procNetKeys(ends);
    const entry: Lookup = { done: false, uid: undefined, promise: Promise.resolve(undefined) };
    entry.promise = (async () => {
      let uid: number | undefined;
      if (keys.tcp) uid = ownerInProcNet(await this.read('tcp'), keys.tcp);
      if (uid === undefined && keys.tcp6) uid = ownerInProcNet(await this.read('tcp6'), keys.tcp6);
      entry.uid = uid;
      entry.done = true;
      return uid;
    })();
    return entry;
  }

  /**
   * A connection opened (unix sockets are ignored): look its peer up now, and forget it when
   * `onClose` calls back (a later connection may reuse the same addresses and ports).
   */
  track(socket: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }, onClose: (forget: () => void) => void): void {
    const ends = tcpEnds(socket);
    if (!ends) return;
    const key = SocketOwners.key(ends);
    const uid = ownerIn(procNetKeys(ends), this.readSync);
    this.connections.set(key, { done: true, uid, promise: Promise.resolve(uid) });
    onClose(() => this.connections.delete(key));
  }

  /**
   * The uid owning the peer's socket (a number), none (undefined: not a process of this host),
   * or a promise of either while the lookup runs. Connections not tracked are looked up now.
   */
  ownerOf(ends: TcpEnds): number | undefined | Promise<number | undefined> {
    const known = this.connections.get(SocketOwners.key(ends)) ?? this.lookup(ends);
    return known.done ? known.uid : known.promise;
  }

  /** Connections being tracked, for tests. */
  get size(): number {
    return this.connections.size;
  }
}

/** The ends of a TCP connection, or undefined for a unix socket. */
export function tcpEnds(c: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): TcpEnds | undefined {
  if (!c.remoteAddress || c.remotePort === undefined || !c.localAddress || c.localPort === undefined) return undefined;
  return { remoteAddress: c.remoteAddress, remotePort: c.remotePort, localAddress: c.localAddress, localPort: c.localPort };
}
