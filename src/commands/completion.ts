import { Args } from '@oclif/core';
import { BaseCommand } from '../cli/base-command.js';
import { completionModel, completionScript, SHELLS, type Shell } from '../cli/completion.js';

export default class Completion extends BaseCommand {
  static override summary = 'Print a shell completion script for reexec\'s commands and flags (bash, zsh or fish).';
  static override description =
    'Completes command names, flags, the values of flags with a fixed set of them (--log-format), and paths for flags that take a file or a directory. ' +
    'bash: `source <(reexec completion bash)` in ~/.bashrc, or save it as ~/.local/share/bash-completion/completions/reexec. ' +
    'zsh: `eval "$(reexec completion zsh)"` after compinit in ~/.zshrc. fish: `reexec completion fish > ~/.config/fish/completions/reexec.fish`.';
  static override examples = ['source <(<%= config.bin %> completion bash)', 'eval "$(<%= config.bin %> completion zsh)"', '<%= config.bin %> completion fish > ~/.config/fish/completions/reexec.fish'];
  static override enableJsonFlag = false;

  static override args = {
    shell: Args.string({ required: true, options: [...SHELLS], description: 'the shell to complete for' }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(Completion);
    process.stdout.write(completionScript(args.shell as Shell, completionModel(this.config.bin, this.config.commands)));
  }
}
