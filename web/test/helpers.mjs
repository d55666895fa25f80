// Shared helpers of the unit tests: an SDK instance wired to a FakeServer with
// short timings, an event recorder, and polling.
import { ZIM } from '../dist/zim.js';

export const EVENTS = [
  'error',
  'connectionStateChanged',
  'tokenWillExpire',
  'receivePeerMessage',
  'receiveRoomMessage',
  'roomMemberJoined',
  'roomMemberLeft',
  'roomStateChanged',
  'roomAttributesUpdated',
  'roomAttributesBatchUpdated',
  'peerMessageGap',
  'roomMessageGap',
];

/** Creates the SDK instance against `server`, recording every event and log line. */
export function makeZim(server, overrides = {}) {
  ZIM.getInstance()?.destroy();
  const logs = [];
  const zim = ZIM.create({
    appID: 1234567890,
    server: 'ws://fake.test/ws',
    WebSocket: server.WebSocket,
    requestTimeout: 600,
    heartbeatInterval: 60_000,
    reconnectMinDelay: 20,
    reconnectMaxDelay: 160,
    ackInterval: 50,
    watchNetwork: false,
    random: () => 0,
    logger: (level, line) => logs.push(`${level} ${line}`),
    ...overrides,
  });
  const events = [];
  for (const name of EVENTS) {
    zim.on(name, (z, data) => {
      if (z !== zim) throw new Error('handler got another instance');
      events.push({ name, data });
    });
  }
  return { zim, events, logs };
}

/** Polls `check` until it returns a truthy value (returned), or fails after `ms`. */
export async function waitFor(check, what = 'condition', ms = 3000) {
  const start = Date.now();
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Events of one name, their data only. */
export const named = (events, name) => events.filter((e) => e.name === name).map((e) => e.data);

/** The awaited rejection of a promise (fails if it resolves). */
export async function rejection(promise) {
  try {
    const value = await promise;
    throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('expected a rejection')) throw e;
    return e;
  }
}

/** Texts of every message delivered in `receive*Message` events of one name. */
export const texts = (events, name) => named(events, name).flatMap((d) => d.messageList.map((m) => m.message));
