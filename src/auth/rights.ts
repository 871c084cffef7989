/**
 * What a client may do. Each RPC needs one right (see access-policy.ts):
 * read: fetch from the CAS, the action cache and Remote Asset;
 * write: upload blobs, action results and assets;
 * execute: run actions (Execute, WaitExecution, Operations);
 * admin: the reexec.admin.v1.Admin service (status, garbage collection);
 * worker: take work as a bot (Remote Workers API: CreateBotSession, UpdateBotSession). A bot
 * host's buildbox-casd also needs read and write.
 */
export const RIGHTS = ['read', 'write', 'execute', 'admin', 'worker'] as const;
export type Right = (typeof RIGHTS)[number];

/** Every right: what "all" stands for in a token file. */
export const ALL_RIGHTS: ReadonlySet<Right> = new Set(RIGHTS);

/**
 * "read", "read, write", "read write", ["read", "execute"], "all" → a set of rights.
 * Throws an Error naming what is wrong (the caller adds where).
 */
export function parseRights(value: unknown): Set<Right> {
  const words = Array.isArray(value)
    ? value.map((v) => (typeof v === 'string' ? v.trim() : JSON.stringify(v)))
    : typeof value === 'string'
      ? value.split(/[\s,]+/).filter(Boolean)
      : undefined;
  if (!words) throw new Error(`rights must be a list or a string such as "read, write", got ${JSON.stringify(value)}`);
  const out = new Set<Right>();
  for (const w of words) {
    const lower = w.toLowerCase();
    if (lower === 'all') RIGHTS.forEach((r) => out.add(r));
    else if ((RIGHTS as readonly string[]).includes(lower)) out.add(lower as Right);
    else if (lower !== 'none') throw new Error(`unknown right "${w}" (rights: ${RIGHTS.join(', ')}, all, none)`);
  }
  return out;
}

export const formatRights = (rights: ReadonlySet<Right>): string => (rights.size === 0 ? 'none' : RIGHTS.filter((r) => rights.has(r)).join(', '));
