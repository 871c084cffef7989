import { readFileSync } from 'node:fs';

/** reexec's own version, from package.json (which every install carries). */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
