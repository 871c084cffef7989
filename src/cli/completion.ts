import type { Command } from '@oclif/core';

/**
 * Shell completion for reexec's commands and flags, generated from the commands themselves
 * (oclif's loaded command list), so it never falls behind them. bash, zsh and fish scripts
 * complete command names, each command's flags, flag values that are a fixed set (--log-format
 * json), paths for flags that take a file or a directory, and fixed positional arguments.
 */

export type ValueKind = 'none' | 'value' | 'choice' | 'file' | 'dir';

export interface FlagModel {
  name: string;
  char?: string;
  summary: string;
  kind: ValueKind;
  choices?: string[];
  /** Can be given more than once (--listen). */
  multiple: boolean;
}

export interface CommandModel {
  id: string;
  summary: string;
  flags: FlagModel[];
  /** Values of the first positional argument, when it is a fixed set. */
  argChoices?: string[];
}

export interface CompletionModel {
  bin: string;
  commands: CommandModel[];
}

/** What a flag's value is, from its name: paths get path completion. */
export function valueKind(name: string, flag: { type: string; options?: readonly string[] | undefined }): ValueKind {
  if (flag.type === 'boolean') return 'none';
  if (flag.options && flag.options.length > 0) return 'choice';
  if (/-dir$/.test(name)) return 'dir';
  if (/^config$|-file$|-cert$|-key$|^compare$/.test(name)) return 'file';
  return 'value';
}

const oneLine = (s: string | undefined): string => (s ?? '').split('\n')[0]!.trim();

export function completionModel(bin: string, commands: readonly Command.Loadable[]): CompletionModel {
  const visible = commands.filter((c) => !c.hidden && !c.id.includes(':')).sort((a, b) => (a.id < b.id ? -1 : 1));
  return {
    bin,
    commands: visible.map((c) => {
      const flags: FlagModel[] = Object.entries(c.flags)
        .filter(([, f]) => !f.hidden)
        .map(([name, f]) => {
          const options = f.type === 'option' ? f.options : undefined;
          const kind = valueKind(name, { type: f.type, options });
          return {
            name,
            ...(f.char ? { char: f.char } : {}),
            summary: oneLine(f.summary ?? f.description),
            kind,
            ...(kind === 'choice' ? { choices: [...options!] } : {}),
            multiple: f.type === 'option' && Boolean(f.multiple),
          };
        });
      flags.push({ name: 'help', summary: 'show help for this command', kind: 'none', multiple: false });
      const firstArg = Object.values(c.args ?? {})[0];
      return {
        id: c.id,
        summary: oneLine(c.summary ?? c.description),
        flags,
        ...(firstArg?.options?.length ? { argChoices: [...firstArg.options] } : {}),
      };
    }),
  };
}

const fnName = (bin: string): string => `_${bin.replace(/[^A-Za-z0-9_]/g, '_')}`;

/** bash: `source <(reexec completion bash)`; the function completes from COMP_WORDS/COMP_CWORD. */
export function bashCompletion(m: CompletionModel): string {
  const fn = fnName(m.bin);
  const words = (xs: readonly string[]): string => xs.join(' ');
  const cases = m.commands.map((c) => {
    const names = (kind: ValueKind): string => c.flags.filter((f) => f.kind === kind).flatMap((f) => [`--${f.name}`, ...(f.char ? [`-${f.char}`] : [])]).join('|');
    const valueCases: string[] = c.flags
      .filter((f) => f.kind === 'choice')
      .map((f) => `        ${[`--${f.name}`, ...(f.char ? [`-${f.char}`] : [])].join('|')}) COMPREPLY=($(compgen -W "${words(f.choices!)}" -- "$cur")); return ;;`);
    if (names('file')) valueCases.push(`        ${names('file')}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return ;;`);
    if (names('dir')) valueCases.push(`        ${names('dir')}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")); return ;;`);
    // A value of its own (an address, a number): nothing to offer.
    if (names('value')) valueCases.push(`        ${names('value')}) return ;;`);
    const flagWords = c.flags.map((f) => `--${f.name}`);
    const positional = c.argChoices ? `\n      if [[ "$cur" != -* ]]; then COMPREPLY=($(compgen -W "${words(c.argChoices)}" -- "$cur")); return; fi` : '';
    return [
      `    ${c.id})`,
      ...(valueCases.length ? ['      case "$prev" in', ...valueCases, '      esac'] : []),
      `${positional ? positional.slice(1) : ''}`,
      `      COMPREPLY=($(compgen -W "${words(flagWords)}" -- "$cur"))`,
      '      ;;',
    ]
      .filter((l) => l !== '')
      .join('\n');
  });
  return `# ${m.bin} completion for bash. Load it now:   source <(${m.bin} completion bash)
# or for every shell: ${m.bin} completion bash > ~/.local/share/bash-completion/completions/${m.bin}
${fn}() {
  local cur prev cmd
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # --flag=value: bash splits at "=", so the flag is one word further back.
  if [[ "$cur" == "=" ]]; then cur=""; fi
  if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then prev="\${COMP_WORDS[COMP_CWORD-2]}"; fi
  COMPREPLY=()
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${words([...m.commands.map((c) => c.id), '--help', '--version'])}" -- "$cur"))
    return
  fi
  cmd="\${COMP_WORDS[1]}"
  case "$cmd" in
${cases.join('\n')}
  esac
}
complete -F ${fn} ${m.bin}
`;
}

