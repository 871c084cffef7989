import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, type Config } from '../../src/config/config.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { connect } from '../../src/client/reapi-client.js';
import { silentLogger } from '../../src/util/logger.js';
import { openForRunAs } from './daemon-process.js';

export interface TestDaemon {
  daemon: Daemon;
  address: string;
  dataDir: string;
  clients: ReturnType<typeof connect>;
  stop(): Promise<void>;
}

/** A real daemon in this process, on an ephemeral port, with a temporary data dir. */
export async function startTestDaemon(overrides: (c: Config) => void = () => undefined, dataDir?: string): Promise<TestDaemon> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'reexec-test-'));
  openForRunAs(dir);
  const config = defaultConfig();
  config.listen = ['127.0.0.1:0'];
  config.dataDir = dir;
  config.storage.fsync = false;
  // Not the fixed default port: parallel test daemons would race for it (set one to test metrics).
  config.metrics.listen = null;
  // Tests that exercise disk limits set them; the others must not depend on this machine's free space.
  config.storage.minFreeDisk = { bytes: 0 };
  overrides(config);
  const daemon = await Daemon.start(config, silentLogger);
  const address = daemon.addresses[0]!;
  const clients = connect(address);
  return {
    daemon,
    address,
    dataDir: dir,
    clients,
    stop: async () => {
      clients.close();
      await daemon.stop(2000);
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
