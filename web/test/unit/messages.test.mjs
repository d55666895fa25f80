// Sends, receives, rooms, attributes and history against the fake server: wire
// shapes, result shapes, event shapes, dedupe.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  ZIM,
  ZIMConversationType,
  ZIMErrorCode,
  ZIMMessageDirection,
  ZIMMessagePriority,
  ZIMMessageSentStatus,
  ZIMMessageType,
  ZIMRoomEvent,
  ZIMRoomState,
} from '../../dist/zim.js';
import { FakeServer, NO_REPLY } from '../fake-server.mjs';
import { makeZim, named, rejection, texts, waitFor } from '../helpers.mjs';

afterEach(() => ZIM.getInstance()?.destroy());

async function loggedIn(server, overrides) {
  const made = makeZim(server, overrides);
  await made.zim.login({ userID: 'alice', userName: 'Alice' }, 'good');
  return made;
}

test('sendPeerMessage puts ZIM fields on the wire and resolves {message} with the stored message', async () => {
  const server = new FakeServer();
  const { zim } = await loggedIn(server);
  const before = Date.now() * 1000;
  const { message } = await zim.sendPeerMessage({ type: ZIMMessageType.Text, message: 'hello bob' }, 'bob', {
    priority: ZIMMessagePriority.High,
  });
  const req = server.requests.find((r) => r.op === 'sendPeerMessage');
  assert.equal(req.data.toUserID, 'bob');
  assert.equal(req.data.type, 1);
  assert.equal(req.data.message, 'hello bob');
  assert.equal(req.data.priority, 3);
  assert.ok(req.data.localMessageID >= before && req.data.localMessageID < 2 ** 53);
  const stored = server.user('bob').inbox[0];
  assert.deepEqual(message, {
    type: ZIMMessageType.Text,
    message: 'hello bob',
    messageID: stored.messageID,
    localMessageID: req.data.localMessageID,
    senderUserID: 'alice',
    timestamp: stored.timestamp,
    conversationID: 'bob',
    conversationType: ZIMConversationType.Peer,
    direction: ZIMMessageDirection.Send,
    sentStatus: ZIMMessageSentStatus.Success,
    orderKey: 1,
    conversationSeq: 1,
    priority: ZIMMessagePriority.High,
  });
  // localMessageIDs increase.
  const second = await zim.sendPeerMessage({ type: 1, message: 'again' }, 'bob');
  assert.ok(second.message.localMessageID > message.localMessageID);
  assert.equal(second.message.conversationSeq, 2);
});

test('Command messages travel as base64 and arrive as bytes', async () => {
  const server = new FakeServer();
  const { zim, events } = await loggedIn(server);
  const bytes = new Uint8Array([0, 1, 2, 255]);
  const { message } = await zim.sendPeerMessage({ type: ZIMMessageType.Command, message: bytes }, 'bob');
  assert.equal(server.requests.find((r) => r.op === 'sendPeerMessage').data.message, 'AAEC/w==');
  assert.deepEqual(message.message, bytes);
  assert.equal(message.conversationSeq, 0);
  // A string command is sent as its UTF-8 bytes.
  await zim.sendPeerMessage({ type: ZIMMessageType.Command, message: 'é' }, 'bob');
  assert.equal(server.requests.filter((r) => r.op === 'sendPeerMessage')[1].data.message, 'w6k=');
  server.conn('alice').push('receivePeerMessage', {
    fromUserID: 'bob',
    messageList: [{ type: 2, message: 'AAEC/w==', messageID: 9, localMessageID: 1, senderUserID: 'bob', timestamp: 5, conversationID: 'bob', conversationType: 0, conversationSeq: 0, priority: 2 }],
  });
  await waitFor(() => named(events, 'receivePeerMessage').length === 1, 'the command');
  const got = named(events, 'receivePeerMessage')[0].messageList[0];
  assert.ok(got.message instanceof Uint8Array);
  assert.deepEqual([...got.message], [0, 1, 2, 255]);
  assert.equal(got.priority, ZIMMessagePriority.Medium);
  assert.equal('inboxSeq' in got, false, 'unstored messages have no inboxSeq');
});

test('server refusals reject with {code, message} unchanged', async () => {
  const server = new FakeServer();
  const { zim } = await loggedIn(server);
  assert.deepEqual(await rejection(zim.sendRoomMessage({ type: 1, message: 'x' }, 'nowhere')), {
    code: 6000301,
    message: 'room nowhere does not exist',
  });
  await server.room('lobby');
  assert.deepEqual(await rejection(zim.sendRoomMessage({ type: 1, message: 'x' }, 'lobby')), {
    code: 6000205,
    message: 'you are not a member of room lobby',
  });
  assert.deepEqual(await rejection(zim.joinRoom('missing')), { code: 6000304, message: 'room missing does not exist' });
});

