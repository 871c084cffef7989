import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Config } from '@oclif/core';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completionModel, valueKind, type CompletionModel } from '../../src/cli/completion.js';
import { REEXEC_BIN, REPO_ROOT } from '../helpers/daemon-process.js';

describe('reexec completion', () => {
  let bash: string;
  let model: CompletionModel;
  let dir: string;

  beforeAll(async () => {
    const r = await execa(process.execPath, [REEXEC_BIN, 'completion', 'bash']);
    bash = r.stdout;
    const config = await Config.load(REPO_ROOT);
    model = completionModel(config.bin, config.commands);
    dir = mkdtempSync(join(tmpdir(), 'reexec-completion-'));
    writeFileSync(join(dir, 'config.yaml'), '');
    writeFileSync(join(dir, 'cold.txt'), '');
    mkdirSync(join(dir, 'data'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** What bash offers for a command line whose last word is being completed (as the words were split). */
  function complete(...words: string[]): string[] {
    const script = `${bash}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _reexec; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    return r.stdout.split('\n').filter(Boolean).sort();
  }

  it('bash: completes commands, flags, fixed values, paths and arguments', () => {
    expect(complete('reexec', 'st')).toEqual(['start', 'status', 'stop']);
    expect(complete('reexec', '')).toEqual(['--help', '--version', 'bench', 'completion', 'explain', 'gc', 'history', 'init', 'shell', 'show', 'start', 'status', 'stop']);
    expect(complete('reexec', 'history', '--kind', '')).toEqual(['execute', 'lookup']);
    expect(complete('reexec', 'shell', '--tmp-dir', `${dir}/`)).toEqual([`${dir}/data`]);
    expect(complete('reexec', 'stop', '--ti')).toEqual(['--timeout']);
    expect(complete('reexec', 'stop', '--')).toEqual(['--config', '--data-dir', '--help', '--json', '--no-kill', '--pid-file', '--timeout']);
    expect(complete('reexec', 'init', '--sys')).toEqual(['--system', '--systemd']);
    expect(complete('reexec', 'start', '--log-format', 'j')).toEqual(['journal', 'json']);
    // --flag=value: bash splits the word at "=".
    expect(complete('reexec', 'start', '--log-format', '=', 'j')).toEqual(['journal', 'json']);
    expect(complete('reexec', 'start', '--log-format', '=')).toEqual(['human', 'journal', 'json']);
    expect(complete('reexec', 'start', '-c', `${dir}/c`)).toEqual([`${dir}/cold.txt`, `${dir}/config.yaml`]);
    expect(complete('reexec', 'stop', '--data-dir', `${dir}/`)).toEqual([`${dir}/data`]);
    // A value that is an address: nothing to offer (not the flags, not files).
    expect(complete('reexec', 'start', '--listen', '')).toEqual([]);
    expect(complete('reexec', 'completion', '')).toEqual(['bash', 'fish', 'zsh']);
  });

  it('bash: every flag of every command, from the commands themselves', () => {
    expect(model.commands.map((c) => c.id)).toEqual(['bench', 'completion', 'explain', 'gc', 'history', 'init', 'shell', 'show', 'start', 'status', 'stop']);
    for (const c of model.commands) {
      const offered = complete('reexec', c.id, '--');
      expect(offered, c.id).toEqual(c.flags.map((f) => `--${f.name}`).sort());
    }
  });

  it('knows which flags take paths', () => {
    expect(valueKind('config', { type: 'option' })).toBe('file');
    expect(valueKind('pid-file', { type: 'option' })).toBe('file');
    expect(valueKind('client-key', { type: 'option' })).toBe('file');
    expect(valueKind('data-dir', { type: 'option' })).toBe('dir');
    expect(valueKind('listen', { type: 'option' })).toBe('value');
    expect(valueKind('log-format', { type: 'option', options: ['human'] })).toBe('choice');
    expect(valueKind('detach', { type: 'boolean' })).toBe('none');
  });

  it('zsh and fish: every command and flag, with values and paths', async () => {
    const zsh = (await execa(process.execPath, [REEXEC_BIN, 'completion', 'zsh'])).stdout;
    const fish = (await execa(process.execPath, [REEXEC_BIN, 'completion', 'fish'])).stdout;
    expect(zsh.split('\n')[0]).toBe('#compdef reexec');
    expect(zsh).toContain(`'--log-format[log lines on stderr for people, for machines (json), or for the systemd journal (no timestamps, syslog priorities)]:log-format:(human json journal)'`);
    expect(zsh).toContain(`'(-d --data-dir)'{-d,--data-dir}'[the data dir of the daemon to stop (default: the config'\\''s)]:data-dir:_files -/'`);
    expect(zsh).toContain(`'*'{-l,--listen}'[`);
    expect(fish).toContain(`complete -c reexec -n '__fish_seen_subcommand_from start' -l log-format -x -a 'human json journal' -d`);
    expect(fish).toContain(`complete -c reexec -n '__fish_seen_subcommand_from stop' -l pid-file -r -F -d`);
    expect(fish).toContain(`complete -c reexec -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'`);
    for (const c of model.commands) {
      expect(zsh).toMatch(new RegExp(`^ {4}'${c.id}:`, 'm'));
      expect(zsh).toMatch(new RegExp(`^ {4}${c.id}\\)$`, 'm'));
      expect(fish).toContain(`complete -c reexec -n __fish_use_subcommand -a ${c.id} -d`);
      for (const f of c.flags) {
        expect(fish).toContain(`complete -c reexec -n '__fish_seen_subcommand_from ${c.id}' -l ${f.name}`);
        expect(zsh).toContain(`--${f.name}`);
      }
    }
    // The shells' own parsers accept the scripts (under CI a missing shell is a failure).
    for (const [shell, text] of [['zsh', zsh], ['fish', fish]] as const) {
      if (spawnSync('sh', ['-c', `command -v ${shell}`]).status !== 0) {
        if (process.env.CI) expect.fail(`${shell} is not installed: install the Debian package ${shell} (.ci/run does)`);
        console.warn(`completion test: ${shell} not installed, its script is checked by content only (apt-get install ${shell})`);
        continue;
      }
      const file = join(dir, `reexec.${shell}`);
      writeFileSync(file, text);
      const r = spawnSync(shell, ['-n', file], { encoding: 'utf8' });
      expect({ status: r.status, stderr: r.stderr }, shell).toEqual({ status: 0, stderr: '' });
      if (shell !== 'fish') continue;
      // fish completes a command line on request: the script at work.
      const asked = (line: string): string[] =>
        spawnSync('fish', ['--no-config', '-c', `source ${file}; complete -C '${line}'`], { encoding: 'utf8' })
          .stdout.split('\n')
          .filter(Boolean)
          .map((l) => l.split('\t')[0]!)
          .sort();
      expect(asked('reexec st')).toEqual(['start', 'status', 'stop']);
      expect(asked('reexec stop --ti')).toEqual(['--timeout']);
      expect(asked('reexec start --log-format j')).toEqual(['journal', 'json']);
    }
  });

  it('refuses a shell it does not know', async () => {
    const r = await execa(process.execPath, [REEXEC_BIN, 'completion', 'tcsh'], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/Expected tcsh to be one of: bash, zsh, fish/);
  });
});
