/**
 * The JSON Schema (draft 2020-12) of `reexec bench --json`, and a checker for the subset of
 * JSON Schema it uses (type, enum, const, properties, required, additionalProperties, items,
 * anyOf, minimum). `--compare` checks the earlier file with it before trusting it.
 */

type Schema = Record<string, unknown>;

const num = { type: 'number' };
const str = { type: 'string' };
const numbers = { type: 'array', items: num };

const baseline: Schema = {
  type: 'object',
  required: ['name', 'label', 'value', 'unit'],
  additionalProperties: false,
  properties: { name: str, label: str, value: num, unit: str },
};

const metric: Schema = {
  type: 'object',
  required: ['id', 'name', 'label', 'concurrency', 'value', 'unit', 'better', 'baseline', 'ratio', 'samples', 'baselineSamples'],
  additionalProperties: false,
  properties: {
    id: str,
    name: str,
    label: str,
    concurrency: { type: 'integer', minimum: 1 },
    sizeBytes: { type: 'integer', minimum: 0 },
    value: num,
    unit: str,
    better: { enum: ['higher', 'lower'] },
    baseline: { anyOf: [baseline, { type: 'null' }] },
    ratio: { type: ['number', 'null'] },
    samples: numbers,
    baselineSamples: numbers,
  },
};

const suite: Schema = {
  type: 'object',
  required: ['name', 'status', 'unsupported', 'params', 'metrics', 'checks'],
  additionalProperties: false,
  properties: {
    name: { enum: ['cas-small', 'cas-large', 'ac', 'exec', 'history'] },
    status: { enum: ['ok', 'partial', 'unsupported'] },
    unsupported: {
      type: 'array',
      items: { type: 'object', required: ['what', 'reason'], additionalProperties: false, properties: { what: str, reason: str } },
    },
    params: { type: 'object', additionalProperties: { anyOf: [num, str, numbers] } },
    metrics: { type: 'array', items: metric },
    checks: { type: 'object', additionalProperties: { type: ['number', 'boolean', 'string'] } },
  },
};

const targetCommon = { endpoint: str, instance: str, note: str };
const target: Schema = {
  anyOf: [
    {
      type: 'object',
      required: ['kind', 'endpoint', 'instance', 'fsync', 'execution', 'dataDir', 'note'],
      additionalProperties: false,
      properties: { kind: { const: 'temporary' }, ...targetCommon, fsync: { type: 'boolean' }, execution: { type: 'boolean' }, dataDir: str },
    },
    {
      type: 'object',
      required: ['kind', 'endpoint', 'instance', 'config', 'note'],
      additionalProperties: false,
      properties: { kind: { const: 'local' }, ...targetCommon, config: str },
    },
    {
      type: 'object',
      required: ['kind', 'endpoint', 'instance', 'tls', 'token', 'note'],
      additionalProperties: false,
      properties: { kind: { const: 'endpoint' }, ...targetCommon, tls: { type: 'boolean' }, token: { type: 'boolean' } },
    },
  ],
};

const comparison: Schema = {
  type: 'object',
  required: ['file', 'startedAt', 'loadAvg', 'rows', 'onlyBefore', 'onlyAfter'],
  additionalProperties: false,
  properties: {
    file: str,
    startedAt: str,
    loadAvg: numbers,
    rows: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'label', 'unit', 'before', 'after', 'change', 'ratioBefore', 'ratioAfter', 'ratioChange', 'verdict'],
        additionalProperties: false,
        properties: {
          id: str,
          label: str,
          unit: str,
          before: num,
          after: num,
          change: num,
          ratioBefore: { type: ['number', 'null'] },
          ratioAfter: { type: ['number', 'null'] },
          ratioChange: { type: ['number', 'null'] },
          verdict: { enum: ['better', 'worse', 'same'] },
        },
      },
    },
    onlyBefore: { type: 'array', items: str },
    onlyAfter: { type: 'array', items: str },
  },
};

