// Fetches a token the way a browser frontend does: livekit-client's
// TokenSource.endpoint(url, {headers}).fetch(options), unchanged.
//
// Usage: node token_source.mjs '<json>' where json is
//   {"url": "...", "key": "dpk_...", "options": {roomName, participantIdentity, ...}}
// Prints one JSON line:
//   {"ok": true,  "response": {serverUrl, participantToken, ...}, "request": {...}}
//   {"ok": false, "error": "<the SDK's error message>",           "request": {...}}
// "request" is what the SDK put on the wire (method, headers, parsed body), recorded by a
// pass-through wrapper around the global fetch, so the Python test can pin the body shape.
//
// No browser shims: under Node 20+ livekit-client imports and TokenSource runs with Node's
// own fetch; nothing else (navigator, window, WebSocket) is touched by this path.

import { TokenSource } from 'livekit-client';

const { url, key, options } = JSON.parse(process.argv[2]);

let sent = null;
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  let body = init.body;
  try {
    body = JSON.parse(init.body);
  } catch {
    // Not JSON: keep the raw text so the test shows exactly what went out.
  }
  sent = { url: String(input), method: init.method, headers: init.headers, body };
  return realFetch(input, init);
};

const source = TokenSource.endpoint(url, {
  headers: { Authorization: `Bearer ${key}` },
});

try {
  const response = await source.fetch(options);
  console.log(JSON.stringify({ ok: true, response, request: sent }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), request: sent }));
}