test('the SDK limits Text + Command sends to sendRatePerSecond (6000005); Barrage is not limited', async () => {
  const server = new FakeServer();
  const { zim } = await loggedIn(server, { sendRatePerSecond: 5 });
  await zim.enterRoom({ roomID: 'lobby' });
  const results = await Promise.allSettled(
    Array.from({ length: 7 }, (_, i) => zim.sendPeerMessage({ type: 1, message: `m${i}` }, 'bob')),
  );
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected']);
  assert.deepEqual(results[5].reason, { code: 6000005, message: 'at most 5 Text and Command messages per second may be sent' });
  const barrage = await zim.sendRoomMessage({ type: ZIMMessageType.Barrage, message: 'wow' }, 'lobby');
  assert.equal(barrage.message.type, ZIMMessageType.Barrage);
  assert.equal(server.user('bob').inbox.length, 5, 'refused sends never reached the server');
});

test('receivePeerMessage: ZIM shape, one event per push, each stored message once by inboxSeq', async () => {
  const server = new FakeServer();
  const { events } = await loggedIn(server);
  const m1 = server.peerMessage('bob', 'alice', 'one');
  server.peerMessage('bob', 'alice', 'two');
  await waitFor(() => named(events, 'receivePeerMessage').length === 2, 'two pushes');
  // The server repeats itself (e.g. two nodes relayed the same message).
  const conn = server.conn('alice');
  conn.push('receivePeerMessage', { fromUserID: 'bob', messageList: server.user('alice').inbox });
  server.peerMessage('carol', 'alice', 'three');
  await waitFor(() => texts(events, 'receivePeerMessage').length >= 3, 'three messages');
  assert.deepEqual(texts(events, 'receivePeerMessage'), ['one', 'two', 'three']);
  const first = named(events, 'receivePeerMessage')[0];
  assert.deepEqual(Object.keys(first).sort(), ['fromConversationID', 'fromUserID', 'messageList']);
  assert.equal(first.fromConversationID, 'bob');
  assert.deepEqual(first.messageList[0], {
    type: 1,
    message: 'one',
    messageID: m1.messageID,
    localMessageID: m1.localMessageID,
    senderUserID: 'bob',
    timestamp: m1.timestamp,
    conversationID: 'bob',
    conversationType: ZIMConversationType.Peer,
    direction: ZIMMessageDirection.Receive,
    sentStatus: ZIMMessageSentStatus.Success,
    orderKey: 1,
    conversationSeq: 1,
    inboxSeq: 1,
    priority: 1,
  });
  assert.equal(named(events, 'receivePeerMessage')[2].fromConversationID, 'carol');
});

test('rooms: enter/join/leave results, roomStateChanged, member events, online count', async () => {
  const server = new FakeServer();
  const { zim, events } = await loggedIn(server);
  const entered = await zim.enterRoom({ roomID: 'lobby', roomName: 'The lobby' }, { roomDestroyDelayTime: 60 });
  assert.deepEqual(entered, { roomInfo: { baseInfo: { roomID: 'lobby', roomName: 'The lobby' } }, created: true });
  const enterReq = server.requests.find((r) => r.op === 'enterRoom');
  assert.deepEqual(enterReq.data, {
    roomInfo: { roomID: 'lobby', roomName: 'The lobby' },
    config: { roomAttributes: {}, roomDestroyDelayTime: 60 },
  });
  assert.deepEqual(named(events, 'roomStateChanged'), [
    { roomID: 'lobby', state: ZIMRoomState.Connected, event: ZIMRoomEvent.ActiveCreate, extendedData: '' },
  ]);
  // Someone else joins and leaves.
  const conn = server.conn('alice');
  conn.push('roomMemberJoined', { roomID: 'lobby', memberList: [{ userID: 'bob', userName: 'Bob' }] });
  conn.push('roomMemberLeft', { roomID: 'lobby', memberList: [{ userID: 'bob', userName: 'Bob' }] });
  await waitFor(() => named(events, 'roomMemberLeft').length === 1, 'member events');
  assert.deepEqual(named(events, 'roomMemberJoined'), [{ roomID: 'lobby', memberList: [{ userID: 'bob', userName: 'Bob' }] }]);
  assert.deepEqual(named(events, 'roomMemberLeft'), [{ roomID: 'lobby', memberList: [{ userID: 'bob', userName: 'Bob' }] }]);

  await zim.createRoom({ roomID: 'second' });
  assert.deepEqual((await rejection(zim.createRoom({ roomID: 'second' }))).code, ZIMErrorCode.RoomAlreadyExists);
  server.on('queryRoomOnlineMemberCount', (_c, { data }) => ({ roomID: data.roomID, count: 61 }));
  assert.deepEqual(await zim.queryRoomOnlineMemberCount('lobby'), { roomID: 'lobby', count: 61 });
  server.on('queryRoomMemberList', (_c, { data }) => ({
    roomID: data.roomID,
    memberList: [{ userID: 'alice', userName: 'Alice' }],
    nextFlag: data.config.nextFlag === '' ? 'alice' : '',
  }));
  const page = await zim.queryRoomMemberList('lobby', { nextFlag: '', count: 50 });
  assert.deepEqual(page, { roomID: 'lobby', memberList: [{ userID: 'alice', userName: 'Alice' }], nextFlag: 'alice' });
  assert.deepEqual(server.requests.find((r) => r.op === 'queryRoomMemberList').data, {
    roomID: 'lobby',
    config: { nextFlag: '', count: 50 },
  });
  assert.deepEqual(await zim.leaveRoom('lobby'), { roomID: 'lobby' });
  assert.deepEqual(named(events, 'roomStateChanged').at(-1), {
    roomID: 'lobby',
    state: ZIMRoomState.Disconnected,
    event: ZIMRoomEvent.Success,
    extendedData: '',
  });
  const joined = await zim.joinRoom('lobby');
  assert.deepEqual(joined, { roomInfo: { baseInfo: { roomID: 'lobby', roomName: 'The lobby' } } });
  assert.equal(named(events, 'roomStateChanged').at(-1).event, ZIMRoomEvent.ActiveEnter);
});

