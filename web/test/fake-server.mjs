// A fake WebSocket and a small in-memory server speaking docs/protocol.md, for
// the SDK's unit tests. Everything is asynchronous like a real network: a
// socket opens on a later turn, and frames travel one setImmediate each, in
// order. Tests reach into the server to push, drop connections, refuse
// connections, or take over an op.

/** Returned by an op handler that answers later (or never). */
export const NO_REPLY = Symbol('no reply');

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

/** One server-side connection. */
export class Conn {
  constructor(server, client) {
    this.server = server;
    this.client = client;
    this.url = client.url;
    this.userID = null;
    this.closed = false;
    /** Every request frame received, parsed. */
    this.requests = [];
  }

  /** Sends a frame object to the client. */
  sendFrame(frame) {
    if (this.closed) return;
    const text = JSON.stringify(frame);
    setImmediate(() => {
      if (this.client.readyState === OPEN && this.client.onmessage) {
        this.client.onmessage({ data: text });
      }
    });
  }

  reply(id, data = {}) {
    this.sendFrame({ v: 1, id, code: 0, message: 'ok', data });
  }

  error(id, code, message) {
    this.sendFrame({ v: 1, id, code, message });
  }

  push(name, data) {
    this.sendFrame({ v: 1, push: name, data });
  }

  /** The network breaks (or the server closes): the client sees a close event. */
  drop(code = 1006, reason = '') {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    setImmediate(() => {
      if (this.client.readyState === CLOSED) return;
      this.client.readyState = CLOSED;
      this.client.onclose?.({ code, reason });
    });
  }

  /** The server's polite close: a `disconnect` push, then the close frame. */
  disconnect(reason, message, reconnect, code) {
    this.push('disconnect', { reason, message, reconnect });
    this.drop(code, reason);
  }
}

/** An in-memory server; `server.WebSocket` is the constructor to give the SDK. */
export class FakeServer {
  constructor() {
    /** Open connections. */
    this.conns = [];
    /** Every connection ever made, with its requests. */
    this.history = [];
    /** URLs (or a predicate) whose connections are refused. */
    this.refuse = () => false;
    /** op -> (conn, frame) => data | {code, message} | NO_REPLY */
    this.handlers = new Map();
    /** userID -> { inbox: [wire message], acked, online: Conn|null } */
    this.users = new Map();
    /** roomID -> { seq, messages: [wire message], members: Map<userID, userName> } */
    this.rooms = new Map();
    /** (sender, localMessageID) -> reply data, for send dedupe. */
    this.sent = new Map();
    this.nextMessageID = 1;
    /** When true, login ignores lastInboxSeq/roomSeqs and replays everything (to test dedupe). */
    this.replayEverything = false;
    /** Rooms the server "forgot" for a user at the next login (not restored). */
    this.dontRestore = new Set();
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = CONNECTING;
        this.onopen = null;
        this.onmessage = null;
        this.onclose = null;
        this.onerror = null;
        this.sentFrames = [];
        server.accept(this);
      }

      send(text) {
        if (this.readyState !== OPEN) {
          throw new Error('InvalidStateError: the socket is not open');
        }
        this.sentFrames.push(text);
        const conn = this.conn;
        setImmediate(() => conn.closed || server.receive(conn, text));
      }

