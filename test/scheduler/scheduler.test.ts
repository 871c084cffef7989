import { afterEach, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { InstanceName } from '../../src/digest/instance-name.js';
import type { Execution, Job } from '../../src/scheduler/operation.js';
import { parsePlatform } from '../../src/scheduler/platform.js';
import { MAX_NESTING, Scheduler, type OperationJournal } from '../../src/scheduler/scheduler.js';

/** A job for action `name` (identical names: identical actions). */
function job(name: string, opts: { socket?: boolean; doNotCache?: boolean; priority?: number; instance?: string } = {}): Job {
  const props = [{ name: 'ISA', value: 'x86-64' }, ...(opts.socket ? [{ name: 'remoteApisSocketPath', value: 'tmp/reapi.sock' }] : [])];
  return {
    instance: InstanceName.parse(opts.instance ?? ''),
    actionDigest: Digest.compute(Buffer.from(name)),
    action: {},
    command: { arguments: [name] },
    platform: parsePlatform({ properties: props }, 'x86-64'),
    priority: opts.priority ?? 0,
    doNotCache: opts.doNotCache ?? false,
    timeoutMs: 1000,
  };
}

class MemoryJournal implements OperationJournal {
  readonly saved = new Map<string, string>();
  save(op: { name: string; stage: string }): void {
    this.saved.set(op.name, op.stage);
  }
  remove(name: string): void {
    this.saved.delete(name);
  }
}

const ok = { status: { code: 0, message: '' }, result: { exitCode: 0 } };

describe('Scheduler: one operation per Execute, executions shared', () => {
  let s: Scheduler;
  let journal: MemoryJournal;
  const make = (slots = 1): Scheduler => {
    journal = new MemoryJournal();
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots }], journal);
    return s;
  };
  afterEach(() => s?.close());

  it('gives each client its own operation name on one shared execution', async () => {
    make();
    const a = s.submit(job('x'), { client: 'a' });
    const b = s.submit(job('x'), { client: 'b' });
    expect(a.name).not.toBe(b.name);
    expect(a.execution).toBe(b.execution);
    expect(s.get(a.name)).toBe(a);
    expect(s.get(b.name)).toBe(b);
    const ex = await s.next('native');
    expect(ex).toBe(a.execution);
    s.complete(ex, ok);
    expect([a.stage, b.stage]).toEqual(['COMPLETED', 'COMPLETED']);
    expect(a.response).toBe(ok);
    expect(b.response).toBe(ok);
    expect(journal.saved.get(a.name)).toBe('COMPLETED');
    expect(journal.saved.get(b.name)).toBe('COMPLETED');
  });

  it('names operations under their instance', () => {
    make();
    expect(s.submit(job('x')).name).toMatch(/^operations\/[0-9a-f-]{36}$/);
    expect(s.submit(job('x', { instance: 'team/a' })).name).toMatch(/^team\/a\/operations\/[0-9a-f-]{36}$/);
  });

  it('never shares do_not_cache actions', () => {
    make();
    expect(s.submit(job('x', { doNotCache: true })).execution).not.toBe(s.submit(job('x', { doNotCache: true })).execution);
  });

  it('cancelling one operation of a shared execution ends that operation only', async () => {
    make();
    const a = s.submit(job('x'));
    const b = s.submit(job('x'));
    const ex = await s.next('native');
    s.cancel(a.name);
    expect(a.stage).toBe('COMPLETED');
    expect(a.response?.status?.code).toBe(1);
    expect(ex.abort.signal.aborted).toBe(false);
    expect(b.stage).toBe('EXECUTING');
    s.complete(ex, ok);
    expect(b.response).toBe(ok);
    // The cancelled one keeps its own answer.
    expect(a.response?.status?.code).toBe(1);
  });

  it('cancelling the last operation stops the execution: at once when queued, by killing it when running', async () => {
    make();
    const running = s.submit(job('run'));
    const ex = await s.next('native');
    const queued = s.submit(job('queued'));
    s.cancel(queued.name);
    expect(queued.response?.status?.code).toBe(1);
    expect(s.queueDepths()).toEqual({ native: 0 });
    s.cancel(running.name);
    expect(ex.abort.signal.aborted).toBe(true);
    // A new identical submission does not join the execution being killed.
    expect(s.submit(job('run')).execution).not.toBe(ex);
  });

  it('DeleteOperation forgets the operation and never cancels the execution', async () => {
    make();
    const a = s.submit(job('x'));
    s.delete(a.name);
    expect(() => s.get(a.name)).toThrow(/does not exist/);
    expect(journal.saved.has(a.name)).toBe(false);
    // Still queued: it runs, and a later identical request joins it.
    const later = s.submit(job('x'));
    expect(later.execution).toBe(a.execution);
    const ex = await s.next('native');
    expect(ex).toBe(a.execution);
    expect(ex.abort.signal.aborted).toBe(false);
    s.complete(ex, ok);
    expect(later.response).toBe(ok);
  });

  it('reports each execution once, and each operation', async () => {
    make();
    const executions: string[] = [];
    const changes: string[] = [];
    s.on('execution', (ex: Execution) => executions.push(ex.stage));
    s.on('change', (op: { name: string; stage: string }) => changes.push(op.stage));
    s.submit(job('x'));
    s.submit(job('x'));
    s.complete(await s.next('native'), ok);
    expect(executions).toEqual(['QUEUED', 'EXECUTING', 'COMPLETED']);
    expect(changes.filter((c) => c === 'COMPLETED')).toHaveLength(2);
  });

  it('a later, more urgent identical request moves the shared execution up the queue', async () => {
    make();
    s.submit(job('blocker'));
    await s.next('native');
    s.submit(job('first'));
    const slow = s.submit(job('x', { priority: 5 }));
    s.submit(job('x', { priority: -5 }));
    expect((await s.next('native')).job).toBe(slow.job);
  });
});