test('receiveRoomMessage: each stored message once, out-of-order seqs tolerated, own messages dropped', async () => {
  const server = new FakeServer();
  const { zim, events } = await loggedIn(server);
  await zim.enterRoom({ roomID: 'lobby' });
  const mine = await zim.sendRoomMessage({ type: 1, message: 'mine' }, 'lobby');
  assert.equal(mine.message.conversationSeq, 1);
  assert.equal(mine.message.conversationType, ZIMConversationType.Room);
  const r = server.room('lobby');
  r.members.set('bob', 'Bob');
  const m2 = server.roomMessage('lobby', 'bob', 'two');
  const m3 = { ...m2, messageID: 99, conversationSeq: 3, message: 'three' };
  const m4 = { ...m2, messageID: 100, conversationSeq: 4, message: 'four' };
  const conn = server.conn('alice');
  // Seq 4 before 3 (relayed by different nodes), duplicates, and the own message replayed.
  conn.push('receiveRoomMessage', { fromRoomID: 'lobby', messageList: [m4] });
  conn.push('receiveRoomMessage', { fromRoomID: 'lobby', messageList: [r.messages[0], m2, m3, m4] });
  conn.push('receiveRoomMessage', { fromRoomID: 'lobby', messageList: [m3] });
  // Unstored (seq 0) messages are never deduped away.
  const barrage = { ...m2, type: 20, messageID: 101, conversationSeq: 0, message: 'wow' };
  conn.push('receiveRoomMessage', { fromRoomID: 'lobby', messageList: [barrage, barrage] });
  await waitFor(() => texts(events, 'receiveRoomMessage').length >= 5, 'room messages');
  await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(texts(events, 'receiveRoomMessage'), ['two', 'four', 'three', 'wow', 'wow']);
  const first = named(events, 'receiveRoomMessage')[0];
  assert.deepEqual(Object.keys(first).sort(), ['fromConversationID', 'fromRoomID', 'messageList']);
  assert.equal(first.fromConversationID, 'lobby');
  assert.equal(first.messageList[0].conversationType, ZIMConversationType.Room);
  assert.equal(first.messageList[0].direction, ZIMMessageDirection.Receive);
});

