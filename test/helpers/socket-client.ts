import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './daemon-process.js';

/** The dependency-free gRPC client an action runs to talk to its REAPI socket. */
export const SOCKET_CLIENT = join(REPO_ROOT, 'test', 'helpers', 'reapi-socket-client.mjs');

export const RE = 'build.bazel.remote.execution.v2';

/** One step of a plan: a gRPC call (method path and encoded request), or an HTTP GET (a Gate). */
export type PlanStep = { label: string; path: string; request: Uint8Array } | { label: string; get: string };

export interface CallResult {
  /** The gRPC status code (-1: no status came back). */
  status: number;
  message: string;
  /** Every response message, encoded. */
  responses: Buffer[];
}

/**
 * A directory to upload as an action's input root: the client (client.mjs) and its plan
 * (plan.json), to run as `node client.mjs plan.json` with the socket at `socket` as the
 * action sees it.
 */
export function socketClientRoot(socket: string, steps: PlanStep[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-sockclient-'));
  mkdirSync(join(dir, 'out'));
  copyFileSync(SOCKET_CLIENT, join(dir, 'client.mjs'));
  const plan = {
    socket,
    steps: steps.map((s) => ('get' in s ? s : { label: s.label, path: s.path, request: Buffer.from(s.request).toString('base64') })),
  };
  writeFileSync(join(dir, 'plan.json'), JSON.stringify(plan));
  return dir;
}

/** What the client printed, decoded. */
export function parseSocketResults(stdout: string): Record<string, CallResult> {
  const raw = JSON.parse(stdout) as Record<string, { status: number; message: string; responses: string[] }>;
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, { status: v.status, message: v.message, responses: v.responses.map((r) => Buffer.from(r, 'base64')) }]));
}
