// create / login / logout / errors / request-reply correlation, against the fake server.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  ZIM,
  ZIMConnectionEvent,
  ZIMConnectionState,
  ZIMErrorCode,
  ZIMMessageType,
} from '../../dist/zim.js';
import { FakeServer, NO_REPLY } from '../fake-server.mjs';
import { makeZim, named, rejection, sleep, waitFor } from '../helpers.mjs';

afterEach(() => ZIM.getInstance()?.destroy());

test('create checks its config and keeps one instance, as ZIM does', () => {
  assert.deepEqual(
    catchThrow(() => ZIM.create(0)),
    { code: 6000001, message: 'appID: must be a non-zero 32-bit unsigned integer, got 0' },
  );
  // Node has no page to take the default server from.
  assert.equal(catchThrow(() => ZIM.create(1234)).code, ZIMErrorCode.ParamInvalid);
  assert.match(catchThrow(() => ZIM.create({ appID: 1, server: 'http://x/ws' })).message, /not a ws:\/\/ or wss:\/\/ URL/);
  const server = new FakeServer();
  const first = ZIM.create({ appID: 1, server: 'ws://h/ws', WebSocket: server.WebSocket });
  assert.ok(first);
  assert.equal(ZIM.getInstance(), first);
  assert.equal(ZIM.create({ appID: 1, server: 'ws://h/ws', WebSocket: server.WebSocket }), null);
  first.destroy();
  assert.equal(ZIM.getInstance(), null);
  const second = ZIM.create({ appID: 2, server: ['ws://a/ws', 'wss://b/ws'], WebSocket: server.WebSocket });
  assert.ok(second && second !== first);
  assert.equal(ZIM.getVersion(), '0.1.0');
});

test('create takes the page origin when no server is given', () => {
  const server = new FakeServer();
  globalThis.location = { protocol: 'https:', host: 'chat.example:8443' };
  const urls = [];
  const Spy = class extends server.WebSocket {
    constructor(url) {
      super(url);
      urls.push(url);
    }
  };
  try {
    const zim = ZIM.create({ appID: 7, WebSocket: Spy });
    zim.login({ userID: 'u' }, 'tok').catch(() => {});
    assert.deepEqual(urls, ['wss://chat.example:8443/ws']);
  } finally {
    delete globalThis.location;
  }
});

test('login sends the login op, resolves, and reports Connecting then Connected', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  assert.equal(zim.getConnectionState(), ZIMConnectionState.Disconnected);
  await zim.login({ userID: 'alice', userName: 'Alice' }, '04token');
  const login = server.requests.find((r) => r.op === 'login');
  assert.deepEqual(login.data, { appID: 1234567890, userID: 'alice', userName: 'Alice', token: '04token' });
  assert.equal(login.v, 1);
  assert.deepEqual(named(events, 'connectionStateChanged'), [
    { state: ZIMConnectionState.Connecting, event: ZIMConnectionEvent.ActiveLogin, extendedData: '' },
    { state: ZIMConnectionState.Connected, event: ZIMConnectionEvent.Success, extendedData: '' },
  ]);
  assert.equal(zim.getConnectionState(), ZIMConnectionState.Connected);
  // A second login is refused locally.
  const again = await rejection(zim.login({ userID: 'alice' }, '04token'));
  assert.equal(again.code, ZIMErrorCode.AlreadyLoggedIn);
});

test('a login the server refuses rejects with its code and ends Disconnected / LoginInterrupted', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  const err = await rejection(zim.login({ userID: 'alice' }, 'broken'));
  assert.deepEqual(err, { code: 6000103, message: 'token: cannot be decoded' });
  const states = named(events, 'connectionStateChanged');
  assert.deepEqual(states.at(-1), {
    state: ZIMConnectionState.Disconnected,
    event: ZIMConnectionEvent.LoginInterrupted,
    extendedData: '6000103 TokenInvalid: token: cannot be decoded',
  });
  // The instance can log in again with a good token.
  await zim.login({ userID: 'alice' }, 'good');
  assert.equal(zim.getConnectionState(), ZIMConnectionState.Connected);
});

