import { execa } from 'execa';
import { expect } from 'vitest';
import type { TestDaemon } from './daemon.js';
import { REEXEC_BIN } from './daemon-process.js';

/** Admin.CollectGarbage on an in-process test daemon; resolves to the summary (JSON). */
export function adminCollect(d: Pick<TestDaemon, 'clients'>, req: Record<string, unknown>, progress: unknown[] = []): Promise<any> {
  return new Promise((resolve, reject) => {
    let summary: any;
    const s = (d.clients.admin as any).CollectGarbage(req);
    s.on('data', (m: { json: string; done: boolean }) => {
      if (m.done) summary = JSON.parse(m.json);
      else progress.push(JSON.parse(m.json));
    });
    s.on('error', reject);
    s.on('end', () => resolve(summary));
  });
}

/**
 * `reexec gc --endpoint grpc://127.0.0.1:PORT ARGS --json` as users run it (bin/run.js, from
 * dist/) against a daemon process: expects it to succeed, resolves to its summary (JSON).
 */
export async function gcSummary(port: number, ...args: string[]): Promise<any> {
  const r = await execa(process.execPath, [REEXEC_BIN, 'gc', '--endpoint', `grpc://127.0.0.1:${port}`, ...args, '--json'], { reject: false });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}