describe('Scheduler: nested work of actions with a REAPI socket', () => {
  let s: Scheduler;
  afterEach(() => s?.close());

  it('hands the slot an action lends to the work it waits on, even when every slot is busy', async () => {
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    const outer = s.submit(job('outer', { socket: true }), { rights: ['read'] });
    const lender = await s.next('native');
    expect(lender).toBe(outer.execution);
    // Someone else's work waits for the one slot; the lender's own nested work goes first on its loan.
    s.submit(job('other'));
    const loan = new AbortController();
    const taken = s.nextNested(lender.id, loan.signal);
    const nested = s.submit(job('nested'), { parent: lender.id });
    expect(await taken).toBe(nested.execution);
    expect(nested.stage).toBe('EXECUTING');
    expect(s.queueDepths()).toEqual({ native: 1 });
    loan.abort();
  });

  it('lends to nested work that joined an execution another client queued', async () => {
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    s.submit(job('outer', { socket: true }));
    const lender = await s.next('native');
    const theirs = s.submit(job('shared'));
    s.submit(job('shared'), { parent: lender.id });
    const loan = new AbortController();
    expect(await s.nextNested(lender.id, loan.signal)).toBe(theirs.execution);
    loan.abort();
  });

  it('cancels the nested work of an action that ended, unless other clients wait on it too', async () => {
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    s.submit(job('outer', { socket: true }));
    const lender = await s.next('native');
    const loan = new AbortController();
    const running = s.nextNested(lender.id, loan.signal);
    const nestedRunning = s.submit(job('nested-a'), { parent: lender.id });
    expect(await running).toBe(nestedRunning.execution);
    const nestedQueued = s.submit(job('nested-b'), { parent: lender.id });
    const sharedNested = s.submit(job('shared'), { parent: lender.id });
    const someoneElse = s.submit(job('shared'));
    s.cancelNested(lender.id);
    expect(nestedRunning.execution.abort.signal.aborted).toBe(true);
    expect(nestedQueued.response?.status?.code).toBe(1);
    expect(sharedNested.response?.status?.code).toBe(1);
    expect(someoneElse.stage).toBe('QUEUED');
    loan.abort();
  });

  it('shares an action with a REAPI socket only between submitters with the same rights', () => {
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    const a = s.submit(job('sock', { socket: true }), { rights: ['read', 'execute'] });
    const b = s.submit(job('sock', { socket: true }), { rights: ['execute', 'read'] });
    const c = s.submit(job('sock', { socket: true }), { rights: ['read', 'write', 'execute'] });
    expect(b.execution).toBe(a.execution);
    expect(c.execution).not.toBe(a.execution);
    expect(a.execution.rights).toEqual(['read', 'execute']);
  });

  it('never lets an action wait on itself, and stops nesting at MAX_NESTING', async () => {
    s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    s.submit(job('self', { socket: true }));
    let parent = await s.next('native');
    // The same action Executed through its own socket: a new execution, not the one waiting.
    const again = s.submit(job('self', { socket: true }), { parent: parent.id });
    expect(again.execution).not.toBe(parent);
    for (let depth = 1; depth < MAX_NESTING; depth++) {
      const loan = new AbortController();
      const child = s.nextNested(parent.id, loan.signal);
      if (depth > 1) s.submit(job(`level-${depth}`, { socket: true }), { parent: parent.id });
      parent = await child;
    }
    expect(() => s.submit(job('too-deep'), { parent: parent.id })).toThrow(/nested 16 deep/);
  });
});
