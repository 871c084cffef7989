import { createHash, randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { call, type ReapiClients } from '../client/reapi-client.js';
import { re } from '../proto.js';
import { makeMetric } from './metric.js';
import { RawGrpcBaseline } from './raw-grpc.js';
import { formatNumber, median, runConcurrent } from './stats.js';
import { asUnsupported, unsupportedReason, UnsupportedError, type SuiteProgress } from './support.js';
import type { Metric, SuiteResult, Unsupported } from './types.js';

const SHA256_VALUE = 1;

export interface AcOptions {
  clients: ReapiClients;
  instance: string;
  raw: RawGrpcBaseline;
  /** Calls of each kind per repetition and concurrency. */
  ops: number;
  concurrency: number[];
  repeat: number;
  /** GetCapabilities said action_cache_update_capabilities.update_enabled (false: only lookups are measured). */
  updateEnabled: boolean;
  progress: SuiteProgress;
}

export function acSteps(o: Pick<AcOptions, 'concurrency' | 'repeat'>): number {
  return o.concurrency.length * o.repeat;
}

const randomDigest = (): { hash: string; sizeBytes: number } => ({ hash: createHash('sha256').update(randomBytes(32)).digest('hex'), sizeBytes: 142 });

/**
 * The action cache: UpdateActionResult of fresh entries, GetActionResult of the same entries
 * (hits) and of absent ones (misses), each with `concurrency` calls in flight. An entry looks
 * like a small compile's: one output file, stdout, exit code and worker metadata; its blobs are
 * uploaded first so that a server that checks outputs exist keeps it. The baseline is a raw
 * grpc-js unary call as large as an encoded UpdateActionResultRequest, answered with as many
 * bytes as an ActionResult.
 */
export async function runAc(o: AcOptions): Promise<SuiteResult> {
  const metrics: Metric[] = [];
  const unsupported: Unsupported[] = [];
  const checks = { updates: 0, hits: 0, hitsMatching: 0, misses: 0, unexpected: 0 };

  // The outputs every entry points at.
  const output = Buffer.from('int main(void) { return 0; }\n'.repeat(4));
  const stdout = Buffer.from('bench: compiled out/main.o\n');
  const blobDigest = (b: Buffer) => ({ hash: createHash('sha256').update(b).digest('hex'), sizeBytes: b.byteLength });
  const outputDigest = blobDigest(output);
  const stdoutDigest = blobDigest(stdout);
  const result: re.IActionResult = {
    outputFiles: [{ path: 'out/main.o', digest: outputDigest, isExecutable: false }],
    exitCode: 0,
    stdoutDigest,
    executionMetadata: { worker: 'reexec-bench' },
  };
  const updateRequest = (actionDigest: { hash: string; sizeBytes: number }): re.IUpdateActionResultRequest => ({ instanceName: o.instance, actionDigest, actionResult: result, digestFunction: SHA256_VALUE });
  const getRequest = (actionDigest: { hash: string; sizeBytes: number }): re.IGetActionResultRequest => ({ instanceName: o.instance, actionDigest, digestFunction: SHA256_VALUE });
  const requestBytes = re.UpdateActionResultRequest.encode(updateRequest(randomDigest())).finish().byteLength;
  const resultBytes = re.ActionResult.encode(result).finish().byteLength;
  // The raw baseline: a unary call as large as an UpdateActionResultRequest, answered with as many bytes as an ActionResult.
  const rawRequest = RawGrpcBaseline.roundTripRequest(requestBytes, resultBytes);

  let canUpdate = o.updateEnabled;
  if (!canUpdate) unsupported.push({ what: 'UpdateActionResult', reason: 'GetCapabilities says action cache updates are disabled (update_enabled false): only lookups are measured' });
  // Warm up, and find out what the endpoint offers.
  try {
    await o.raw.roundTrip(rawRequest);
    await call(o.clients.cas, 'BatchUpdateBlobs', {
      instanceName: o.instance,
      requests: [output, stdout].map((data) => ({ digest: blobDigest(data), data })),
      digestFunction: SHA256_VALUE,
    }).catch(() => undefined); // without a usable CAS the entries still go in; a checking server may drop them (seen below)
    await call(o.clients.actionCache, 'GetActionResult', getRequest(randomDigest())).catch((e: grpc.ServiceError) => {
      if (e.code !== grpc.status.NOT_FOUND) asUnsupported('GetActionResult', e);
    });
    if (canUpdate) {
      try {
        await call(o.clients.actionCache, 'UpdateActionResult', updateRequest(randomDigest()));
      } catch (e) {
        const reason = unsupportedReason(e);
        if (!reason) throw e;
        unsupported.push({ what: 'UpdateActionResult', reason: `${reason}: only lookups are measured` });
        canUpdate = false;
      }
    }
  } catch (err) {
    if (!(err instanceof UnsupportedError)) throw err;
    return { name: 'ac', status: 'unsupported', unsupported: [err.unsupported], params: {}, metrics: [], checks: {} };
  }

  for (const c of o.concurrency) {
    const s = {
      rawRate: [] as number[],
      rawLat: [] as number[],
      updateRate: [] as number[],
      updateLat: [] as number[],
      hitRate: [] as number[],
      hitLat: [] as number[],
      missLat: [] as number[],
    };
    for (let rep = 1; rep <= o.repeat; rep++) {
      const keys = Array.from({ length: o.ops }, randomDigest);
      const absent = Array.from({ length: o.ops }, randomDigest);
      const rawCalls = await runConcurrent(o.ops, c, async () => void (await o.raw.roundTrip(rawRequest)));
      s.rawRate.push(o.ops / rawCalls.seconds);
      s.rawLat.push(median(rawCalls.latenciesMs));
      if (canUpdate) {
        const update = await runConcurrent(o.ops, c, async (i) => {
          await call(o.clients.actionCache, 'UpdateActionResult', updateRequest(keys[i]!));
          checks.updates++;
        });
        s.updateRate.push(o.ops / update.seconds);
        s.updateLat.push(median(update.latenciesMs));
        const got: (re.ActionResult | undefined)[] = new Array(o.ops);
        const hit = await runConcurrent(o.ops, c, async (i) => {
          got[i] = await call<re.IGetActionResultRequest, re.ActionResult>(o.clients.actionCache, 'GetActionResult', getRequest(keys[i]!)).catch((e: grpc.ServiceError) => {
            if (e.code !== grpc.status.NOT_FOUND) throw e;
            return undefined;
          });
        });
        s.hitRate.push(o.ops / hit.seconds);
        s.hitLat.push(median(hit.latenciesMs));
        for (const r of got) {
          if (!r) continue;
          checks.hits++;
          if (r.outputFiles?.[0]?.path === 'out/main.o' && r.outputFiles[0].digest?.hash === outputDigest.hash && r.stdoutDigest?.hash === stdoutDigest.hash) checks.hitsMatching++;
        }
      }
      const miss = await runConcurrent(o.ops, c, async (i) => {
        try {
          await call(o.clients.actionCache, 'GetActionResult', getRequest(absent[i]!));
          checks.unexpected++;
        } catch (e) {
          if ((e as grpc.ServiceError).code !== grpc.status.NOT_FOUND) throw e;
          checks.misses++;
        }
      });
      s.missLat.push(median(miss.latenciesMs));
      o.progress.step(
        `${o.ops} calls each at concurrency ${c}, repetition ${rep}/${o.repeat}: ` +
          (canUpdate ? `UpdateActionResult ${formatNumber(s.updateRate.at(-1)!)}/s, GetActionResult hits ${formatNumber(s.hitRate.at(-1)!)}/s, ` : '') +
          `misses p50 ${formatNumber(s.missLat.at(-1)!)} ms (raw unary ${formatNumber(s.rawRate.at(-1)!)}/s)`,
      );
    }
    const at = c > 1 ? `, ${c} at once` : '';
    const rawRate = { name: 'raw-grpc-unary', label: `raw grpc-js unary call of ${requestBytes} B answered with ${resultBytes} B (an UpdateActionResultRequest and an ActionResult)${at}`, samples: s.rawRate };
    const rawLat = { ...rawRate, samples: s.rawLat };
    const rate = { suite: 'ac' as const, unit: 'calls/s', better: 'higher' as const, concurrency: c };
    const lat = { suite: 'ac' as const, unit: 'ms', better: 'lower' as const, concurrency: c };
    if (canUpdate) {
      metrics.push(
        makeMetric({ ...rate, name: 'update', label: 'UpdateActionResult', samples: s.updateRate, baseline: rawRate }),
        makeMetric({ ...lat, name: 'update-latency', label: 'UpdateActionResult latency p50', samples: s.updateLat, baseline: rawLat }),
        makeMetric({ ...rate, name: 'get-hit', label: 'GetActionResult, hit', samples: s.hitRate, baseline: rawRate }),
        makeMetric({ ...lat, name: 'get-hit-latency', label: 'GetActionResult hit latency p50', samples: s.hitLat, baseline: rawLat }),
      );
    }
    metrics.push(makeMetric({ ...lat, name: 'get-miss-latency', label: 'GetActionResult miss latency p50', samples: s.missLat, baseline: rawLat }));
  }
  return {
    name: 'ac',
    status: unsupported.length ? 'partial' : 'ok',
    unsupported,
    params: { ops: o.ops, concurrency: o.concurrency, requestBytes, resultBytes },
    metrics,
    checks,
  };
}
