import * as grpc from '@grpc/grpc-js';
import { channelCredentials, securityChannelOptions, type ClientSecurity } from './client-security.js';
import { actionCacheDefinition } from '../services/action-cache-service.js';
import { adminDefinition } from '../services/admin-service.js';
import { historyDefinition } from '../services/history-service.js';
import { fetchDefinition, pushDefinition } from '../services/asset-service.js';
import { byteStreamDefinition } from '../services/bytestream-service.js';
import { capabilitiesDefinition } from '../services/capabilities-service.js';
import { executionDefinition, operationsDefinition } from '../services/execution-service.js';
import { casDefinition } from '../services/cas-service.js';
import type { reexec } from '../gen/proto.js';

/**
 * gRPC clients for every REAPI service reexec serves, built from the same static definitions
 * as the server. Used by `reexec bench`, `reexec status` and the tests.
 */
export const clientConstructors = {
  capabilities: grpc.makeGenericClientConstructor(capabilitiesDefinition, 'Capabilities'),
  cas: grpc.makeGenericClientConstructor(casDefinition, 'ContentAddressableStorage'),
  byteStream: grpc.makeGenericClientConstructor(byteStreamDefinition, 'ByteStream'),
  actionCache: grpc.makeGenericClientConstructor(actionCacheDefinition, 'ActionCache'),
  fetch: grpc.makeGenericClientConstructor(fetchDefinition, 'Fetch'),
  push: grpc.makeGenericClientConstructor(pushDefinition, 'Push'),
  execution: grpc.makeGenericClientConstructor(executionDefinition, 'Execution'),
  operations: grpc.makeGenericClientConstructor(operationsDefinition, 'Operations'),
  admin: grpc.makeGenericClientConstructor(adminDefinition, 'Admin'),
  history: grpc.makeGenericClientConstructor(historyDefinition, 'History'),
};

/** The Admin API's client, typed from admin.proto (the REAPI clients stay generic: tests poke them freely). */
export interface AdminClient extends grpc.Client {
  GetStatus(
    request: reexec.admin.v1.IGetStatusRequest,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, response: reexec.admin.v1.StatusSnapshot) => void,
  ): grpc.ClientUnaryCall;
  CollectGarbage(request: reexec.admin.v1.ICollectGarbageRequest, metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<reexec.admin.v1.CollectGarbageProgress>;
}

export type ReapiClients = { [K in Exclude<keyof typeof clientConstructors, 'admin'>]: grpc.Client & Record<string, (...args: any[]) => any> } & { admin: AdminClient };

/** A client of the Admin API alone. */
export function adminClient(target: string, credentials: grpc.ChannelCredentials, options: grpc.ClientOptions): AdminClient {
  return new clientConstructors.admin(target, credentials, options) as unknown as AdminClient;
}

/** "grpc[s]://host:port", "http[s]://host:port", "host:port" or "unix:/path" → a grpc-js target. */
export function grpcTarget(endpoint: string): string {
  return endpoint.replace(/^(grpcs?|https?):\/\//, '');
}

/**
 * Clients of every service at `endpoint`. TLS with grpcs:// or https:// (or security.tls), a
 * client certificate for mutual TLS and a bearer token from `security`.
 */
export function connect(endpoint: string, options: grpc.ChannelOptions = {}, security: ClientSecurity = {}): ReapiClients & { close(): void } {
  const target = grpcTarget(endpoint);
  const creds = channelCredentials(endpoint, security);
  const channelOptions: grpc.ClientOptions = {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc-node.flow_control_window': 16 * 1024 * 1024,
    ...options,
    ...securityChannelOptions(security),
  };
  const clients = Object.fromEntries(
    Object.entries(clientConstructors).map(([k, C]) => [k, new C(target, creds, channelOptions)]),
  ) as unknown as ReapiClients;
  return {
    ...clients,
    close: () => Object.values(clients).forEach((c) => (c as grpc.Client).close()),
  };
}

/** Promise form of a unary call on a generic client. */
export function call<Req, Res>(client: grpc.Client & Record<string, any>, methodName: string, request: Req, metadata = new grpc.Metadata()): Promise<Res> {
  return new Promise((resolve, reject) => {
    client[methodName](request, metadata, (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}