test('login fails over to the next URL, and fails with 6000104 when none answers', async () => {
  const server = new FakeServer();
  server.refuse = (url) => url === 'ws://down.test/ws';
  const { zim } = makeZim(server, { server: ['ws://down.test/ws', 'ws://up.test/ws'] });
  await zim.login({ userID: 'alice' }, 'good');
  assert.deepEqual(server.history.map((c) => c.url), ['ws://up.test/ws']);
  await zim.logout();

  server.refuse = () => true;
  const { zim: zim2, events } = makeZim(server, { server: ['ws://a.test/ws', 'ws://b.test/ws'] });
  const err = await rejection(zim2.login({ userID: 'alice' }, 'good'));
  assert.equal(err.code, ZIMErrorCode.NetworkError);
  assert.match(err.message, /^login: cannot connect to ws:\/\/b\.test\/ws/);
  assert.deepEqual(named(events, 'connectionStateChanged').at(-1).event, ZIMConnectionEvent.LoginTimeout);
  assert.equal(zim2.getConnectionState(), ZIMConnectionState.Disconnected);
});

test('calls need a login (6000121), valid parameters (6000001), and a live instance (6000002)', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server);
  assert.deepEqual(await rejection(zim.joinRoom('lobby')), {
    code: 6000121,
    message: 'joinRoom needs a login: call login first',
  });
  assert.deepEqual(await rejection(zim.sendPeerMessage({ type: 1, message: 'x' }, 'bob')), {
    code: 6000121,
    message: 'sendPeerMessage needs a login: call login first',
  });
  assert.deepEqual(await rejection(zim.logout()), { code: 6000121, message: 'logout needs a login: call login first' });
  assert.deepEqual(await rejection(zim.login({ userID: '' }, 'tok')), { code: 6000001, message: 'userID: must not be empty' });
  assert.deepEqual(await rejection(zim.login({ userID: 'a' }, '')), { code: 6000001, message: 'token: must not be empty' });
  await zim.login({ userID: 'alice' }, 'good');
  assert.deepEqual(await rejection(zim.sendPeerMessage({ type: ZIMMessageType.Barrage, message: 'x' }, 'bob')), {
    code: 6000001,
    message: 'type: Barrage (20) cannot be sent to a user (Text and Command can)',
  });
  assert.deepEqual(await rejection(zim.sendRoomMessage({ type: ZIMMessageType.Image, message: 'x' }, 'r')), {
    code: 6000001,
    message: 'type: Image (11) cannot be sent to a room (Text, Command and Barrage can)',
  });
  assert.equal((await rejection(zim.sendPeerMessage({ type: 1, message: 'x' }, ''))).message, 'toUserID: must not be empty');
  assert.equal((await rejection(zim.queryRoomMemberList('r', { count: 0 }))).message, 'count: must be 1-100, got 0');
  assert.equal(server.ops().filter((op) => op !== 'login').length, 0, 'nothing invalid went to the server');
  zim.destroy();
  assert.equal((await rejection(zim.joinRoom('lobby'))).code, ZIMErrorCode.NotInitialized);
  assert.equal((await rejection(zim.login({ userID: 'a' }, 'b'))).code, ZIMErrorCode.NotInitialized);
});

