import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, loadConfig } from '../../src/config/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'run.js');

/** The command runs from dist/: rebuild when dist/ is missing or older than the sources. */
function distIsStale(): boolean {
  const built = join(ROOT, 'dist', 'commands', 'init.js');
  if (!existsSync(built)) return true;
  const sources = ['src/commands/init.ts', 'src/config/init-config.ts', 'src/host/host-checks.ts', 'src/config/config.ts', 'src/cli/base-command.ts'];
  const builtAt = statSync(built).mtimeMs;
  return sources.some((s) => existsSync(join(ROOT, s)) && statSync(join(ROOT, s)).mtimeMs > builtAt);
}

interface Json {
  configPath: string;
  written: boolean;
  dataDir: string;
  checks: Array<{ name: string; ok: boolean; detail: string; fix?: string }>;
  clients: { buildstream2: string; buildstream1: string; bazel: string };
}

describe('reexec init', () => {
  let home: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    if (distIsStale()) {
      // tsc still emits when files other than ours have type errors: only a stale result fails.
      const build = await execa('npm', ['run', 'build'], { cwd: ROOT, reject: false, all: true });
      if (distIsStale()) throw new Error(`npm run build failed to refresh dist/:\n${build.all}`);
    }
    home = mkdtempSync(join(tmpdir(), 'reexec-init-home-'));
    // A user whose HOME and XDG_CONFIG_HOME are the temp dir; XDG_DATA_HOME unset.
    env = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.startsWith('XDG_'))) as Record<string, string>;
    Object.assign(env, { HOME: home, XDG_CONFIG_HOME: join(home, 'config') });
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  const init = (...args: string[]) => execa('node', [BIN, 'init', ...args], { env, extendEnv: false, reject: false, cwd: home });
  const defaultPath = () => join(home, 'config', 'reexec', 'config.yaml');
  // root's default is /var/lib/reexec: the user its actions run as must reach the staging area.
  const defaultData = () => (process.getuid?.() === 0 ? '/var/lib/reexec' : join(home, '.local', 'share', 'reexec'));
  /** The file as the daemon would load it, with XDG_DATA_HOME unset like the command saw it. */
  const load = (file: string) => loadConfig(file);

  it('writes the default config file, which loads as the defaults with the chosen data dir', async () => {
    const r = await init();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Wrote ${defaultPath()}`);
    const config = load(defaultPath());
    expect(config).toEqual({ ...defaultConfig(), dataDir: defaultData(), source: defaultPath() });
    expect(readFileSync(defaultPath(), 'utf8')).toContain(`data-dir: "${defaultData()}"`);
    // Human output: a line per check, with ✓/✗, and the client snippets with the real URL.
    expect(r.stdout).toMatch(/^ {2}✓ bubblewrap /m);
    expect(r.stdout).toMatch(/^ {2}[✓✗] binfmt_misc /m);
    expect(r.stdout).toContain('url: "http://127.0.0.1:50051"');
    expect(r.stdout).toContain('build --remote_executor=grpc://127.0.0.1:50051');
    expect(r.stdout).toContain('# build --remote_default_exec_properties=reexec-sandbox=host-tools');
    expect(r.stdout).toMatch(/^Start the server with: reexec start$/m);
    // Who may use it: the owner-only rule, the line that widens it, what host-tools actions miss.
    expect(r.stdout).toMatch(/^ {2}clients {5}without access tokens: only its owner/m);
    expect(r.stdout).toContain('auth: {local-users: [alice, bob]}  (or any), or run: reexec init --force --local-users alice,bob');
    expect(r.stdout).toMatch(/^ {2}host-tools {2}actions cannot see \/home, \/root, \/etc\/shadow/m);
    expect(r.stdout).toMatch(/^ {2}[✓✗] run-as /m);
  });

  it('--local-users writes auth.local-users and says who is admitted; refuses a user that does not exist', async () => {
    const file = join(home, 'users.yaml');
    const r = await init('--config', file, '--local-users', 'nobody', '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(loadConfig(file).auth.localUsers).toEqual(['nobody']);
    expect((JSON.parse(r.stdout) as { access: { widen: string; clients: string } }).access).toMatchObject({ widen: 'auth: {local-users: [nobody]} (written)', clients: expect.stringContaining('nobody (uid 65534)') });
    const any = await init('--config', join(home, 'any.yaml'), '--local-users', 'any');
    expect(loadConfig(join(home, 'any.yaml')).auth.localUsers).toBe('any');
    expect(any.stdout).toContain('every local user');
    const bad = await init('--config', join(home, 'bad.yaml'), '--local-users', 'nobody,no-such-user-rx');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('there is no user "no-such-user-rx"');
    expect(existsSync(join(home, 'bad.yaml'))).toBe(false);
  });

  it('prints the fix under each failing check', async () => {
    const r = await init('--json');
    const json = JSON.parse(r.stdout) as Json;
    const failing = json.checks.filter((c) => !c.ok && c.fix);
    const human = await init();
    for (const c of failing) {
      expect(human.stdout).toMatch(new RegExp(`^ {2}✗ ${c.name} +${c.detail.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n +fix: `, 'm'));
    }
    // The first check needing a fix shows it in full.
    if (failing[0]) expect(human.stdout).toContain(`fix: ${failing[0].fix}`);
  });

  it('is idempotent: a second run with the same settings leaves the file alone and says so', async () => {
    const before = statSync(defaultPath());
    const content = readFileSync(defaultPath(), 'utf8');
    const r = await init();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${defaultPath()} is already up to date; nothing written`);
    expect(readFileSync(defaultPath(), 'utf8')).toBe(content);
    expect(statSync(defaultPath()).mtimeMs).toBe(before.mtimeMs);
    const j = await init('--json');
    expect(j.exitCode).toBe(0);
    expect((JSON.parse(j.stdout) as Json).written).toBe(false);
  });

  it('refuses to replace a different file without --force (exit 2), replaces it with --force', async () => {
    const content = readFileSync(defaultPath(), 'utf8');
    const refused = await init('--listen', '127.0.0.1:6123');
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`${defaultPath()} already exists with different content`);
    expect(refused.stderr).toContain('--force');
    expect(refused.stdout).toBe('');
    expect(readFileSync(defaultPath(), 'utf8')).toBe(content);

    const refusedJson = await init('--listen', '127.0.0.1:6123', '--json');
    expect(refusedJson.exitCode).toBe(2);
    expect(JSON.parse(refusedJson.stdout)).toEqual({ error: { message: expect.stringContaining('--force'), suggestion: expect.any(String) } });

    const forced = await init('--listen', '127.0.0.1:6123', '--force');
    expect(forced.exitCode, forced.stderr).toBe(0);
    expect(forced.stdout).toContain(`Overwrote ${defaultPath()} (the previous file is ${defaultPath()}.bak)`);
    expect(load(defaultPath()).listen).toEqual(['127.0.0.1:6123']);
    expect(readFileSync(`${defaultPath()}.bak`, 'utf8')).toBe(content);
    expect(forced.stdout).toContain('url: "http://127.0.0.1:6123"');

    // A hand-edited file counts as different too.
    writeFileSync(defaultPath(), 'listen: "127.0.0.1:6123"\n');
    expect((await init('--listen', '127.0.0.1:6123')).exitCode).toBe(2);
  });

  it('--config FILE, --data-dir and --listen: the file (in new directories) carries them', async () => {
    const file = join(home, 'elsewhere', 'deep', 'reexec.yaml');
    const dataDir = join(home, 'store');
    const r = await init('--config', file, '--data-dir', dataDir, '--listen', '0.0.0.0:7070', '--listen', `unix:${join(home, 're.sock')}`);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(load(file)).toEqual({ ...defaultConfig(), dataDir, listen: ['0.0.0.0:7070', `unix:${join(home, 're.sock')}`], source: file });
    // Clients on this host reach a wildcard address through loopback.
    expect(r.stdout).toContain('url: "http://127.0.0.1:7070"');
    expect(r.stdout).toContain('serves every interface (0.0.0.0)');
    expect(r.stdout).toContain(`Start the server with: reexec start --config ${file}`);
  });

  it('--json returns {configPath, written, dataDir, checks, clients, access}', async () => {
    const file = join(home, 'json', 'config.yaml');
    const r = await init('--config', file, '--listen', '127.0.0.1:50777', '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as Json;
    expect(Object.keys(json).sort()).toEqual(['access', 'checks', 'clients', 'configPath', 'dataDir', 'written']);
    expect(json).toMatchObject({ configPath: file, written: true, dataDir: defaultData() });
    expect(Object.keys(json.clients).sort()).toEqual(['bazel', 'buildstream1', 'buildstream2']);
    expect(json.clients.buildstream2).toContain('url: "http://127.0.0.1:50777"');
    expect(json.clients.buildstream1).toContain('url: "http://127.0.0.1:50777"');
    expect(json.clients.bazel).toContain('build --remote_cache=grpc://127.0.0.1:50777');
    for (const c of json.checks) {
      expect(Object.keys(c).every((k) => ['name', 'ok', 'detail', 'fix'].includes(k)), JSON.stringify(c)).toBe(true);
      expect(typeof c.name).toBe('string');
      expect(typeof c.ok).toBe('boolean');
      expect(c.detail.length).toBeGreaterThan(0);
      if (c.fix !== undefined) expect(c.ok).toBe(false);
    }
    expect(json.checks.map((c) => c.name)).toEqual(expect.arrayContaining(['isa', 'kernel', 'user-namespaces', 'bubblewrap', 'binfmt_misc', 'qemu-aarch64']));
  });

  it('refuses a listen address clients cannot use (exit 2), writing nothing', async () => {
    const file = join(home, 'port0', 'config.yaml');
    const zero = await init('--config', file, '--listen', '127.0.0.1:0');
    expect(zero.exitCode).toBe(2);
    expect(zero.stderr).toContain('port 0');
    const bad = await init('--config', file, '--listen', 'nonsense');
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('is not HOST:PORT or unix:PATH');
    expect(existsSync(file)).toBe(false);
  });
});
