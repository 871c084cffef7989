import { Counter, type Registry } from 'prom-client';
import type { CompressorName } from '../digest/resource-name.js';

/** What the CAS services report about compressed transfers. */
export interface CompressionTally {
  /** One compressed transfer: a ByteStream Read or Write, or a batch entry, of `uncompressed` blob bytes as `compressed` bytes. */
  note(compressor: CompressorName, direction: 'read' | 'write', compressed: number, uncompressed: number): void;
}

/** Compressed reads and writes (ByteStream and batch entries), and their bytes in both forms. */
export class CompressionMetrics implements CompressionTally {
  private readonly transfers: Counter<'compressor' | 'direction'>;
  private readonly bytes: Counter<'compressor' | 'direction' | 'form'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.transfers = new Counter({
      name: 'reexec_cas_compressed_transfers_total',
      help: 'Blobs read or written in compressed form (ByteStream compressed-blobs, batch entries with a compressor), by compressor and direction (read: sent to clients, write: received).',
      labelNames: ['compressor', 'direction'],
      registers,
    });
    this.bytes = new Counter({
      name: 'reexec_cas_compressed_transfer_bytes_total',
      help: 'Bytes of compressed transfers, by compressor, direction and form (compressed: on the wire, uncompressed: of the blobs).',
      labelNames: ['compressor', 'direction', 'form'],
      registers,
    });
    for (const direction of ['read', 'write']) {
      this.transfers.inc({ compressor: 'zstd', direction }, 0);
      for (const form of ['compressed', 'uncompressed']) this.bytes.inc({ compressor: 'zstd', direction, form }, 0);
    }
  }

  note(compressor: CompressorName, direction: 'read' | 'write', compressed: number, uncompressed: number): void {
    this.transfers.inc({ compressor, direction });
    this.bytes.inc({ compressor, direction, form: 'compressed' }, compressed);
    this.bytes.inc({ compressor, direction, form: 'uncompressed' }, uncompressed);
  }
}
