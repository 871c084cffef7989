import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * A gate on the loopback that actions wait at, so that tests order events by hooks and not by
 * sleeping: an action with `network=on` runs `wget -q -O- http://127.0.0.1:PORT/NAME` (see
 * `wait()`), which blocks until the test opens the gate. The test knows when an action got
 * there (`arrived`), and opens the gate for everyone, those waiting and those still to come.
 */
export class Gate {
  private readonly held: ServerResponse[] = [];
  private readonly seen: string[] = [];
  private readonly listeners: Array<() => void> = [];
  private opened = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<Gate> {
    let gate: Gate | undefined;
    const server = createServer((req: IncomingMessage, res: ServerResponse) => gate!.arrive(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    gate = new Gate(server, (server.address() as { port: number }).port);
    return gate;
  }

  /** The shell command an action runs to wait at the gate, announcing itself as `name`. */
  wait(name: string): string {
    return `wget -q -O /dev/null http://127.0.0.1:${this.port}/${name}`;
  }

  private arrive(req: IncomingMessage, res: ServerResponse): void {
    this.seen.push((req.url ?? '/').slice(1));
    for (const l of this.listeners.splice(0)) l();
    if (this.opened) res.end('open\n');
    else this.held.push(res);
  }

  /** Who arrived so far (names, in order; an action that ran twice is there twice). */
  get arrivals(): readonly string[] {
    return this.seen;
  }

  /** Resolves once `n` arrivals (of `name`, if given) have happened. */
  async arrived(n: number, name?: string): Promise<void> {
    const count = (): number => this.seen.filter((s) => name === undefined || s === name).length;
    while (count() < n) await new Promise<void>((resolve) => this.listeners.push(resolve));
  }

  /** Open the gate: everyone waiting goes on, and nobody waits from now on. */
  open(): void {
    this.opened = true;
    for (const res of this.held.splice(0)) res.end('open\n');
  }

  async close(): Promise<void> {
    this.open();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
