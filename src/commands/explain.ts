import { Args, Flags } from '@oclif/core';
import { AdminCommand } from '../cli/admin-command.js';
import type { reexec } from '../gen/proto.js';
import { HistoryClient } from '../history/history-client.js';
import { formatExplain } from '../history/render.js';
import { entryFromWire } from '../history/wire.js';

export default class Explain extends AdminCommand {
  static override summary = 'Why an action missed the cache: how it differs from the closest earlier action.';
  static override description =
    'Finds the closest earlier action in the history: the same target and mnemonic (as the client\'s RequestMetadata names them, Bazel does), ' +
    'else the same program (argv[0]) and output paths; among several, the one whose command differs least. Then prints what differs: arguments, ' +
    'environment, platform, the Action\'s and Command\'s other fields, and the input files by path (added, removed, changed, with both digests). ' +
    '--against compares with a given action instead. ACTION and OTHER are operation names, action digests (HASH/SIZE) or the start of a recorded hash.';
  static override examples = ['<%= config.bin %> explain 3fa9c1e2b4d0', '<%= config.bin %> explain 3fa9c1e2b4d0 --against 77d01c9a2e31', '<%= config.bin %> explain 3fa9c1e2b4d0 --json'];

  static override args = {
    action: Args.string({ required: true, description: 'the action that missed: operation name, action digest, or the start of a recorded hash' }),
  };

  static override flags = {
    against: Flags.string({ description: 'compare with this action (the earlier one) instead of looking for the closest' }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(Explain);
    const { endpoint, security } = this.daemonAccess(flags);
    const client = new HistoryClient(endpoint, security);
    try {
      const x = await client.explain(args.action, flags.against);
      if (this.jsonEnabled()) return explainJson(x);
      process.stdout.write(formatExplain(x));
      return undefined;
    } finally {
      client.close();
    }
  }
}

/** `explain --json`: the explanation, entries as `history --json` prints them. */
export function explainJson(x: reexec.admin.v1.IExplanation): Record<string, unknown> {
  const opt = (v: string | null | undefined): string | undefined => (v === null || v === undefined ? undefined : v);
  return {
    action: x.actionDigest,
    entry: x.entry ? entryFromWire(x.entry) : null,
    against: x.otherActionDigest || null,
    againstEntry: x.otherEntry ? entryFromWire(x.otherEntry) : null,
    chosenBy: x.chosenBy || null,
    reason: x.reason,
    identical: !!x.identical,
    arguments: (x.arguments ?? []).map((c) => ({ op: c.op, index: c.index ?? 0, value: c.value })),
    environment: (x.environment ?? []).map((c) => ({ name: c.name, before: opt(c.before), after: opt(c.after) })),
    platform: (x.platform ?? []).map((c) => ({ name: c.name, before: opt(c.before), after: opt(c.after) })),
    fields: (x.fields ?? []).map((c) => ({ name: c.name, before: opt(c.before), after: opt(c.after) })),
    inputs: (x.inputs ?? []).map((p) => ({ path: p.path, change: p.change, kind: p.kind, before: p.before || undefined, after: p.after || undefined, what: p.what || undefined })),
    inputsNotListed: Number(x.inputsNotListed ?? 0),
    unavailable: x.unavailable ?? [],
  };
}
