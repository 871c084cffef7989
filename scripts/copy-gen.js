#!/usr/bin/env node
// tsc does not emit the generated JavaScript: copy it (and its types) beside the compiled code.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(join(root, 'dist', 'gen'), { recursive: true });
for (const f of ['proto.js', 'proto.d.ts']) copyFileSync(join(root, 'src', 'gen', f), join(root, 'dist', 'gen', f));