/** Text inside a single-quoted zsh word. */
const zshQuoted = (s: string): string => s.replace(/'/g, `'\\''`);
/** An _arguments description: inside [...], so brackets escaped. */
const zshText = (s: string): string => s.replace(/\\/g, '\\\\').replace(/([[\]])/g, '\\$1');

/** zsh: `eval "$(reexec completion zsh)"` after compinit, or the output saved as _reexec in $fpath. */
export function zshCompletion(m: CompletionModel): string {
  const fn = fnName(m.bin);
  const specs = (c: CommandModel): string[] =>
    c.flags.map((f) => {
      const action = f.kind === 'choice' ? `:${f.name}:(${f.choices!.join(' ')})` : f.kind === 'file' ? `:${f.name}:_files` : f.kind === 'dir' ? `:${f.name}:_files -/` : f.kind === 'value' ? `:${f.name}: ` : '';
      const tail = zshQuoted(`[${zshText(f.summary)}]${action}`);
      if (f.char) return `${f.multiple ? `'*'` : `'(-${f.char} --${f.name})'`}{-${f.char},--${f.name}}'${tail}'`;
      return `'${f.multiple ? '*' : ''}--${f.name}${tail}'`;
    });
  const cases = m.commands.map((c) => {
    const args = [...specs(c), ...(c.argChoices ? [`'1:${c.id === 'completion' ? 'shell' : 'argument'}:(${c.argChoices.join(' ')})'`] : [])];
    return `    ${c.id})\n      _arguments -s \\\n        ${args.join(' \\\n        ')}\n      ;;`;
  });
  return `#compdef ${m.bin}
# ${m.bin} completion for zsh. Load it now:   eval "$(${m.bin} completion zsh)"   (after compinit)
# or for every shell: ${m.bin} completion zsh > "\${fpath[1]}/_${m.bin}"
${fn}() {
  local -a commands
  commands=(
${m.commands.map((c) => `    '${c.id}:${zshQuoted(c.summary)}'`).join('\n')}
  )
  if (( CURRENT == 2 )); then
    _describe -t commands '${m.bin} command' commands
    return
  fi
  local cmd=$words[2]
  shift words
  (( CURRENT-- ))
  case $cmd in
${cases.join('\n')}
  esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${m.bin}
fi
`;
}

const fishText = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** fish: `reexec completion fish | source`, or saved in ~/.config/fish/completions/reexec.fish. */
export function fishCompletion(m: CompletionModel): string {
  const lines = [
    `# ${m.bin} completion for fish. Load it now:   ${m.bin} completion fish | source`,
    `# or for every shell: ${m.bin} completion fish > ~/.config/fish/completions/${m.bin}.fish`,
    `complete -c ${m.bin} -f`,
  ];
  for (const c of m.commands) lines.push(`complete -c ${m.bin} -n __fish_use_subcommand -a ${c.id} -d ${fishText(c.summary)}`);
  for (const c of m.commands) {
    const when = `-n '__fish_seen_subcommand_from ${c.id}'`;
    for (const f of c.flags) {
      const value = f.kind === 'choice' ? ` -x -a ${fishText(f.choices!.join(' '))}` : f.kind === 'file' ? ' -r -F' : f.kind === 'dir' ? ` -x -a '(__fish_complete_directories)'` : f.kind === 'value' ? ' -x' : '';
      lines.push(`complete -c ${m.bin} ${when} -l ${f.name}${f.char ? ` -s ${f.char}` : ''}${value} -d ${fishText(f.summary)}`);
    }
    if (c.argChoices) lines.push(`complete -c ${m.bin} ${when} -a ${fishText(c.argChoices.join(' '))}`);
  }
  return lines.join('\n') + '\n';
}

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

export function completionScript(shell: Shell, m: CompletionModel): string {
  return shell === 'bash' ? bashCompletion(m) : shell === 'zsh' ? zshCompletion(m) : fishCompletion(m);
}
