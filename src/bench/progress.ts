import type { SuiteProgress } from './support.js';

export interface ProgressOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/**
 * Progress of a bench run on stderr. On a terminal: one bar, redrawn in place, with the suite,
 * its steps done and the last step's figures. Elsewhere (logs, CI, tests): one line per step.
 */
export class BenchProgress {
  private readonly tty: boolean;
  private bar = '';
  private readonly started = Date.now();

  constructor(
    private readonly out: ProgressOutput | undefined,
    opts: { tty?: boolean; suites?: number } = {},
  ) {
    this.tty = opts.tty ?? !!out?.isTTY;
    this.suites = opts.suites ?? 1;
  }

  private readonly suites: number;
  private suiteIndex = 0;

  /** A line for people (what the bench is doing), above the bar. */
  info(line: string): void {
    if (!this.out) return;
    if (this.tty) {
      this.clear();
      this.out.write(`${line}\n`);
      this.redraw();
    } else this.out.write(`${line}\n`);
  }

  /** The progress of one suite of `total` steps. */
  suite(name: string, total: number): SuiteProgress {
    this.suiteIndex++;
    let done = 0;
    const index = this.suiteIndex;
    const draw = (detail: string): void => {
      const width = Math.max(40, (this.out?.columns || 100) - 1);
      const cells = 20;
      const fill = Math.round((Math.min(done, total) / Math.max(1, total)) * cells);
      const elapsed = Math.round((Date.now() - this.started) / 1000);
      const head = `${name} (${index}/${this.suites}) [${'#'.repeat(fill)}${'.'.repeat(cells - fill)}] ${Math.min(done, total)}/${total} ${elapsed}s`;
      const line = detail ? `${head}  ${detail}` : head;
      this.bar = line.length > width ? `${line.slice(0, width - 1)}…` : line;
      this.redraw();
    };
    if (this.tty) draw('');
    return {
      step: (detail: string) => {
        done++;
        if (!this.out) return;
        if (this.tty) draw(detail);
        else this.out.write(`${name} ${Math.min(done, total)}/${total}: ${detail}\n`);
      },
    };
  }

  /** Remove the bar (before the report is printed). */
  done(): void {
    this.clear();
    this.bar = '';
  }

  private clear(): void {
    if (this.tty && this.bar && this.out) this.out.write('\r\x1b[2K');
  }

  private redraw(): void {
    if (this.tty && this.bar && this.out) this.out.write(`\r\x1b[2K${this.bar}`);
  }
}