test('replies are matched to their calls by id, whatever their order', async () => {
  const server = new FakeServer();
  const held = [];
  server.on('queryRoomOnlineMemberCount', (conn, frame) => {
    held.push({ conn, frame });
    return NO_REPLY;
  });
  const { zim } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  const a = zim.queryRoomOnlineMemberCount('a');
  const b = zim.queryRoomOnlineMemberCount('b');
  const c = rejection(zim.queryRoomOnlineMemberCount('c'));
  await waitFor(() => held.length === 3, 'three requests');
  const ids = held.map((h) => h.frame.id);
  assert.equal(new Set(ids).size, 3, 'request ids are unique');
  // Answer in reverse order; c fails.
  held[2].conn.error(held[2].frame.id, 6000205, 'you are not a member of room c');
  held[1].conn.reply(held[1].frame.id, { roomID: 'b', count: 2 });
  held[0].conn.reply(held[0].frame.id, { roomID: 'a', count: 1 });
  assert.deepEqual(await a, { roomID: 'a', count: 1 });
  assert.deepEqual(await b, { roomID: 'b', count: 2 });
  assert.deepEqual(await c, { code: 6000205, message: 'you are not a member of room c' });
});

test('a call without a reply fails after requestTimeout: 6000104, or 6000204 for sends', async () => {
  const server = new FakeServer();
  server.on('queryRoomAllAttributes', () => NO_REPLY);
  server.on('sendPeerMessage', () => NO_REPLY);
  const { zim } = makeZim(server, { requestTimeout: 250 });
  await zim.login({ userID: 'alice' }, 'good');
  const started = Date.now();
  const [q, s] = await Promise.all([
    rejection(zim.queryRoomAllAttributes('lobby')),
    rejection(zim.sendPeerMessage({ type: 1, message: 'hi' }, 'bob')),
  ]);
  assert.equal(q.code, ZIMErrorCode.NetworkError);
  assert.match(q.message, /^queryRoomAllAttributes: no reply within 250 ms$/);
  assert.equal(s.code, ZIMErrorCode.MessageNetworkError);
  const took = Date.now() - started;
  assert.ok(took >= 240 && took < 1500, `took ${took} ms`);
});

test('logout acknowledges the inbox first, then ends the session', async () => {
  const server = new FakeServer();
  server.peerMessage('bob', 'alice', 'waiting');
  const { zim, events } = makeZim(server, { ackInterval: 60_000 });
  await zim.login({ userID: 'alice' }, 'good');
  await waitFor(() => named(events, 'receivePeerMessage').length === 1, 'the offline message');
  await zim.logout();
  const ops = server.ops();
  assert.deepEqual(ops.slice(-2), ['ackInbox', 'logout']);
  assert.equal(server.requests.at(-2).data.inboxSeq, 1);
  assert.deepEqual(named(events, 'connectionStateChanged').at(-1), {
    state: ZIMConnectionState.Disconnected,
    event: ZIMConnectionEvent.Success,
    extendedData: 'logged out',
  });
  assert.equal((await rejection(zim.joinRoom('x'))).code, ZIMErrorCode.NotLoggedIn);
});

test('inbox positions are acknowledged every ackInterval', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server, { ackInterval: 50 });
  await zim.login({ userID: 'alice' }, 'good');
  server.peerMessage('bob', 'alice', 'one');
  server.peerMessage('bob', 'alice', 'two');
  await waitFor(() => named(events, 'receivePeerMessage').length === 2, 'two messages');
  await waitFor(() => server.user('alice').acked === 2, 'the ack of position 2');
});

test('a heartbeat ping goes out after heartbeatInterval of silence', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server, { heartbeatInterval: 150 });
  await zim.login({ userID: 'alice' }, 'good');
  await waitFor(() => server.ops().includes('ping'), 'a ping', 2000);
});

test('renewToken resolves {token} and the next re-login uses the new token', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'first');
  assert.deepEqual(await zim.renewToken('second'), { token: 'second', tokenExpire: 1764292800 });
  assert.deepEqual(await rejection(zim.renewToken('expired')), { code: 6000106, message: 'token: expired' });
  server.conn('alice').drop();
  await waitFor(() => server.history.length === 2 && server.history[1].requests.length > 0, 're-login');
  assert.equal(server.history[1].requests[0].data.token, 'second');
});

