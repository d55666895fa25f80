// Reconnects against the fake server: backoff with jitter, failover, re-login
// with lastInboxSeq and roomSeqs, the barrier ping, room restore and re-join,
// catch-up delivered once and in order, resent and failed in-flight calls,
// kicks and give-up.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  ZIM,
  ZIMConnectionEvent,
  ZIMConnectionState,
  ZIMErrorCode,
  ZIMMessageType,
  ZIMRoomEvent,
  ZIMRoomState,
} from '../../dist/zim.js';
import { FakeServer, NO_REPLY } from '../fake-server.mjs';
import { makeZim, named, rejection, sleep, texts, waitFor } from '../helpers.mjs';

afterEach(() => ZIM.getInstance()?.destroy());

const states = (events) => named(events, 'connectionStateChanged').map((d) => [d.state, d.event, d.extendedData]);
const backoffDelays = (logs) =>
  logs.map((l) => /reconnect attempt (\d+) in (\d+) ms/.exec(l)).filter(Boolean).map((m) => Number(m[2]));

test('backoff doubles per failed attempt, with jitter in [d/2, d], capped, across the URL list', async () => {
  const server = new FakeServer();
  const { zim, events, logs } = makeZim(server, {
    server: ['ws://one.test/ws', 'ws://two.test/ws'],
    reconnectMinDelay: 20,
    reconnectMaxDelay: 80,
    random: () => 0, // the low end: d/2
  });
  await zim.login({ userID: 'alice' }, 'good');
  server.refuse = () => true;
  server.conn('alice').drop();
  await waitFor(() => backoffDelays(logs).length >= 5, 'five attempts');
  assert.deepEqual(backoffDelays(logs).slice(0, 5), [10, 20, 40, 40, 40]);
  assert.deepEqual(states(events).slice(2, 3), [
    [ZIMConnectionState.Reconnecting, ZIMConnectionEvent.LoginInterrupted, 'the connection closed (1006)'],
  ]);
  // Attempts alternate between the URLs, starting after the one that was in use.
  const tried = logs.filter((l) => l.includes('connecting to')).map((l) => /connecting to (\S+):/.exec(l)[1]);
  assert.deepEqual(tried.slice(1, 5), ['ws://one.test/ws', 'ws://two.test/ws', 'ws://one.test/ws', 'ws://two.test/ws']);
  server.refuse = () => false;
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Connected, 'reconnected', 3000);
  assert.deepEqual(states(events).at(-1), [ZIMConnectionState.Connected, ZIMConnectionEvent.Success, 'reconnected']);
  assert.equal(
    states(events).filter((s) => s[0] === ZIMConnectionState.Reconnecting).length,
    1,
    'Reconnecting is reported once per outage',
  );
});

test('jitter: random() = 1 gives the full delay', async () => {
  const server = new FakeServer();
  const { zim, logs } = makeZim(server, { reconnectMinDelay: 30, reconnectMaxDelay: 1000, random: () => 0.999999 });
  await zim.login({ userID: 'alice' }, 'good');
  server.refuse = () => true;
  server.conn('alice').drop();
  await waitFor(() => backoffDelays(logs).length >= 3, 'three attempts');
  assert.deepEqual(backoffDelays(logs).slice(0, 3), [30, 60, 120]);
});

