// LiveKit's Node server SDK (livekit-server-sdk, pinned in package-lock.json) making the calls
// the portal makes, and the ones the emulator once answered differently, against one server.
// Usage: node contract.mjs '{"url", "key", "secret", "prefix"}'
// Prints one JSON object: {step: {ok: <the answer as protobuf JSON>} | {error: {...}}}, in order.
// tests/livekit_emulator/test_node_server_sdk.py runs it against both servers and compares.
import {
  AgentDispatchClient,
  EgressClient,
  IngressClient,
  RoomServiceClient,
  SipClient,
} from 'livekit-server-sdk';

const { url, key, secret, prefix } = JSON.parse(process.argv[2]);
const rooms = new RoomServiceClient(url, key, secret);
const dispatch = new AgentDispatchClient(url, key, secret);
const forged = new RoomServiceClient(url, key, `${secret}-not-the-secret`);
const room = `${prefix}-room`;

const asJson = (value) => {
  if (Array.isArray(value)) return value.map(asJson);
  if (value && typeof value.toJson === 'function') {
    return value.toJson({ emitDefaultValues: true });
  }
  return value ?? null;
};

const results = {};
async function step(name, call) {
  try {
    results[name] = { ok: asJson(await call()) };
  } catch (error) {
    results[name] = {
      error: { status: error.status, code: error.code, message: error.message, metadata: error.metadata ?? null },
    };
  }
}

await step('createRoom', () => rooms.createRoom({ name: room, emptyTimeout: 120, metadata: 'm1' }));
await step('createRoomAgain', () => rooms.createRoom({ name: room, emptyTimeout: 7, metadata: 'other' }));
await step('createRoomEmptyName', () => rooms.createRoom({ name: '' }));
await step('listRooms', () => rooms.listRooms([room, `${prefix}-absent`]));
await step('updateRoomMetadata', () => rooms.updateRoomMetadata(room, 'm2'));
await step('updateRoomMetadataNowhere', () => rooms.updateRoomMetadata(`${prefix}-nowhere`, 'x'));
await step('listParticipants', () => rooms.listParticipants(room));
await step('listParticipantsNowhere', () => rooms.listParticipants(`${prefix}-nowhere`));
await step('getParticipant', () => rooms.getParticipant(room, 'ghost'));
await step('updateParticipant', () => rooms.updateParticipant(room, 'ghost', { metadata: 'x' }));
await step('removeParticipant', () => rooms.removeParticipant(room, 'ghost'));
await step('createDispatch', () => dispatch.createDispatch(room, `${prefix}-nobody`, { metadata: '{"n":1}' }));
const created = results.createDispatch.ok;
await step('getDispatch', () => dispatch.getDispatch(created.id, room));
await step('listDispatch', () => dispatch.listDispatch(room));
await step('deleteDispatch', () => dispatch.deleteDispatch(created.id, room));
await step('deleteDispatchAgain', () => dispatch.deleteDispatch(created.id, room));
await step('listDispatchNowhere', () => dispatch.listDispatch(`${prefix}-nowhere`));
await step('listEgress', () => new EgressClient(url, key, secret).listEgress({ roomName: room }));
await step('listIngress', () => new IngressClient(url, key, secret).listIngress({ roomName: room }));
await step('listSipInboundTrunk', () => new SipClient(url, key, secret).listSipInboundTrunk());
await step('forgedListRooms', () => forged.listRooms());
await step('deleteRoomNowhere', () => rooms.deleteRoom(`${prefix}-nowhere`));
await step('deleteRoom', () => rooms.deleteRoom(room));
await step('listRoomsAfter', () => rooms.listRooms([room]));

process.stdout.write(JSON.stringify(results));
