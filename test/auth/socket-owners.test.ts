import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { addressBytes, ownerInProcNet, procNetEndpoint, procNetKeys, SocketOwners, tcpEnds, type ProcNetReader } from '../../src/auth/socket-owners.js';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:C350 06 00000000:00000000 03:00000DF9 00000000     0        0 0 3 0000000000000000
   2: 0100007F:D431 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1001        0 2222 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C350 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
`;

describe('socket owners from /proc/net/tcp', () => {
  it('encodes addresses and ports the way /proc/net/tcp{,6} prints them', () => {
    expect(procNetEndpoint(addressBytes('127.0.0.1')!, 50000, 'LE')).toBe('0100007F:C350');
    expect(procNetEndpoint(addressBytes('127.0.0.1')!, 50000, 'BE')).toBe('7F000001:C350');
    expect(procNetEndpoint(addressBytes('::1')!, 80, 'LE')).toBe('00000000000000000000000001000000:0050');
    expect(procNetEndpoint(addressBytes('::ffff:127.0.0.1')!, 1, 'LE')).toBe('0000000000000000FFFF00000100007F:0001');
    expect(addressBytes('[fe80::1%eth0]')).toEqual(addressBytes('fe80:0:0:0:0:0:0:1'));
    expect(addressBytes('1:2:3:4:5:6:7:8:9')).toBeUndefined();
    expect(addressBytes('not an address')).toBeUndefined();
  });

  it('looks for an IPv4 peer in tcp, and as IPv4-mapped in tcp6; an IPv6 peer in tcp6 only', () => {
    const v4 = { remoteAddress: '127.0.0.1', remotePort: 54321, localAddress: '127.0.0.1', localPort: 50000 };
    expect(procNetKeys(v4, 'LE')).toEqual({ tcp: '0100007F:D431 0100007F:C350', tcp6: '0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:C350' });
    expect(procNetKeys({ ...v4, remoteAddress: '::ffff:127.0.0.1', localAddress: '::ffff:127.0.0.1' }, 'LE')).toEqual(procNetKeys(v4, 'LE'));
    expect(procNetKeys({ ...v4, remoteAddress: '::1', localAddress: '::1' }, 'LE')).toEqual({ tcp6: '00000000000000000000000001000000:D431 00000000000000000000000001000000:C350' });
  });

  it("takes the uid of the peer's live socket, never a TIME_WAIT row (uid 0, no inode) nor our own end", () => {
    expect(ownerInProcNet(TCP, '0100007F:D431 0100007F:C350')).toBe(1001);
    expect(ownerInProcNet(TCP.replace(/^ {3}2:.*\n/m, ''), '0100007F:D431 0100007F:C350')).toBeUndefined();
    expect(ownerInProcNet(TCP, '0100007F:D432 0100007F:C350')).toBeUndefined();
  });

  it('looks a connection up once, when it opens, and forgets it when it closes; others are looked up without blocking', async () => {
    let reads = 0;
    let syncReads = 0;
    const read: ProcNetReader = async (file) => {
      reads++;
      return file === 'tcp' ? TCP : '';
    };
    const owners = new SocketOwners(read, (file) => {
      syncReads++;
      return file === 'tcp' ? TCP : '';
    });
    const ends = { remoteAddress: '127.0.0.1', remotePort: 54321, localAddress: '127.0.0.1', localPort: 50000 };
    let close: () => void = () => undefined;
    owners.track(ends, (forget) => (close = forget));
    // Known from the moment the connection opened: no call waits.
    expect(owners.ownerOf(ends)).toBe(1001);
    expect(owners.ownerOf(ends)).toBe(1001);
    expect([syncReads, reads]).toEqual([1, 0]);
    close();
    expect(owners.size).toBe(0);
    // Not tracked: a promise, read asynchronously (tcp, then tcp6 when tcp has no match).
    const other = owners.ownerOf({ ...ends, remotePort: 1 });
    expect(other).toBeInstanceOf(Promise);
    expect(await other).toBeUndefined();
    expect(reads).toBe(2);
  });

  describe('on this host', () => {
    let server: Server | undefined;
    const sockets: Socket[] = [];
    afterEach(async () => {
      for (const s of sockets.splice(0)) s.destroy();
      await new Promise((r) => (server ? server.close(r) : r(undefined)));
      server = undefined;
    });

    /** A server on `host`, a client connecting to `via`: the server side's view of the connection. */
    const accepted = async (host: string, via: string): Promise<Socket> => {
      const s = createServer();
      server = s;
      const got = new Promise<Socket>((resolve) => s.once('connection', resolve));
      await new Promise<void>((resolve) => s.listen(0, host, resolve));
      const client = connect({ host: via, port: (s.address() as { port: number }).port });
      sockets.push(client);
      await new Promise((resolve) => client.once('connect', resolve));
      const conn = await got;
      sockets.push(conn);
      return conn;
    };

    const me = process.getuid!();
    it.each([
      ['an IPv4 client of an IPv4 server', '127.0.0.1', '127.0.0.1'],
      ['an IPv4 client of a dual-stack server (::ffff:127.0.0.1)', '::', '127.0.0.1'],
      ['a dual-stack client (IPv4-mapped, in tcp6) of a dual-stack server', '::', '::ffff:127.0.0.1'],
      ['an IPv6 client', '::1', '::1'],
    ])('finds the owner of %s', async (_, host, via) => {
      const conn = await accepted(host, via);
      expect(await new SocketOwners().ownerOf(tcpEnds(conn)!)).toBe(me);
    });
  });
});
