import { treeFromDirectory, type LocalTree } from '../../src/client/merkle.js';
import type { connect } from '../../src/client/reapi-client.js';
import type { Digest } from '../../src/digest/digest.js';
import { makeBusyboxRoot } from './busybox-root.js';
import { execute, uploadAction, uploadTree } from './exec-client.js';

type Clients = ReturnType<typeof connect>;

/** A busybox input root uploaded to a daemon: actions run `sh -c SCRIPT` in it. */
export async function uploadBusyboxRoot(clients: Clients): Promise<{ tree: LocalTree; hostRoot: string }> {
  const hostRoot = makeBusyboxRoot();
  const tree = await treeFromDirectory(hostRoot);
  await uploadTree(clients, tree);
  return { tree, hostRoot };
}

/** Upload `sh -c script` as an action. */
export function shAction(clients: Clients, root: Digest, script: string, opts: { doNotCache?: boolean } = {}): Promise<Digest> {
  return uploadAction(clients, root, { args: ['sh', '-c', script], doNotCache: opts.doNotCache });
}

/** Execute every action at once; resolves when all are done. */
export function executeAll(clients: Clients, actions: Digest[]): Promise<Awaited<ReturnType<typeof execute>>[]> {
  return Promise.all(actions.map((a) => execute(clients, a)));
}
