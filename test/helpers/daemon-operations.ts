import { call, connect } from '../../src/client/reapi-client.js';
import { re } from '../../src/proto.js';

export interface ObservedOperation {
  name: string;
  done: boolean;
  /** ExecuteOperationMetadata.stage: 2 queued, 3 executing, 4 completed. */
  stage: number;
  actionHash: string;
  cachedResult: boolean;
  exitCode?: number;
  statusCode: number;
  /** The Command's arguments are not in the Operation: the ActionResult's worker name is. */
  worker?: string;
}

/**
 * Every operation a running daemon knows (Operations.ListOperations): what real clients
 * really asked it to execute, and whether the answer came from the action cache.
 */
export async function listOperations(port: number): Promise<ObservedOperation[]> {
  const clients = connect(`127.0.0.1:${port}`);
  try {
    const ops: ObservedOperation[] = [];
    let pageToken = '';
    do {
      const res: any = await call(clients.operations, 'ListOperations', { name: '', filter: '', pageSize: 1000, pageToken });
      for (const op of res.operations ?? []) {
        const meta = op.metadata?.value ? re.ExecuteOperationMetadata.decode(op.metadata.value) : undefined;
        const response = op.response?.value ? re.ExecuteResponse.decode(op.response.value) : undefined;
        ops.push({
          name: op.name,
          done: !!op.done,
          stage: meta?.stage ?? 0,
          actionHash: meta?.actionDigest?.hash ?? '',
          cachedResult: !!response?.cachedResult,
          exitCode: response?.result ? (response.result.exitCode ?? undefined) : undefined,
          statusCode: response?.status?.code ?? 0,
          worker: response?.result?.executionMetadata?.worker || undefined,
        });
      }
      pageToken = res.nextPageToken ?? '';
    } while (pageToken);
    return ops;
  } finally {
    clients.close();
  }
}
