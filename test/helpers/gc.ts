import { execa } from 'execa';
import { expect } from 'vitest';
import type { reexec } from '../../src/gen/proto.js';
import { gcUpdateFromMessage } from '../../src/services/admin-messages.js';
import type { TestDaemon } from './daemon.js';
import { REEXEC_BIN } from './daemon-process.js';

/** Admin.CollectGarbage on an in-process test daemon; resolves to the summary (as plain objects). */
export function adminCollect(d: Pick<TestDaemon, 'clients'>, req: Record<string, unknown>, progress: unknown[] = []): Promise<any> {
  return new Promise((resolve, reject) => {
    let summary: any;
    const s = d.clients.admin.CollectGarbage(req);
    s.on('data', (m: reexec.admin.v1.CollectGarbageProgress) => {
      const update = gcUpdateFromMessage(m);
      if (update && 'summary' in update) summary = update.summary;
      else if (update) progress.push(update.progress);
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
