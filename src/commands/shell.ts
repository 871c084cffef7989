import { Args, Flags } from '@oclif/core';
import { AdminCommand } from '../cli/admin-command.js';
import { UserError } from '../cli/base-command.js';
import { connect } from '../client/reapi-client.js';
import { RemoteBlobStore } from '../client/remote-blob-store.js';
import { HistoryClient } from '../history/history-client.js';
import { runShell, ShellError } from '../history/shell.js';

export default class Shell extends AdminCommand {
  static override summary = "Open a shell in an action's sandbox, or run one command there, as the worker ran it.";
  static override description =
    "Stages the action's input root (from the daemon's CAS) into a private temporary directory exactly as a worker does, and runs bubblewrap with the " +
    'arguments the worker would use for its platform: the rootfs sandbox (the input root as /) or the host-tools sandbox, its uid and gid, no network unless ' +
    'network=on, a foreign ISA under QEMU user mode. Then an interactive sh in its working directory with its environment, or the command after --. ' +
    'Nothing it does reaches the store; the directory is removed when the shell exits. Needs bubblewrap (and for a foreign ISA its QEMU interpreter) on ' +
    'this machine. ACTION is an operation name, an action digest (HASH/SIZE) or the start of a recorded hash. The exit status is that of the shell or command.';
  static override examples = [
    '<%= config.bin %> shell 3fa9c1e2b4d0',
    '<%= config.bin %> shell 3fa9c1e2b4d0 -- cat src/main.c',
    "<%= config.bin %> shell 3fa9c1e2b4d0 -- sh -c 'env; ls -la'",
  ];
  static override strict = false;
  static override enableJsonFlag = false;

  static override args = {
    action: Args.string({ required: true, description: 'operation name, action digest (HASH/SIZE), or the start of a recorded hash' }),
  };

  static override flags = {
    'tmp-dir': Flags.string({ description: 'where to stage the private copy of the input root (default: $TMPDIR or /tmp)' }),
    verbose: Flags.boolean({ char: 'v', description: 'print the bubblewrap command line before running it' }),
  };

  async run(): Promise<void> {
    const dash = this.argv.indexOf('--');
    const own = dash >= 0 ? this.argv.slice(0, dash) : this.argv;
    const command = dash >= 0 ? this.argv.slice(dash + 1) : undefined;
    if (command && command.length === 0) throw new UserError('nothing after --: give a command to run in the sandbox, or leave out -- for an interactive shell');
    const { args, flags } = await this.parse({ args: Shell.args, flags: Shell.flags, baseFlags: Shell.baseFlags, strict: true }, own);
    const { endpoint, security } = this.daemonAccess(flags);
    const history = new HistoryClient(endpoint, security);
    const clients = connect(endpoint, {}, security);
    try {
      const plan = await history.prepareShell(args.action);
      const tty = !command && !!process.stdin.isTTY && !!process.stdout.isTTY;
      const code = await runShell({
        plan,
        cas: new RemoteBlobStore(clients, plan.instance ?? ''),
        command,
        tty,
        tmpRoot: flags['tmp-dir'],
        userEnv: process.env,
        progress: (m) => process.stderr.write(`reexec shell: ${m}\n`),
        onArgs: flags.verbose ? (file, a) => process.stderr.write(`reexec shell: ${[file, ...a].join(' ')}\n`) : undefined,
      });
      this.exit(code);
    } catch (err) {
      if (err instanceof ShellError) throw new UserError(err.message, err.fix);
      throw err;
    } finally {
      history.close();
      clients.close();
    }
  }
}
