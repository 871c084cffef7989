import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A local account made for one test file, with a unique name; remove() deletes it. */
export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  remove(): void;
}

/** Why this process cannot create users (undefined when it can: root with useradd). */
export function cannotCreateUsers(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (useradd)';
  if (spawnSync('useradd', ['--help']).error) return 'needs useradd (apt-get install passwd)';
  return undefined;
}

/** useradd a fresh user (and its group), without a home directory or a login shell. */
export function createTestUser(): TestUser {
  const name = `rxt${randomBytes(5).toString('hex')}`;
  const r = spawnSync('useradd', ['--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`useradd ${name} failed: ${r.stderr || r.error?.message}`);
  const id = (flag: string): number => Number(spawnSync('id', [flag, name], { encoding: 'utf8' }).stdout.trim());
  let removed = false;
  return {
    name,
    uid: id('-u'),
    gid: id('-g'),
    remove() {
      if (removed) return;
      removed = true;
      spawnSync('userdel', [name], { encoding: 'utf8' });
    },
  };
}

/**
 * A gRPC unary call made by a separate process running as `user`, with nothing but node:http2
 * (the test's own files may not be readable by that user): what status the server answered.
 */
const GRPC_CALL_SCRIPT = `
const http2 = require('node:http2');
const net = require('node:net');
const [target, path, bodyHex] = process.argv.slice(2);
const unix = target.startsWith('unix:') ? target.slice(5) : undefined;
const client = http2.connect(unix ? 'http://localhost' : 'http://' + target, unix ? { createConnection: () => net.connect(unix) } : {});
const done = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); client.close(); };
client.on('error', (e) => done({ error: e.code || e.message }));
const body = Buffer.from(bodyHex, 'hex');
const frame = Buffer.alloc(5 + body.length);
frame.writeUInt32BE(body.length, 1);
body.copy(frame, 5);
const req = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
const h = {};
req.on('response', (x) => Object.assign(h, x));
req.on('trailers', (x) => Object.assign(h, x));
req.on('data', () => undefined);
req.on('error', (e) => done({ error: e.code || e.message }));
req.on('end', () => done({ code: Number(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')) }));
req.end(frame);
`;

export interface CallOutcome {
  /** The gRPC status code, when the call got one. */
  code?: number;
  message?: string;
  /** A connection error instead (EACCES on a unix socket the user may not open). */
  error?: string;
}

export async function grpcCallAs(user: { uid: number; gid: number }, target: string, path: string, request: Uint8Array = new Uint8Array()): Promise<CallOutcome> {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-as-'));
  try {
    chmodSync(dir, 0o755);
    const script = join(dir, 'call.cjs');
    writeFileSync(script, GRPC_CALL_SCRIPT, { mode: 0o644 });
    const child = spawn(process.execPath, [script, target, path, Buffer.from(request).toString('hex')], { uid: user.uid, gid: user.gid, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    const line = out.trim().split('\n').pop() ?? '';
    if (!line.startsWith('{')) throw new Error(`the client running as uid ${user.uid} exited ${code} without an answer: ${err.trim()}`);
    return JSON.parse(line) as CallOutcome;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
