/**
 * The generated protobuf messages under short names. Generated from protos/ by
 * scripts/gen-protos.js; 64-bit integers decode to JS numbers.
 */
import { build, google } from './gen/proto.js';

// Namespace aliases: usable both as values (re.Digest.encode) and as types (re.IDigest).
export import re = build.bazel.remote.execution.v2;
export import asset = build.bazel.remote.asset.v1;
export import bytestream = google.bytestream;
export import longrunning = google.longrunning;
export import rpc = google.rpc;
export import protobuf = google.protobuf;
export import semver = build.bazel.semver;
export import rw = google.devtools.remoteworkers.v1test2;

export type IDigest = build.bazel.remote.execution.v2.IDigest;
export type IDirectory = build.bazel.remote.execution.v2.IDirectory;
export type Directory = build.bazel.remote.execution.v2.Directory;
export type ITree = build.bazel.remote.execution.v2.ITree;
export type IActionResult = build.bazel.remote.execution.v2.IActionResult;
export type ActionResult = build.bazel.remote.execution.v2.ActionResult;
export type IAction = build.bazel.remote.execution.v2.IAction;
export type ICommand = build.bazel.remote.execution.v2.ICommand;
export type IPlatform = build.bazel.remote.execution.v2.IPlatform;
export type IOperation = google.longrunning.IOperation;
export type IStatus = google.rpc.IStatus;

/** Type URL prefix of google.protobuf.Any. */
export const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** Pack a message into a google.protobuf.Any. */
export function packAny(typeName: string, bytes: Uint8Array): google.protobuf.IAny {
  return { type_url: TYPE_URL_PREFIX + typeName, value: bytes };
}
