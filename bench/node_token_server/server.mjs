// The reference point of bench/token_bench.py: a minimal token server written the way
// LiveKit's own example token server is (express + livekit-server-sdk), answering the
// standard token endpoint body with the standard response.
//
//   PORT=3001 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... node server.mjs
//
// One process, as in LiveKit's example; it prints "listening <port>" once ready.

import express from 'express';
import { AccessToken } from 'livekit-server-sdk';

const port = Number(process.env.PORT ?? 3001);
const apiKey = process.env.LIVEKIT_API_KEY;
const apiSecret = process.env.LIVEKIT_API_SECRET;
const serverUrl = process.env.LIVEKIT_URL ?? 'ws://127.0.0.1:7880';

const app = express();
app.use(express.json());

app.post('/token', async (req, res) => {
  const room = req.body.room_name ?? 'bench-room';
  const identity = req.body.participant_identity ?? 'bench-user';
  const at = new AccessToken(apiKey, apiSecret, { identity });
  at.addGrant({ roomJoin: true, room });
  res.status(201).json({ server_url: serverUrl, participant_token: await at.toJwt() });
});

app.listen(port, '127.0.0.1', () => {
  console.log(`listening ${port}`);
});