test('offline catch-up: missed peer and room messages arrive once each, in order, before Connected', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'bob' }, 'good');
  await zim.enterRoom({ roomID: 'lobby' });
  server.room('lobby').members.set('alice', 'Alice');
  server.peerMessage('alice', 'bob', 'p1');
  server.roomMessage('lobby', 'alice', 'r1');
  await waitFor(() => texts(events, 'receiveRoomMessage').length === 1 && texts(events, 'receivePeerMessage').length === 1, 'live messages');

  // Bob's connection breaks; while it is down, alice sends more.
  server.refuse = () => true;
  server.conn('bob').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Reconnecting, 'reconnecting');
  for (let i = 2; i <= 5; i++) {
    server.peerMessage('alice', 'bob', `p${i}`);
    server.roomMessage('lobby', 'alice', `r${i}`);
  }
  // And a call made during the outage waits for the reconnect.
  const sent = zim.sendPeerMessage({ type: 1, message: 'while away' }, 'alice');
  await sleep(50);
  server.refuse = () => false;
  await sent;
  assert.deepEqual(texts(events, 'receivePeerMessage'), ['p1', 'p2', 'p3', 'p4', 'p5']);
  assert.deepEqual(texts(events, 'receiveRoomMessage'), ['r1', 'r2', 'r3', 'r4', 'r5']);
  // The re-login carried the positions.
  const relogin = server.requests.filter((r) => r.op === 'login')[1];
  assert.equal(relogin.data.lastInboxSeq, 1);
  assert.deepEqual(relogin.data.roomSeqs, { lobby: 1 });
  // The barrier ping went before the queued send; the catch-up came before Connected.
  const ops = server.history.at(-1).requests.map((r) => r.op);
  assert.deepEqual(ops.slice(0, 3), ['login', 'ping', 'sendPeerMessage']);
  const order = events
    .filter((e) => ['receivePeerMessage', 'receiveRoomMessage', 'connectionStateChanged', 'roomStateChanged'].includes(e.name))
    .map((e) => (e.name === 'connectionStateChanged' ? `state${e.data.state}` : e.name === 'roomStateChanged' ? `room${e.data.state}/${e.data.event}` : e.name));
  assert.deepEqual(order.slice(-6), [
    'state3', // Reconnecting
    'room1/1', // Connecting / NetworkInterrupted
    'receivePeerMessage', // p2..p5, one push from one sender
    'receiveRoomMessage', // r2..r5
    'room2/0', // restored by the server: Connected / Success
    'state2', // Connected, after the barrier ping
  ]);
  assert.deepEqual(
    named(events, 'roomStateChanged').map((d) => [d.roomID, d.state, d.event]),
    [
      ['lobby', ZIMRoomState.Connected, ZIMRoomEvent.ActiveCreate],
      ['lobby', ZIMRoomState.Connecting, ZIMRoomEvent.NetworkInterrupted],
      ['lobby', ZIMRoomState.Connected, ZIMRoomEvent.Success],
    ],
  );
});

test('a server that replays everything after a reconnect still gives each stored message once', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'bob' }, 'good');
  await zim.enterRoom({ roomID: 'lobby' });
  server.room('lobby').members.set('alice', 'Alice');
  await zim.sendRoomMessage({ type: 1, message: 'own' }, 'lobby');
  server.peerMessage('alice', 'bob', 'p1');
  server.roomMessage('lobby', 'alice', 'r2');
  await waitFor(() => texts(events, 'receiveRoomMessage').length === 1, 'live');
  server.replayEverything = true;
  server.conn('bob').drop();
  server.peerMessage('alice', 'bob', 'p2'); // while down
  server.roomMessage('lobby', 'alice', 'r3');
  await waitFor(() => states(events).at(-1)?.[2] === 'reconnected', 'reconnected');
  assert.deepEqual(texts(events, 'receivePeerMessage'), ['p1', 'p2']);
  assert.deepEqual(texts(events, 'receiveRoomMessage'), ['r2', 'r3'], 'own message replayed by the server is dropped');
});

