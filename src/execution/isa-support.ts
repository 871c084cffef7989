import { availableParallelism } from 'node:os';
import type { PoolConfig } from '../config/config.js';
import { foreignQemuTargets, runHostChecks, systemProbe, type HostCheck, type HostProbe } from '../host/host-checks.js';
import { hostIsa } from '../scheduler/platform.js';
import type { PoolSpec } from '../scheduler/scheduler.js';

/** Whether the host can run actions of one ISA, and if not, why and how to fix it. */
export interface IsaSupport {
  isa: string;
  how: 'native' | 'personality' | 'qemu';
  ok: boolean;
  detail: string;
  fix?: string;
}

/**
 * What this host can run: its own ISA natively, x86-32 on x86-64 under the linux32
 * personality, and each foreign ISA whose QEMU user-mode interpreter is registered with
 * binfmt_misc with the F flag (so that every child process inside the sandbox's new root is
 * emulated too). Without F only the first process would run, so such an ISA is not offered.
 */
export async function detectIsaSupport(opts: { bubblewrapOk: boolean; probe?: HostProbe; checks?: HostCheck[] }): Promise<IsaSupport[]> {
  const probe = opts.probe ?? systemProbe();
  const native = hostIsa(probe.arch);
  const out: IsaSupport[] = [];
  const base = opts.bubblewrapOk ? undefined : 'bubblewrap cannot create sandboxes on this host';
  out.push({ isa: native, how: 'native', ok: !base, detail: base ?? 'runs natively' });
  if (native === 'x86-64') out.push({ isa: 'x86-32', how: 'personality', ok: !base, detail: base ?? 'runs natively under the linux32 personality (uname -m says i686)' });
  const checks = opts.checks ?? (await runHostChecks(probe));
  for (const target of foreignQemuTargets(probe.arch)) {
    const c = checks.find((x) => x.name === `qemu-${target.qemu}`);
    out.push({
      isa: target.isa,
      how: 'qemu',
      ok: !base && Boolean(c?.ok),
      detail: base ?? (c ? `QEMU user mode: ${c.detail}` : 'not checked'),
      fix: c?.fix,
    });
  }
  return out;
}

/**
 * The worker pools to run: the configured ones, each marked unavailable (with the reason and
 * the fix) when the host cannot run one of its ISAs; or, for "auto", the host's ISA with a
 * slot per core plus every ISA it can emulate with half as many (emulation is slow).
 */
export function resolvePools(configured: PoolConfig[] | 'auto', support: IsaSupport[], cores = availableParallelism()): PoolSpec[] {
  const byIsa = new Map(support.map((s) => [s.isa, s]));
  if (configured === 'auto') {
    const native = support.filter((s) => s.how !== 'qemu');
    const pools: PoolSpec[] = [{ name: 'native', isas: native.map((s) => s.isa), slots: Math.max(1, cores), unavailable: native[0]?.ok ? undefined : native[0]?.detail }];
    for (const s of support.filter((x) => x.how === 'qemu' && x.ok)) pools.push({ name: s.isa, isas: [s.isa], slots: Math.max(1, Math.floor(cores / 2)) });
    return pools;
  }
  return configured.map((p) => {
    const missing = p.isa.map((i) => byIsa.get(i) ?? { isa: i, ok: false, detail: 'this host cannot run it (no native support and no QEMU user-mode target)', how: 'qemu' as const }).filter((s) => !s.ok);
    const unavailable = missing.length
      ? missing.map((s) => `${s.isa}: ${s.detail}${'fix' in s && s.fix ? ` (fix: ${s.fix}, or run \`reexec init --setup-binfmt\` as root)` : ''}`).join('; ')
      : undefined;
    return { name: p.name, isas: p.isa, slots: p.slots, unavailable };
  });
}

/** ISAs the host cannot run, with why: for errors that name an ISA no pool provides. */
export function whyUnavailable(support: IsaSupport[], isa: string): string | undefined {
  const s = support.find((x) => x.isa === isa);
  if (!s) return undefined;
  if (s.ok) return undefined;
  return `${s.detail}${s.fix ? `; fix: ${s.fix} (or \`reexec init --setup-binfmt\` as root)` : ''}`;
}