test('room attributes: set, delete, query, and a batch in one request', async () => {
  const server = new FakeServer();
  const { zim, events } = await loggedIn(server);
  await zim.enterRoom({ roomID: 'lobby' });
  server.on('setRoomAttributes', (_c, { data }) => ({ roomID: data.roomID, errorKeys: ['owned'] }));
  server.on('deleteRoomAttributes', (_c, { data }) => ({ roomID: data.roomID, errorKeys: [] }));
  server.on('queryRoomAllAttributes', (_c, { data }) => ({ roomID: data.roomID, roomAttributes: { topic: 'go' } }));
  server.on('batchRoomAttributes', (_c, { data }) => ({ roomID: data.roomID, errorKeys: ['b'] }));
  assert.deepEqual(await zim.setRoomAttributes({ topic: 'go', owned: 'x' }, 'lobby', { isForce: false }), {
    roomID: 'lobby',
    errorKeys: ['owned'],
  });
  assert.deepEqual(server.requests.find((r) => r.op === 'setRoomAttributes').data, {
    roomID: 'lobby',
    roomAttributes: { topic: 'go', owned: 'x' },
    config: { isForce: false, isUpdateOwner: false, isDeleteAfterOwnerLeft: false },
  });
  assert.deepEqual(await zim.deleteRoomAttributes(['topic'], 'lobby', { isForce: true }), { roomID: 'lobby', errorKeys: [] });
  assert.deepEqual(server.requests.find((r) => r.op === 'deleteRoomAttributes').data, {
    roomID: 'lobby',
    keys: ['topic'],
    config: { isForce: true },
  });
  assert.deepEqual(await zim.queryRoomAllAttributes('lobby'), { roomID: 'lobby', roomAttributes: { topic: 'go' } });

  zim.beginRoomAttributesBatchOperation('lobby', { isForce: true });
  const setA = zim.setRoomAttributes({ a: '1' }, 'lobby');
  const delB = zim.deleteRoomAttributes(['b'], 'lobby');
  assert.deepEqual(await zim.endRoomAttributesBatchOperation('lobby'), { roomID: 'lobby', errorKeys: ['b'] });
  assert.deepEqual(await setA, { roomID: 'lobby', errorKeys: [] });
  assert.deepEqual(await delB, { roomID: 'lobby', errorKeys: ['b'] });
  const batches = server.requests.filter((r) => r.op === 'batchRoomAttributes');
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0].data, {
    roomID: 'lobby',
    roomAttributes: { a: '1' },
    keys: ['b'],
    config: { isForce: true, isUpdateOwner: false, isDeleteAfterOwnerLeft: false },
  });
  const conn = server.conn('alice');
  conn.push('roomAttributesUpdated', { roomID: 'lobby', infos: [{ action: 0, roomAttributes: { topic: 'rust' } }] });
  conn.push('roomAttributesBatchUpdated', { roomID: 'lobby', infos: [{ action: 1, roomAttributes: { b: '' } }] });
  await waitFor(() => named(events, 'roomAttributesBatchUpdated').length === 1, 'attribute events');
  assert.deepEqual(named(events, 'roomAttributesUpdated'), [{ roomID: 'lobby', infos: [{ action: 0, roomAttributes: { topic: 'rust' } }] }]);
  assert.deepEqual(named(events, 'roomAttributesBatchUpdated'), [{ roomID: 'lobby', infos: [{ action: 1, roomAttributes: { b: '' } }] }]);
});

test('queryHistoryMessage sends ZIM 2.x paging and returns {conversationID, conversationType, messageList}', async () => {
  const server = new FakeServer();
  const { zim } = await loggedIn(server);
  server.peerMessage('bob', 'alice', 'old');
  server.on('queryHistoryMessage', (_c, { data }) => ({
    conversationID: data.conversationID,
    conversationType: data.conversationType,
    messageList: [
      { type: 1, message: 'mine', messageID: 50, localMessageID: 1, senderUserID: 'alice', timestamp: 1, conversationID: 'bob', conversationType: 0, conversationSeq: 39, priority: 1 },
    ],
  }));
  const page = await zim.queryHistoryMessage('bob', ZIMConversationType.Peer, {
    nextMessage: { conversationSeq: 40 },
    count: 20,
    reverse: true,
  });
  assert.deepEqual(server.requests.find((r) => r.op === 'queryHistoryMessage').data, {
    conversationID: 'bob',
    conversationType: 0,
    config: { count: 20, reverse: true, nextMessage: { conversationSeq: 40 } },
  });
  assert.equal(page.conversationID, 'bob');
  assert.equal(page.conversationType, ZIMConversationType.Peer);
  assert.equal(page.messageList.length, 1);
  assert.equal(page.messageList[0].direction, ZIMMessageDirection.Send, 'own messages are Send');
  assert.equal(page.messageList[0].orderKey, 39);
  assert.equal((await rejection(zim.queryHistoryMessage('bob', 5, { count: 1 }))).code, ZIMErrorCode.ParamInvalid);
});

test('a handler that calls the SDK sees events in order', async () => {
  const server = new FakeServer();
  server.on('sendPeerMessage', (conn, frame) => {
    // Reply after a push the app reacts to.
    conn.push('tokenWillExpire', { second: 30 });
    conn.reply(frame.id, { messageID: 1, localMessageID: frame.data.localMessageID, timestamp: 1, conversationSeq: 1 });
    return NO_REPLY;
  });
  const { zim } = await loggedIn(server);
  const order = [];
  zim.on('tokenWillExpire', (z) => {
    order.push('tokenWillExpire');
    z.renewToken('fresh').then(() => order.push('renewed'));
  });
  zim.on('roomStateChanged', () => order.push('roomStateChanged'));
  await zim.sendPeerMessage({ type: 1, message: 'x' }, 'bob');
  order.push('sent');
  await waitFor(() => order.includes('renewed'), 'the renewal');
  const entered = zim.enterRoom({ roomID: 'r' }).then(() => order.push('entered'));
  await entered;
  assert.deepEqual(order, ['tokenWillExpire', 'sent', 'renewed', 'roomStateChanged', 'entered']);
});