export const BENCH_RESULT_SCHEMA: Schema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://reexec.dev/schemas/bench-result-1.json',
  title: 'reexec bench result',
  type: 'object',
  required: ['format', 'host', 'target', 'startedAt', 'durationSeconds', 'repeat', 'concurrency', 'baselines', 'suites'],
  additionalProperties: false,
  properties: {
    format: { const: 'reexec-bench/1' },
    host: {
      type: 'object',
      required: ['cpus', 'cpuModel', 'node', 'platform', 'arch', 'totalMemBytes', 'loadAvg'],
      additionalProperties: false,
      properties: {
        cpus: { type: 'integer', minimum: 1 },
        cpuModel: str,
        node: str,
        platform: str,
        arch: str,
        totalMemBytes: { type: 'integer', minimum: 0 },
        loadAvg: numbers,
        loadAvgEnd: numbers,
      },
    },
    target,
    startedAt: str,
    durationSeconds: num,
    repeat: { type: 'integer', minimum: 1 },
    concurrency: { type: 'array', items: { type: 'integer', minimum: 1 } },
    baselines: str,
    suites: { type: 'array', items: suite },
    comparison,
  },
};

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

const typeMatches = (actual: string, wanted: string): boolean => actual === wanted || (wanted === 'number' && actual === 'integer');

/** Where `value` breaks `schema`: one message per problem ("$.suites[0].metrics[2].ratio: ..."); empty when it conforms. */
export function validateAgainst(schema: Schema, value: unknown, path = '$'): string[] {
  const errors: string[] = [];
  if (schema['anyOf']) {
    const options = schema['anyOf'] as Schema[];
    const results = options.map((s) => validateAgainst(s, value, path));
    if (!results.some((r) => r.length === 0)) {
      errors.push(`${path}: matches none of the allowed forms (${results.map((r) => r[0]).join('; ')})`);
    }
    return errors;
  }
  const actual = typeOf(value);
  if (schema['type'] !== undefined) {
    const wanted = Array.isArray(schema['type']) ? (schema['type'] as string[]) : [schema['type'] as string];
    if (!wanted.some((w) => typeMatches(actual, w))) return [`${path}: is ${actual}, expected ${wanted.join(' or ')}`];
  }
  if ('const' in schema && value !== schema['const']) errors.push(`${path}: is ${JSON.stringify(value)}, expected ${JSON.stringify(schema['const'])}`);
  if (schema['enum'] && !(schema['enum'] as unknown[]).includes(value)) errors.push(`${path}: is ${JSON.stringify(value)}, expected one of ${JSON.stringify(schema['enum'])}`);
  if (typeof schema['minimum'] === 'number' && typeof value === 'number' && value < schema['minimum']) errors.push(`${path}: ${value} is below ${schema['minimum']}`);
  if (actual === 'array' && schema['items']) {
    (value as unknown[]).forEach((item, i) => errors.push(...validateAgainst(schema['items'] as Schema, item, `${path}[${i}]`)));
  }
  if (actual === 'object') {
    const obj = value as Record<string, unknown>;
    const props = (schema['properties'] ?? {}) as Record<string, Schema>;
    for (const key of (schema['required'] ?? []) as string[]) if (!(key in obj)) errors.push(`${path}: lacks "${key}"`);
    for (const [key, v] of Object.entries(obj)) {
      if (props[key]) errors.push(...validateAgainst(props[key], v, `${path}.${key}`));
      else if (schema['additionalProperties'] === false) errors.push(`${path}: has an unexpected property "${key}"`);
      else if (schema['additionalProperties'] && typeof schema['additionalProperties'] === 'object') {
        errors.push(...validateAgainst(schema['additionalProperties'] as Schema, v, `${path}.${key}`));
      }
    }
  }
  return errors;
}

/** Where a parsed `reexec bench --json` output breaks the schema (empty: it conforms). */
export const validateBenchResult = (value: unknown): string[] => validateAgainst(BENCH_RESULT_SCHEMA, value);