test('a room the server did not restore is re-joined with its last seq; one that is gone is reported', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'bob' }, 'good');
  await zim.enterRoom({ roomID: 'kept' });
  await zim.enterRoom({ roomID: 'rejoin' });
  await zim.enterRoom({ roomID: 'gone' });
  server.room('rejoin').members.set('alice', 'Alice');
  server.roomMessage('rejoin', 'alice', 'seen');
  await waitFor(() => texts(events, 'receiveRoomMessage').length === 1, 'live');
  server.refuse = () => true;
  server.conn('bob').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Reconnecting, 'reconnecting');
  // The server lost bob's membership of two rooms (e.g. its grace period ran out), and one room is gone.
  server.room('rejoin').members.delete('bob');
  server.room('gone').members.delete('bob');
  server.rooms.delete('gone');
  server.roomMessage('rejoin', 'alice', 'missed');
  server.refuse = () => false;
  await waitFor(() => states(events).at(-1)?.[2] === 'reconnected', 'reconnected');
  const rejoins = server.history.at(-1).requests.filter((r) => r.op === 'joinRoom').map((r) => r.data);
  assert.deepEqual(rejoins.sort((a, b) => a.roomID.localeCompare(b.roomID)), [
    { roomID: 'gone', lastSeq: 0 },
    { roomID: 'rejoin', lastSeq: 1 },
  ]);
  assert.deepEqual(texts(events, 'receiveRoomMessage'), ['seen', 'missed']);
  const after = named(events, 'roomStateChanged').slice(6).map((d) => [d.roomID, d.state, d.event]);
  assert.deepEqual(after.sort(), [
    ['gone', ZIMRoomState.Disconnected, ZIMRoomEvent.RoomNotExist],
    ['kept', ZIMRoomState.Connected, ZIMRoomEvent.Success],
    ['rejoin', ZIMRoomState.Connected, ZIMRoomEvent.Success],
  ]);
  // The gone room is no longer in the roomSeqs of the next re-login.
  server.conn('bob').drop();
  await waitFor(() => server.requests.filter((r) => r.op === 'login').length === 3, 'third login');
  assert.deepEqual(Object.keys(server.requests.filter((r) => r.op === 'login')[2].data.roomSeqs).sort(), ['kept', 'rejoin']);
});

test('in flight at a drop: Text sends are resent with the same localMessageID; others fail', async () => {
  const server = new FakeServer();
  let hold = true;
  const original = server.op_sendPeerMessage.bind(server);
  server.on('sendPeerMessage', (conn, frame) => (hold ? NO_REPLY : original(conn, frame)));
  server.on('setRoomAttributes', () => NO_REPLY);
  const { zim } = makeZim(server, { requestTimeout: 2000 });
  await zim.login({ userID: 'alice' }, 'good');
  await zim.enterRoom({ roomID: 'lobby' });
  const text = zim.sendPeerMessage({ type: ZIMMessageType.Text, message: 'stored' }, 'bob');
  const command = rejection(zim.sendPeerMessage({ type: ZIMMessageType.Command, message: new Uint8Array([1]) }, 'bob'));
  const attrs = rejection(zim.setRoomAttributes({ a: '1' }, 'lobby'));
  await waitFor(() => server.ops().filter((o) => o === 'sendPeerMessage').length === 2 && server.ops().includes('setRoomAttributes'), 'requests');
  hold = false;
  server.conn('alice').drop();
  const cmdErr = await command;
  assert.equal(cmdErr.code, ZIMErrorCode.MessageNetworkError);
  assert.match(cmdErr.message, /^sendPeerMessage: the connection was lost/);
  assert.equal((await attrs).code, ZIMErrorCode.NetworkError);
  const { message } = await text;
  const sends = server.requests.filter((r) => r.op === 'sendPeerMessage' && r.data.type === 1);
  assert.equal(sends.length, 2, 'the Text send went out twice');
  assert.equal(sends[0].data.localMessageID, sends[1].data.localMessageID);
  assert.equal(message.localMessageID, sends[0].data.localMessageID);
  assert.equal(server.user('bob').inbox.length, 1, 'stored once');
});

test('calls queued while reconnecting fail with 6000104 / 6000204 when their deadline passes', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server, { requestTimeout: 200 });
  await zim.login({ userID: 'alice' }, 'good');
  server.refuse = () => true;
  server.conn('alice').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Reconnecting, 'reconnecting');
  const [q, s] = await Promise.all([
    rejection(zim.queryRoomOnlineMemberCount('lobby')),
    rejection(zim.sendRoomMessage({ type: 1, message: 'x' }, 'lobby')),
  ]);
  assert.deepEqual(q, { code: 6000104, message: 'queryRoomOnlineMemberCount: no connection within 200 ms' });
  assert.equal(s.code, 6000204);
});

