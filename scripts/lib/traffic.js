// REAPI calls the fault and soak scripts make, over the clients of dist/client/reapi-client.js.
import { randomBytes } from 'node:crypto';

/** Client helpers bound to `clients` (connect()) and the build's modules (loadDist()). */
export function traffic(clients, { call, Digest, re }) {
  const digestOf = (data) => Digest.compute(data).toProto();

  /** ByteStream.Write in chunks, respecting flow control; resolves to the WriteResponse. */
  function bsWrite(data, digest = digestOf(data), chunk = 256 * 1024) {
    return new Promise((resolve, reject) => {
      const name = `uploads/${randomBytes(16).toString('hex')}/blobs/${digest.hash}/${digest.sizeBytes}`;
      const s = clients.byteStream.Write((err, res) => (err ? reject(err) : resolve(res)));
      s.on('error', () => undefined);
      (async () => {
        for (let off = 0; off < data.length || off === 0; off += chunk) {
          const end = Math.min(data.length, off + chunk);
          if (!s.write({ resourceName: off === 0 ? name : '', writeOffset: off, data: data.subarray(off, end), finishWrite: end === data.length })) await new Promise((r) => s.once('drain', r));
          if (end === data.length) break;
        }
        s.end();
      })().catch(reject);
    });
  }

  /** ByteStream.Read of a whole blob. */
  function bsRead(d) {
    return new Promise((resolve, reject) => {
      const parts = [];
      const s = clients.byteStream.Read({ resourceName: `blobs/${d.hash}/${d.sizeBytes}`, readOffset: 0, readLimit: 0 });
      s.on('data', (m) => parts.push(Buffer.from(m.data)));
      s.on('error', reject);
      s.on('end', () => resolve(Buffer.concat(parts)));
    });
  }

  /** One blob, by BatchUpdateBlobs; resolves to its digest. */
  async function putSmall(bytes) {
    const d = digestOf(bytes);
    const res = await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: d, data: bytes }] });
    if (res.responses[0].status?.code) throw Object.assign(new Error(res.responses[0].status.message), { code: res.responses[0].status.code, details: res.responses[0].status.message });
    return d;
  }

  /** The blobs of a LocalTree (treeFromDirectory) that the CAS lacks. */
  async function uploadTree(tree) {
    const blobs = [...tree.blobs.values()];
    const missing = new Set((await call(clients.cas, 'FindMissingBlobs', { blobDigests: blobs.map((b) => b.digest.toProto()) })).missingBlobDigests.map((d) => d.hash));
    for (const b of blobs.filter((x) => missing.has(x.digest.hash))) {
      if (b.data.length > 1024 * 1024) await bsWrite(Buffer.from(b.data), b.digest.toProto());
      else await putSmall(b.data);
    }
  }

  /** An Action (and its Command) over input root `root` (a proto digest), uploaded; resolves to its digest. */
  async function actionFor(root, argv, { platform = [['OSFamily', 'linux']], outputs = ['out.txt'], doNotCache = false } = {}) {
    const command = Buffer.from(re.Command.encode({ arguments: argv, environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }], outputPaths: outputs, workingDirectory: '' }).finish());
    const action = Buffer.from(
      re.Action.encode({ commandDigest: await putSmall(command), inputRootDigest: root, doNotCache, platform: { properties: platform.map(([name, value]) => ({ name, value })) } }).finish(),
    );
    return putSmall(action);
  }

  /** Follow an Execute (or WaitExecution) stream; `onName` is told the operation name first. */
  function follow(stream, onName) {
    return new Promise((resolve, reject) => {
      let last;
      stream.on('data', (op) => {
        if (!last) onName?.(op.name);
        last = op;
      });
      stream.on('error', reject);
      stream.on('end', () => {
        if (!last?.done || !last.response) return reject(Object.assign(new Error('the stream ended without a result'), { details: 'the stream ended without a result' }));
        resolve(re.ExecuteResponse.decode(last.response.value));
      });
    });
  }
  const execute = (actionDigest, onName) => follow(clients.execution.Execute({ actionDigest }), onName);
  const waitExecution = (name) => follow(clients.execution.WaitExecution({ name }));

  /** The bytes of an output file of an ExecuteResponse, or undefined. */
  async function outputFile(response, path) {
    const f = response.result?.outputFiles?.find((x) => x.path === path);
    if (!f) return undefined;
    const r = await call(clients.cas, 'BatchReadBlobs', { digests: [f.digest] });
    return r.responses[0].status?.code ? undefined : Buffer.from(r.responses[0].data);
  }

  return { digestOf, bsWrite, bsRead, putSmall, uploadTree, actionFor, execute, waitExecution, outputFile };
}