test('tokenWillExpire and error events carry ZIM shapes', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  server.conn('alice').push('tokenWillExpire', { second: 30 });
  server.conn('alice').sendFrame('not an object');
  await waitFor(() => named(events, 'error').length === 1, 'an error event');
  assert.deepEqual(named(events, 'tokenWillExpire'), [{ second: 30 }]);
  const [error] = named(events, 'error');
  assert.equal(error.code, 1);
  assert.match(error.message, /^unreadable frame from the server/);
});

test('off removes one handler or all of an event', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server);
  const seen = [];
  const one = (_z, d) => seen.push(['one', d.second]);
  const two = (_z, d) => seen.push(['two', d.second]);
  zim.on('tokenWillExpire', one);
  zim.on('tokenWillExpire', two);
  await zim.login({ userID: 'alice' }, 'good');
  const conn = server.conn('alice');
  conn.push('tokenWillExpire', { second: 3 });
  await waitFor(() => seen.length === 2, 'both handlers');
  zim.off('tokenWillExpire', one);
  conn.push('tokenWillExpire', { second: 2 });
  await waitFor(() => seen.length === 3, 'one handler');
  zim.off('tokenWillExpire');
  conn.push('tokenWillExpire', { second: 1 });
  await sleep(30);
  assert.deepEqual(seen, [['one', 3], ['two', 3], ['two', 2]]);
});

test('a handler that throws does not stop the others or the SDK', async () => {
  const server = new FakeServer();
  const { zim, events } = makeZim(server);
  zim.on('connectionStateChanged', () => {
    throw new Error('app bug');
  });
  const original = console.error;
  console.error = () => {};
  try {
    await zim.login({ userID: 'alice' }, 'good');
    assert.equal(named(events, 'connectionStateChanged').length, 2);
    zim.destroy();
  } finally {
    console.error = original;
  }
});

test('destroy fails waiting calls with 6000002 and reports Disconnected', async () => {
  const server = new FakeServer();
  server.on('queryRoomAllAttributes', () => NO_REPLY);
  const { zim, events } = makeZim(server);
  await zim.login({ userID: 'alice' }, 'good');
  const waiting = zim.queryRoomAllAttributes('lobby');
  await waitFor(() => server.ops().includes('queryRoomAllAttributes'), 'the request');
  zim.destroy();
  assert.equal((await rejection(waiting)).code, ZIMErrorCode.NotInitialized);
  assert.deepEqual(named(events, 'connectionStateChanged').at(-1), {
    state: ZIMConnectionState.Disconnected,
    event: ZIMConnectionEvent.Success,
    extendedData: 'destroyed',
  });
  zim.destroy(); // idempotent
});

function catchThrow(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

test('uploadLog posts the in-memory log (never the token) to /v1/logs of the login URL', async () => {
  const server = new FakeServer();
  const { zim } = makeZim(server, { server: 'ws://chat.test:8080/ws' });
  assert.deepEqual(await rejection(zim.uploadLog()), { code: 6000121, message: 'uploadLog needs a login: call login first' });
  await zim.login({ userID: 'alice' }, 'secret-token-04');
  const calls = [];
  const original = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init });
    return { status: calls.length === 1 ? 200 : 401, json: async () => (calls.length === 1 ? { code: 0 } : { code: 6000103, message: 'bad token' }) };
  };
  try {
    await zim.uploadLog();
    assert.equal(calls[0].url, 'http://chat.test:8080/v1/logs');
    assert.equal(calls[0].init.method, 'POST');
    assert.equal(calls[0].init.headers['X-Confab-User-Id'], 'alice');
    assert.equal(calls[0].init.headers['X-Confab-App-Id'], '1234567890');
    assert.equal(calls[0].init.headers.Authorization, 'Bearer secret-token-04');
    assert.match(calls[0].init.body, /login userID=alice/);
    assert.doesNotMatch(calls[0].init.body, /secret-token-04/);
    const err = await rejection(zim.uploadLog());
    assert.equal(err.code, ZIMErrorCode.LogUploadFailed);
    assert.match(err.message, /HTTP 401/);
  } finally {
    globalThis.fetch = original;
  }
});