      close(code = 1000, reason = '') {
        if (this.readyState === CLOSED) return;
        this.readyState = CLOSED;
        if (this.conn) {
          this.conn.closed = true;
          server.forget(this.conn);
        }
        setImmediate(() => this.onclose?.({ code, reason }));
      }
    };
  }

  user(userID) {
    let u = this.users.get(userID);
    if (!u) {
      u = { inbox: [], acked: 0, online: null, convSeqs: new Map() };
      this.users.set(userID, u);
    }
    return u;
  }

  room(roomID) {
    let r = this.rooms.get(roomID);
    if (!r) {
      r = { seq: 0, messages: [], members: new Map() };
      this.rooms.set(roomID, r);
    }
    return r;
  }

  accept(client) {
    setImmediate(() => {
      if (client.readyState !== CONNECTING) return;
      if (this.refuse(client.url)) {
        client.readyState = CLOSED;
        client.onerror?.({});
        client.onclose?.({ code: 1006, reason: '' });
        return;
      }
      const conn = new Conn(this, client);
      client.conn = conn;
      this.conns.push(conn);
      this.history.push(conn);
      client.readyState = OPEN;
      client.onopen?.({});
    });
  }

  forget(conn) {
    this.conns = this.conns.filter((c) => c !== conn);
    if (conn.userID) {
      const u = this.user(conn.userID);
      if (u.online === conn) u.online = null;
    }
  }

  /** The latest connection of a user (or the latest connection at all). */
  conn(userID) {
    const list = userID ? this.conns.filter((c) => c.userID === userID) : this.conns;
    return list[list.length - 1];
  }

  /** Every request frame of every connection, in order: [{conn, op, id, data}]. */
  get requests() {
    return this.history.flatMap((c) => c.requests.map((f) => ({ conn: c, ...f })));
  }

  ops() {
    return this.requests.map((r) => r.op);
  }

  on(op, handler) {
    this.handlers.set(op, handler);
  }

  receive(conn, text) {
    const frame = JSON.parse(text);
    conn.requests.push(frame);
    const handler = this.handlers.get(frame.op) ?? this[`op_${frame.op}`]?.bind(this);
    if (frame.op !== 'login' && conn.userID === null) {
      conn.error(frame.id, 6000121, `${frame.op} needs a login`);
      return;
    }
    if (!handler) {
      conn.error(frame.id, 6000001, `op: unknown ${frame.op}`);
      return;
    }
    const result = handler(conn, frame);
    if (result === NO_REPLY) return;
    if (result && typeof result.code === 'number' && result.code !== 0) {
      conn.error(frame.id, result.code, result.message);
    } else {
      conn.reply(frame.id, result ?? {});
    }
  }

  // ----- messages the "other users" send -------------------------------------

  /** `from` sends a Text peer message to `to`: stored, pushed if `to` is online. */
  peerMessage(from, to, text, localMessageID = this.nextMessageID * 10) {
    const u = this.user(to);
    const convKey = [from, to].sort().join('|');
    const convSeq = (this.user(from).convSeqs.get(convKey) ?? 0) + 1;
    this.user(from).convSeqs.set(convKey, convSeq);
    this.user(to).convSeqs.set(convKey, convSeq);
    const m = {
      type: 1,
      message: text,
      messageID: this.nextMessageID++,
      localMessageID,
      senderUserID: from,
      timestamp: 1764120000000 + this.nextMessageID,
      conversationID: from,
      conversationType: 0,
      conversationSeq: convSeq,
      inboxSeq: u.inbox.length + 1,
      priority: 1,
    };
    u.inbox.push(m);
    u.online?.push('receivePeerMessage', { fromUserID: from, messageList: [m] });
    return m;
  }

  /** `from` sends a Text message to a room: stored, pushed to the other online members. */
  roomMessage(roomID, from, text, localMessageID = this.nextMessageID * 10) {
    const r = this.room(roomID);
    r.seq += 1;
    const m = {
      type: 1,
      message: text,
      messageID: this.nextMessageID++,
      localMessageID,
      senderUserID: from,
      timestamp: 1764120000000 + this.nextMessageID,
      conversationID: roomID,
      conversationType: 1,
      conversationSeq: r.seq,
      priority: 1,
    };
    r.messages.push(m);
    for (const member of r.members.keys()) {
      if (member !== from) this.user(member).online?.push('receiveRoomMessage', { fromRoomID: roomID, messageList: [m] });
    }
    return m;
  }

  // ----- default ops -------------------------------------------------------------

  op_login(conn, frame) {
    const data = frame.data;
    if (data.token === 'expired') return { code: 6000106, message: 'token: expired' };
    if (data.token === 'broken') return { code: 6000103, message: 'token: cannot be decoded' };
    if (typeof data.appID !== 'number') return { code: 6000001, message: 'appID: missing' };
    const u = this.user(data.userID);
    if (u.online && u.online !== conn) {
      u.online.disconnect('kickedOut', `user ${data.userID} logged in on another connection`, false, 4001);
    }
    conn.userID = data.userID;
    conn.userName = data.userName ?? '';
    u.online = conn;
    conn.reply(frame.id, {
      userID: data.userID,
      serverTime: 1764120000000,
      tokenExpire: 1764206400,
      inboxSeq: u.inbox.length,
      heartbeatIntervalMs: 25000,
    });
    // Peer catch-up, grouped by sender runs, then syncComplete.
    const after = this.replayEverything ? 0 : (data.lastInboxSeq ?? u.acked);
    const missed = u.inbox.filter((m) => m.inboxSeq > after);
    let run = [];
    const flush = () => {
      if (run.length) conn.push('receivePeerMessage', { fromUserID: run[0].senderUserID, messageList: run });
      run = [];
    };
    for (const m of missed) {
      if (run.length && run[0].senderUserID !== m.senderUserID) flush();
      run.push(m);
    }
    flush();
    conn.push('syncComplete', { inboxSeq: u.inbox.length });
    // Rooms: restore the ones the user is still a member of.
    for (const [roomID, r] of this.rooms) {
      if (!r.members.has(data.userID) || this.dontRestore.has(roomID)) continue;
      // As the real server does: the missed messages first, then the state.
      const seqs = data.roomSeqs ?? {};
      if (roomID in seqs || this.replayEverything) {
        const last = this.replayEverything ? 0 : seqs[roomID];
        const list = r.messages.filter((m) => m.conversationSeq > last);
        if (list.length) conn.push('receiveRoomMessage', { fromRoomID: roomID, messageList: list });
      }
      conn.push('roomStateChanged', { roomID, state: 2, event: 0, roomSeq: r.seq });
    }
    this.dontRestore.clear();
    return NO_REPLY; // replied above, before the pushes
  }

  op_ping() {
    return {};
  }

  op_logout(conn, frame) {
    conn.reply(frame.id, {});
    for (const r of this.rooms.values()) r.members.delete(conn.userID);
    conn.disconnect('logout', 'logged out', false, 4000);
    return NO_REPLY;
  }

  op_ackInbox(conn, { data }) {
    const u = this.user(conn.userID);
    if (data.inboxSeq > u.inbox.length) return { code: 6000001, message: 'inboxSeq: above the newest' };
    u.acked = Math.max(u.acked, data.inboxSeq);
    return {};
  }

  op_renewToken(conn, { data }) {
    if (data.token === 'expired') return { code: 6000106, message: 'token: expired' };
    return { token: data.token, tokenExpire: 1764292800 };
  }

  send(conn, data, isRoom) {
    const key = `${conn.userID}|${data.localMessageID}`;
    if (this.sent.has(key)) return this.sent.get(key);
    let reply;
    if (isRoom) {
      const r = this.rooms.get(data.roomID);
      if (!r) return { code: 6000301, message: `room ${data.roomID} does not exist` };
      if (!r.members.has(conn.userID)) return { code: 6000205, message: `you are not a member of room ${data.roomID}` };
      if (data.type === 1) {
        const m = this.roomMessage(data.roomID, conn.userID, data.message, data.localMessageID);
        reply = { messageID: m.messageID, localMessageID: data.localMessageID, timestamp: m.timestamp, conversationSeq: m.conversationSeq };
      } else {
        const m = { ...data, messageID: this.nextMessageID++, senderUserID: conn.userID, timestamp: 1764120009999, conversationID: data.roomID, conversationType: 1, conversationSeq: 0 };
        delete m.roomID;
        for (const member of r.members.keys()) {
          if (member !== conn.userID) this.user(member).online?.push('receiveRoomMessage', { fromRoomID: data.roomID, messageList: [m] });
        }
        reply = { messageID: m.messageID, localMessageID: data.localMessageID, timestamp: m.timestamp, conversationSeq: 0 };
      }
    } else {
      if (data.type === 20) return { code: 6000001, message: 'type: Barrage (20) is room-only' };
      if (data.type === 1) {
        const m = this.peerMessage(conn.userID, data.toUserID, data.message, data.localMessageID);
        reply = { messageID: m.messageID, localMessageID: data.localMessageID, timestamp: m.timestamp, conversationSeq: m.conversationSeq };
      } else {
        const m = { type: data.type, message: data.message, messageID: this.nextMessageID++, localMessageID: data.localMessageID, senderUserID: conn.userID, timestamp: 1764120009999, conversationID: conn.userID, conversationType: 0, conversationSeq: 0, priority: data.priority };
        this.user(data.toUserID).online?.push('receivePeerMessage', { fromUserID: conn.userID, messageList: [m] });
        reply = { messageID: m.messageID, localMessageID: data.localMessageID, timestamp: m.timestamp, conversationSeq: 0 };
      }
    }
    this.sent.set(key, reply);
    return reply;
  }

  op_sendPeerMessage(conn, { data }) {
    return this.send(conn, data, false);
  }

  op_sendRoomMessage(conn, { data }) {
    return this.send(conn, data, true);
  }

  join(conn, roomID, roomName, create, mustExist, lastSeq) {
    const exists = this.rooms.has(roomID);
    if (mustExist && !exists) return { code: 6000304, message: `room ${roomID} does not exist` };
    if (create === 'only' && exists) return { code: 6000311, message: `room ${roomID} exists` };
    const r = this.room(roomID);
    r.name = r.name ?? roomName ?? '';
    const fresh = !r.members.has(conn.userID);
    r.members.set(conn.userID, conn.userName);
    if (fresh) {
      for (const member of r.members.keys()) {
        if (member !== conn.userID) {
          this.user(member).online?.push('roomMemberJoined', { roomID, memberList: [{ userID: conn.userID, userName: conn.userName }] });
        }
      }
    }
    if (typeof lastSeq === 'number') {
      const list = r.messages.filter((m) => m.conversationSeq > lastSeq);
      if (list.length) conn.push('receiveRoomMessage', { fromRoomID: roomID, messageList: list });
    }
    return { roomInfo: { roomID, roomName: r.name }, roomSeq: r.seq, created: !exists };
  }

  op_createRoom(conn, { data }) {
    return this.join(conn, data.roomInfo.roomID, data.roomInfo.roomName, 'only', false);
  }

  op_enterRoom(conn, { data }) {
    return this.join(conn, data.roomInfo.roomID, data.roomInfo.roomName, 'maybe', false, data.lastSeq);
  }

  op_joinRoom(conn, { data }) {
    return this.join(conn, data.roomID, undefined, 'no', true, data.lastSeq);
  }

  op_leaveRoom(conn, { data }) {
    const r = this.rooms.get(data.roomID);
    if (!r) return { code: 6000301, message: `room ${data.roomID} does not exist` };
    if (!r.members.has(conn.userID)) return { code: 6000305, message: `you are not in room ${data.roomID}` };
    r.members.delete(conn.userID);
    for (const member of r.members.keys()) {
      this.user(member).online?.push('roomMemberLeft', { roomID: data.roomID, memberList: [{ userID: conn.userID, userName: conn.userName }] });
    }
    return { roomID: data.roomID };
  }
}
