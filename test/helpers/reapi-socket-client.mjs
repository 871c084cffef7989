// A gRPC client with no dependencies beyond Node itself, for actions that talk to their REAPI
// socket (remoteApisSocketPath) from inside a sandbox, where nothing of the repository may be
// visible. It makes the calls of a plan, each an already-encoded request, and prints what came
// back; encoding and decoding stay with the test, on the host.
//
//   node reapi-socket-client.mjs PLAN.json
// PLAN: {"socket": "/path/in/sandbox.sock", "steps": [{"label", "path", "request": BASE64} | {"label", "get": URL}]}
// prints {"LABEL": {"status": N, "message": "…", "responses": [BASE64…]}, …} on stdout.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const session = http2.connect('http://localhost', { createConnection: () => net.connect(plan.socket) });
session.on('error', () => undefined);

function call(path, request) {
  return new Promise((resolve) => {
    const body = Buffer.from(request, 'base64');
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    let pending = Buffer.alloc(0);
    const responses = [];
    let status;
    let message = '';
    const headers = (h) => {
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
      if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
    };
    stream.on('response', headers);
    stream.on('trailers', headers);
    stream.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const n = pending.readUInt32BE(1);
        responses.push(pending.subarray(5, 5 + n).toString('base64'));
        pending = pending.subarray(5 + n);
      }
    });
    stream.on('close', () => resolve({ status: status ?? -1, message, responses }));
    stream.on('error', (err) => {
      message = String(err);
    });
    stream.end(frame);
  });
}

function get(url) {
  return new Promise((resolve) => {
    http.get(url, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, message: '', responses: [] }));
    }).on('error', (err) => resolve({ status: -1, message: String(err), responses: [] }));
  });
}

const results = {};
for (const step of plan.steps) results[step.label] = step.get ? await get(step.get) : await call(step.path, step.request);
session.close();
process.stdout.write(JSON.stringify(results));