test('kicked out: Disconnected / KickedOut, rooms KickedOut, no reconnect, later calls 6000121', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  await zim.enterRoom({ roomID: 'lobby' });
  server.conn('alice').disconnect('kickedOut', 'user alice logged in on another connection', false, 4001);
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Disconnected, 'disconnected');
  assert.deepEqual(states(events).at(-1), [
    ZIMConnectionState.Disconnected,
    ZIMConnectionEvent.KickedOut,
    'kickedOut: user alice logged in on another connection',
  ]);
  assert.deepEqual(named(events, 'roomStateChanged').at(-1), {
    roomID: 'lobby',
    state: ZIMRoomState.Disconnected,
    event: ZIMRoomEvent.KickedOut,
    extendedData: '',
  });
  await sleep(100);
  assert.equal(server.history.length, 1, 'no reconnect');
  assert.equal((await rejection(zim.sendPeerMessage({ type: 1, message: 'x' }, 'bob'))).code, ZIMErrorCode.NotLoggedIn);
});

test('a disconnect the server wants recovered (serverShutdown) reconnects, with the reason in extendedData', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  server.conn('alice').disconnect('serverShutdown', 'the server is stopping', true, 4008);
  await waitFor(() => states(events).at(-1)?.[2] === 'reconnected', 'reconnected');
  assert.deepEqual(states(events).at(-2), [
    ZIMConnectionState.Reconnecting,
    ZIMConnectionEvent.LoginInterrupted,
    'serverShutdown: the server is stopping',
  ]);
});

test('an expired token at re-login ends the session: Disconnected / TokenExpired', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  server.on('login', () => ({ code: 6000106, message: 'token: expired' }));
  server.conn('alice').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Disconnected, 'disconnected');
  assert.deepEqual(states(events).at(-1), [
    ZIMConnectionState.Disconnected,
    ZIMConnectionEvent.TokenExpired,
    '6000106 TokenExpired: token: expired',
  ]);
});

test('reconnecting gives up after reconnectGiveUpAfter: Disconnected / LoginTimeout', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server, { reconnectGiveUpAfter: 150, reconnectMinDelay: 10, reconnectMaxDelay: 40 });
  await zim.login({ userID: 'alice' }, 'good');
  await zim.enterRoom({ roomID: 'lobby' });
  server.refuse = () => true;
  server.conn('alice').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Disconnected, 'gave up', 3000);
  const [state, event, extended] = states(events).at(-1);
  assert.equal(state, ZIMConnectionState.Disconnected);
  assert.equal(event, ZIMConnectionEvent.LoginTimeout);
  assert.match(extended, /gave up reconnecting/);
  assert.equal(named(events, 'roomStateChanged').at(-1).event, ZIMRoomEvent.NetworkDisconnected);
});

test('a silent server is detected: the heartbeat gets no reply, the SDK reconnects', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server, { heartbeatInterval: 50, requestTimeout: 200 });
  await zim.login({ userID: 'alice' }, 'good');
  server.on('ping', () => NO_REPLY);
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Reconnecting, 'reconnecting', 3000);
  assert.equal(states(events).at(-1)[2], 'the server stopped answering');
  server.on('ping', () => ({}));
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Connected, 'reconnected', 3000);
});

test('the browser going offline drops the connection at once; coming online reconnects without waiting', async () => {
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  try {
    const server = new FakeServer();
    const { zim, events, logs } = makeZim(server, { watchNetwork: true, reconnectMinDelay: 5000, reconnectMaxDelay: 5000 });
    await zim.login({ userID: 'alice' }, 'good');
    server.refuse = () => true;
    target.dispatchEvent(new Event('offline'));
    assert.equal(zim.getConnectionState(), ZIMConnectionState.Reconnecting);
    assert.equal(states(events).at(-1)[2], 'the browser went offline');
    await sleep(20);
    server.refuse = () => false;
    const started = Date.now();
    target.dispatchEvent(new Event('online'));
    await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Connected, 'reconnected', 2000);
    assert.ok(Date.now() - started < 1000, 'did not wait for the 2.5-5 s backoff');
    assert.ok(logs.some((l) => l.includes('back online')));
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test('logout while reconnecting ends the session locally', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  server.refuse = () => true;
  server.conn('alice').drop();
  await waitFor(() => zim.getConnectionState() === ZIMConnectionState.Reconnecting, 'reconnecting');
  await zim.logout();
  assert.deepEqual(states(events).at(-1), [ZIMConnectionState.Disconnected, ZIMConnectionEvent.Success, 'logged out while not connected']);
  const count = server.history.length;
  await sleep(100);
  assert.equal(server.history.length, count, 'no more attempts');
});
