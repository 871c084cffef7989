import type { TestDaemon } from './daemon.js';

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
