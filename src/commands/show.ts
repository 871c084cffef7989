import { Args, Flags } from '@oclif/core';
import { AdminCommand } from '../cli/admin-command.js';
import type { reexec } from '../gen/proto.js';
import { HistoryClient } from '../history/history-client.js';
import { formatShow } from '../history/render.js';
import { entryFromWire, propsFromWire, timingsFromWire } from '../history/wire.js';

export default class Show extends AdminCommand {
  static override summary = 'Everything about one action: command, environment, platform, inputs, outputs, timings, where it ran, and its output.';
  static override description =
    'ACTION is an operation name (operations/UUID), an action digest (HASH/SIZE), or the start of the hash of a recorded action (as `reexec history` prints it). ' +
    'Shows what the history recorded and what the CAS still holds: the command line, working directory, environment and platform, a summary of the input root ' +
    '(files, bytes, the largest files), the outputs and exit code, the phase timings and the worker, and the end of stdout and stderr. ' +
    '--stdout or --stderr print the whole stream instead (raw bytes, for a pipe). When blobs were evicted it says which, and shows what was recorded; ' +
    'the blobs of the newest failed actions are kept (history.keep-failed).';
  static override examples = [
    '<%= config.bin %> show 3fa9c1e2b4d0',
    '<%= config.bin %> show operations/1b4e28ba-2fa1-11d2-883f-0016d3cca427',
    '<%= config.bin %> show 3fa9c1e2b4d0 --stderr | less',
    '<%= config.bin %> show 3fa9c1e2b4d0 --json',
  ];

  static override args = {
    action: Args.string({ required: true, description: 'operation name, action digest (HASH/SIZE), or the start of a recorded hash' }),
  };

  static override flags = {
    stdout: Flags.boolean({ description: "print the action's whole stdout (raw) and nothing else", exclusive: ['stderr'] }),
    stderr: Flags.boolean({ description: "print the action's whole stderr (raw) and nothing else", exclusive: ['stdout'] }),
    lines: Flags.integer({ min: 1, default: 40, description: 'lines of the end of stdout and stderr to show' }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(Show);
    const { endpoint, security } = this.daemonAccess(flags);
    const client = new HistoryClient(endpoint, security);
    try {
      if (flags.stdout || flags.stderr) {
        await client.readLog(args.action, flags.stdout ? 'stdout' : 'stderr', (data) => void process.stdout.write(data));
        return undefined;
      }
      const details = await client.show(args.action, Math.max(4096, flags.lines * 200));
      if (this.jsonEnabled()) return showJson(details);
      process.stdout.write(formatShow(details, { tailLines: flags.lines }));
      return undefined;
    } finally {
      client.close();
    }
  }
}

/** `show --json`: the details with the entry as `history --json` prints it and the log tails as text. */
export function showJson(d: reexec.admin.v1.IActionDetails): Record<string, unknown> {
  const log = (t: reexec.admin.v1.ILogTail | null | undefined): Record<string, unknown> | undefined =>
    t ? { digest: t.digest, size: Number(t.size ?? 0), present: !!t.present, tail: Buffer.from(t.tail ?? new Uint8Array()).toString('utf8') } : undefined;
  return {
    action: d.actionDigest,
    digestFunction: d.digestFunction,
    entry: d.entry ? entryFromWire(d.entry) : null,
    otherEntries: d.otherEntries ?? 0,
    command: d.command
      ? { arguments: d.command.arguments ?? [], environment: Object.fromEntries(propsFromWire(d.command.environment)), workingDirectory: d.command.workingDirectory ?? '', outputPaths: d.command.outputPaths ?? [], platform: propsFromWire(d.command.platform) }
      : null,
    actionFields: d.action
      ? { commandDigest: d.action.commandDigest, inputRootDigest: d.action.inputRootDigest, timeoutMs: d.action.timeoutMs ?? null, doNotCache: !!d.action.doNotCache, salt: d.action.saltHex ?? '', platform: propsFromWire(d.action.platform) }
      : null,
    inputRoot: d.inputRoot
      ? { digest: d.inputRoot.digest, files: Number(d.inputRoot.files), directories: Number(d.inputRoot.directories), symlinks: Number(d.inputRoot.symlinks), bytes: Number(d.inputRoot.bytes), largest: (d.inputRoot.largest ?? []).map((l) => ({ path: l.path, bytes: Number(l.bytes) })), complete: !!d.inputRoot.complete, problem: d.inputRoot.problem || undefined }
      : null,
    result: d.result
      ? { exitCode: d.result.exitCode ?? 0, source: d.result.source, worker: d.result.worker, timings: timingsFromWire(d.result.timings) ?? null, stdout: d.result.stdoutDigest, stderr: d.result.stderrDigest, outputs: (d.result.outputs ?? []).map((o) => ({ path: o.path, kind: o.kind, digest: o.digest || undefined, bytes: Number(o.bytes ?? 0), target: o.target || undefined, executable: o.executable || undefined })) }
      : null,
    stdout: log(d.stdout) ?? null,
    stderr: log(d.stderr) ?? null,
    missing: d.missing ?? [],
    kept: !!d.kept,
    note: d.note || undefined,
  };
}
