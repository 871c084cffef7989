/**
 * The smallest program that does nothing: a static ELF executable of one LOAD segment whose
 * code calls exit_group(0). It lets the no-op action run in a sandbox whose root holds nothing
 * else, on x86-64 and aarch64 (undefined elsewhere).
 */
export function exitZeroElf(arch: string = process.arch): Buffer | undefined {
  const code =
    arch === 'x64'
      ? // xor edi, edi; mov eax, 231 (exit_group); syscall
        Buffer.from([0x31, 0xff, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05])
      : arch === 'arm64'
        ? // mov x0, #0; mov x8, #94 (exit_group); svc #0
          Buffer.from(new Uint32Array([0xd2800000, 0xd2800bc8, 0xd4000001]).buffer)
        : undefined;
  if (!code) return undefined;
  const machine = arch === 'x64' ? 0x3e : 0xb7;
  const base = 0x400000;
  const headers = 64 + 56;
  const elf = Buffer.alloc(headers + code.byteLength);
  // ELF header: 64-bit, little-endian, version 1, System V ABI.
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0);
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(machine, 18);
  elf.writeUInt32LE(1, 20);
  elf.writeBigUInt64LE(BigInt(base + headers), 24); // entry
  elf.writeBigUInt64LE(64n, 32); // program headers right after this header
  elf.writeUInt16LE(64, 52);
  elf.writeUInt16LE(56, 54);
  elf.writeUInt16LE(1, 56);
  // One PT_LOAD, read + execute, mapping the whole file at `base`.
  elf.writeUInt32LE(1, 64);
  elf.writeUInt32LE(5, 68);
  elf.writeBigUInt64LE(0n, 72);
  elf.writeBigUInt64LE(BigInt(base), 80);
  elf.writeBigUInt64LE(BigInt(base), 88);
  elf.writeBigUInt64LE(BigInt(elf.byteLength), 96);
  elf.writeBigUInt64LE(BigInt(elf.byteLength), 104);
  elf.writeBigUInt64LE(0x1000n, 112);
  code.copy(elf, headers);
  return elf;
}
