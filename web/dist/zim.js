// confab web SDK 0.1.0 (ZIM 1.x web API). Built from web/src by `npm run build`: do not edit.

// src/enums.ts
var ZIMConnectionState = /* @__PURE__ */ ((ZIMConnectionState2) => {
  ZIMConnectionState2[ZIMConnectionState2["Disconnected"] = 0] = "Disconnected";
  ZIMConnectionState2[ZIMConnectionState2["Connecting"] = 1] = "Connecting";
  ZIMConnectionState2[ZIMConnectionState2["Connected"] = 2] = "Connected";
  ZIMConnectionState2[ZIMConnectionState2["Reconnecting"] = 3] = "Reconnecting";
  return ZIMConnectionState2;
})(ZIMConnectionState || {});
var ZIMConnectionEvent = /* @__PURE__ */ ((ZIMConnectionEvent2) => {
  ZIMConnectionEvent2[ZIMConnectionEvent2["Success"] = 0] = "Success";
  ZIMConnectionEvent2[ZIMConnectionEvent2["ActiveLogin"] = 1] = "ActiveLogin";
  ZIMConnectionEvent2[ZIMConnectionEvent2["LoginTimeout"] = 2] = "LoginTimeout";
  ZIMConnectionEvent2[ZIMConnectionEvent2["LoginInterrupted"] = 3] = "LoginInterrupted";
  ZIMConnectionEvent2[ZIMConnectionEvent2["KickedOut"] = 4] = "KickedOut";
  ZIMConnectionEvent2[ZIMConnectionEvent2["TokenExpired"] = 5] = "TokenExpired";
  return ZIMConnectionEvent2;
})(ZIMConnectionEvent || {});
var ZIMRoomState = /* @__PURE__ */ ((ZIMRoomState2) => {
  ZIMRoomState2[ZIMRoomState2["Disconnected"] = 0] = "Disconnected";
  ZIMRoomState2[ZIMRoomState2["Connecting"] = 1] = "Connecting";
  ZIMRoomState2[ZIMRoomState2["Connected"] = 2] = "Connected";
  return ZIMRoomState2;
})(ZIMRoomState || {});
var ZIMRoomEvent = /* @__PURE__ */ ((ZIMRoomEvent2) => {
  ZIMRoomEvent2[ZIMRoomEvent2["Success"] = 0] = "Success";
  ZIMRoomEvent2[ZIMRoomEvent2["NetworkInterrupted"] = 1] = "NetworkInterrupted";
  ZIMRoomEvent2[ZIMRoomEvent2["NetworkDisconnected"] = 2] = "NetworkDisconnected";
  ZIMRoomEvent2[ZIMRoomEvent2["RoomNotExist"] = 3] = "RoomNotExist";
  ZIMRoomEvent2[ZIMRoomEvent2["ActiveCreate"] = 4] = "ActiveCreate";
  ZIMRoomEvent2[ZIMRoomEvent2["CreateFailed"] = 5] = "CreateFailed";
  ZIMRoomEvent2[ZIMRoomEvent2["ActiveEnter"] = 6] = "ActiveEnter";
  ZIMRoomEvent2[ZIMRoomEvent2["EnterFailed"] = 7] = "EnterFailed";
  ZIMRoomEvent2[ZIMRoomEvent2["KickedOut"] = 8] = "KickedOut";
  return ZIMRoomEvent2;
})(ZIMRoomEvent || {});
var ZIMMessageType = /* @__PURE__ */ ((ZIMMessageType2) => {
  ZIMMessageType2[ZIMMessageType2["Unknown"] = 0] = "Unknown";
  ZIMMessageType2[ZIMMessageType2["Text"] = 1] = "Text";
  ZIMMessageType2[ZIMMessageType2["Command"] = 2] = "Command";
  ZIMMessageType2[ZIMMessageType2["Image"] = 11] = "Image";
  ZIMMessageType2[ZIMMessageType2["File"] = 12] = "File";
  ZIMMessageType2[ZIMMessageType2["Audio"] = 13] = "Audio";
  ZIMMessageType2[ZIMMessageType2["Video"] = 14] = "Video";
  ZIMMessageType2[ZIMMessageType2["Barrage"] = 20] = "Barrage";
  ZIMMessageType2[ZIMMessageType2["System"] = 30] = "System";
  return ZIMMessageType2;
})(ZIMMessageType || {});
var ZIMConversationType = /* @__PURE__ */ ((ZIMConversationType2) => {
  ZIMConversationType2[ZIMConversationType2["Peer"] = 0] = "Peer";
  ZIMConversationType2[ZIMConversationType2["Room"] = 1] = "Room";
  return ZIMConversationType2;
})(ZIMConversationType || {});
var ZIMMessagePriority = /* @__PURE__ */ ((ZIMMessagePriority2) => {
  ZIMMessagePriority2[ZIMMessagePriority2["Low"] = 1] = "Low";
  ZIMMessagePriority2[ZIMMessagePriority2["Medium"] = 2] = "Medium";
  ZIMMessagePriority2[ZIMMessagePriority2["High"] = 3] = "High";
  return ZIMMessagePriority2;
})(ZIMMessagePriority || {});
var ZIMMessageDirection = /* @__PURE__ */ ((ZIMMessageDirection2) => {
  ZIMMessageDirection2[ZIMMessageDirection2["Send"] = 0] = "Send";
  ZIMMessageDirection2[ZIMMessageDirection2["Receive"] = 1] = "Receive";
  return ZIMMessageDirection2;
})(ZIMMessageDirection || {});
var ZIMMessageSentStatus = /* @__PURE__ */ ((ZIMMessageSentStatus2) => {
  ZIMMessageSentStatus2[ZIMMessageSentStatus2["Sending"] = 0] = "Sending";
  ZIMMessageSentStatus2[ZIMMessageSentStatus2["Success"] = 1] = "Success";
  ZIMMessageSentStatus2[ZIMMessageSentStatus2["Failed"] = 2] = "Failed";
  return ZIMMessageSentStatus2;
})(ZIMMessageSentStatus || {});
var ZIMRoomAttributesUpdateAction = /* @__PURE__ */ ((ZIMRoomAttributesUpdateAction2) => {
  ZIMRoomAttributesUpdateAction2[ZIMRoomAttributesUpdateAction2["Set"] = 0] = "Set";
  ZIMRoomAttributesUpdateAction2[ZIMRoomAttributesUpdateAction2["Delete"] = 1] = "Delete";
  return ZIMRoomAttributesUpdateAction2;
})(ZIMRoomAttributesUpdateAction || {});
var ZIMErrorCode = /* @__PURE__ */ ((ZIMErrorCode2) => {
  ZIMErrorCode2[ZIMErrorCode2["Success"] = 0] = "Success";
  ZIMErrorCode2[ZIMErrorCode2["Failed"] = 1] = "Failed";
  ZIMErrorCode2[ZIMErrorCode2["ParamInvalid"] = 6000001] = "ParamInvalid";
  ZIMErrorCode2[ZIMErrorCode2["NotInitialized"] = 6000002] = "NotInitialized";
  ZIMErrorCode2[ZIMErrorCode2["ServerRateLimit"] = 6000003] = "ServerRateLimit";
  ZIMErrorCode2[ZIMErrorCode2["InvalidAppId"] = 6000004] = "InvalidAppId";
  ZIMErrorCode2[ZIMErrorCode2["SdkRateLimit"] = 6000005] = "SdkRateLimit";
  ZIMErrorCode2[ZIMErrorCode2["LogUploadFailed"] = 6000010] = "LogUploadFailed";
  ZIMErrorCode2[ZIMErrorCode2["LoginTokenMismatch"] = 6000101] = "LoginTokenMismatch";
  ZIMErrorCode2[ZIMErrorCode2["LoginInternalError"] = 6000102] = "LoginInternalError";
  ZIMErrorCode2[ZIMErrorCode2["TokenInvalid"] = 6000103] = "TokenInvalid";
  ZIMErrorCode2[ZIMErrorCode2["NetworkError"] = 6000104] = "NetworkError";
  ZIMErrorCode2[ZIMErrorCode2["TokenExpired"] = 6000106] = "TokenExpired";
  ZIMErrorCode2[ZIMErrorCode2["TokenVersionMismatch"] = 6000107] = "TokenVersionMismatch";
  ZIMErrorCode2[ZIMErrorCode2["AlreadyLoggedIn"] = 6000111] = "AlreadyLoggedIn";
  ZIMErrorCode2[ZIMErrorCode2["NotLoggedIn"] = 6000121] = "NotLoggedIn";
  ZIMErrorCode2[ZIMErrorCode2["MessageSendFailed"] = 6000201] = "MessageSendFailed";
  ZIMErrorCode2[ZIMErrorCode2["MessageInternalError"] = 6000202] = "MessageInternalError";
  ZIMErrorCode2[ZIMErrorCode2["MessageNetworkError"] = 6000204] = "MessageNetworkError";
  ZIMErrorCode2[ZIMErrorCode2["NotInRoom"] = 6000205] = "NotInRoom";
  ZIMErrorCode2[ZIMErrorCode2["RoomNotExist"] = 6000301] = "RoomNotExist";
  ZIMErrorCode2[ZIMErrorCode2["RoomInternalError"] = 6000302] = "RoomInternalError";
  ZIMErrorCode2[ZIMErrorCode2["RoomCreateFailed"] = 6000303] = "RoomCreateFailed";
  ZIMErrorCode2[ZIMErrorCode2["RoomJoinNotExist"] = 6000304] = "RoomJoinNotExist";
  ZIMErrorCode2[ZIMErrorCode2["RoomLeaveFailed"] = 6000305] = "RoomLeaveFailed";
  ZIMErrorCode2[ZIMErrorCode2["RoomAlreadyExists"] = 6000311] = "RoomAlreadyExists";
  ZIMErrorCode2[ZIMErrorCode2["RoomCountLimit"] = 6000312] = "RoomCountLimit";
  ZIMErrorCode2[ZIMErrorCode2["UserRoomLimit"] = 6000321] = "UserRoomLimit";
  return ZIMErrorCode2;
})(ZIMErrorCode || {});

// src/errors.ts
function zimError(code, message) {
  return { code, message };
}
function codeName(code) {
  const name = ZIMErrorCode[code];
  return name ?? `Code${code}`;
}
function describeError(e) {
  return `${e.code} ${codeName(e.code)}: ${e.message}`;
}
function paramError(message) {
  return zimError(6000001 /* ParamInvalid */, message);
}
function destroyedError() {
  return zimError(6000002 /* NotInitialized */, "this ZIM instance was destroyed; create a new one");
}
function notLoggedIn(what) {
  return zimError(6000121 /* NotLoggedIn */, `${what} needs a login: call login first`);
}
function networkError(isSend, message) {
  return zimError(isSend ? 6000204 /* MessageNetworkError */ : 6000104 /* NetworkError */, message);
}

// src/wire.ts
var PROTOCOL_VERSION = 1;
function decodeServerFrame(text) {
  const value = JSON.parse(text);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("not a JSON object");
  }
  const frame = value;
  if (typeof frame["push"] === "string") {
    const data = frame["data"];
    return {
      kind: "push",
      push: {
        v: Number(frame["v"]),
        push: frame["push"],
        data: typeof data === "object" && data !== null ? data : {}
      }
    };
  }
  if (typeof frame["id"] === "number" && typeof frame["code"] === "number") {
    const data = frame["data"];
    const reply = {
      v: Number(frame["v"]),
      id: frame["id"],
      code: frame["code"],
      message: typeof frame["message"] === "string" ? frame["message"] : ""
    };
    if (typeof data === "object" && data !== null) {
      reply.data = data;
    }
    return { kind: "reply", reply };
  }
  throw new Error("neither a reply nor a push");
}
function encodeRequest(id, op, data) {
  return JSON.stringify({ v: PROTOCOL_VERSION, id, op, data });
}
function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 32768;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}
function base64ToBytes(text) {
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}
function utf8(text) {
  return new TextEncoder().encode(text);
}
function priorityOf(n) {
  return n === 2 || n === 3 ? n : 1 /* Low */;
}
function messageFromWire(m, me) {
  let body = m.message;
  if (m.type === 2 /* Command */) {
    body = base64ToBytes(m.message) ?? m.message;
  }
  const message = {
    type: m.type,
    message: body,
    messageID: m.messageID,
    localMessageID: m.localMessageID,
    senderUserID: m.senderUserID,
    timestamp: m.timestamp,
    conversationID: m.conversationID,
    conversationType: m.conversationType === 1 ? 1 /* Room */ : 0 /* Peer */,
    direction: m.senderUserID === me ? 0 /* Send */ : 1 /* Receive */,
    sentStatus: 1 /* Success */,
    orderKey: m.conversationSeq,
    conversationSeq: m.conversationSeq,
    priority: priorityOf(m.priority)
  };
  if (typeof m.inboxSeq === "number") {
    message.inboxSeq = m.inboxSeq;
  }
  return message;
}
function wireMessages(value) {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter(
    (m) => typeof m === "object" && m !== null && typeof m.type === "number" && typeof m.message === "string" && typeof m.conversationSeq === "number"
  );
}

// src/engine.ts
var TICK = 100;
var ROOM_SEEN_MAX = 4096;
var OPEN = 1;
function markSeq(state, seq) {
  if (seq <= state.last || state.seen.has(seq)) {
    return false;
  }
  state.seen.add(seq);
  while (state.seen.delete(state.last + 1)) {
    state.last += 1;
  }
  while (state.seen.size > ROOM_SEEN_MAX) {
    const first = Math.min(...state.seen);
    state.seen.delete(first);
    state.last = first;
    while (state.seen.delete(state.last + 1)) {
      state.last += 1;
    }
  }
  return true;
}
function isRetrySafe(op, data) {
  switch (op) {
    case "sendPeerMessage":
    case "sendRoomMessage":
      return data["type"] === 1;
    // stored Text: the server dedups by localMessageID
    case "ping":
    case "renewToken":
    case "joinRoom":
    case "queryRoomMemberList":
    case "queryRoomOnlineMemberCount":
    case "queryRoomAllAttributes":
    case "queryHistoryMessage":
      return true;
    default:
      return false;
  }
}
function str(value) {
  return typeof value === "string" ? value : "";
}
function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}
function members(value) {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter((m) => typeof m === "object" && m !== null).map((m) => ({ userID: str(m["userID"]), userName: str(m["userName"]) }));
}
function attributeInfos(value) {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter((i) => typeof i === "object" && i !== null).map((i) => {
    const attrs = {};
    const raw = i["roomAttributes"];
    if (typeof raw === "object" && raw !== null) {
      for (const [k, v] of Object.entries(raw)) {
        attrs[k] = str(v);
      }
    }
    return { action: num(i["action"]), roomAttributes: attrs };
  });
}
function describe(op, data) {
  switch (op) {
    case "sendPeerMessage":
      return `${op} toUserID=${str(data["toUserID"])} type=${num(data["type"])} localMessageID=${num(data["localMessageID"])}`;
    case "sendRoomMessage":
      return `${op} roomID=${str(data["roomID"])} type=${num(data["type"])} localMessageID=${num(data["localMessageID"])}`;
    case "createRoom":
    case "enterRoom": {
      const info = data["roomInfo"];
      return `${op} roomID=${str(info?.["roomID"])}`;
    }
    case "joinRoom":
      return `${op} roomID=${str(data["roomID"])} lastSeq=${String(data["lastSeq"] ?? "none")}`;
    case "ackInbox":
      return `${op} inboxSeq=${num(data["inboxSeq"])}`;
    default:
      return typeof data["roomID"] === "string" ? `${op} roomID=${data["roomID"]}` : op;
  }
}
function closeQuietly(ws) {
  if (!ws) {
    return;
  }
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
  try {
    ws.close(1e3);
  } catch {
  }
}
var Engine = class {
  constructor(config, deliver) {
    this.state = 0 /* Disconnected */;
    this.destroyed = false;
    this.link = { kind: "idle" };
    this.session = null;
    /** Calls waiting for a ready connection (kept sorted by call order). */
    this.queued = [];
    /** Requests on the wire, by request id. */
    this.pending = /* @__PURE__ */ new Map();
    this.nextId = 1;
    this.nextSeq = 1;
    /** The URL to use for the next connection attempt. */
    this.nextUrl = 0;
    /** Set while reconnecting (from the loss until the connection is ready). */
    this.reconnect = null;
    /** The server's reason, when it announced a disconnect it wants us to recover from. */
    this.disconnectHint = null;
    /** The user the delivery positions below belong to. */
    this.seqsUser = null;
    /** The highest peer inbox position delivered to the app (or skipped by a gap). */
    this.lastInboxSeq = null;
    /** The highest position acknowledged to the server. */
    this.ackedInboxSeq = 0;
    this.ackInFlight = false;
    this.lastAck = 0;
    /** When the server last sent anything. */
    this.lastReceived = 0;
    this.heartbeatInFlight = false;
    /** Per room: the contiguous seq watermark and the seqs seen above it. */
    this.rooms = /* @__PURE__ */ new Map();
    /** Rooms this user is in, as far as the SDK knows. */
    this.joined = /* @__PURE__ */ new Set();
    /** Rooms the server restored after the current login. */
    this.restored = /* @__PURE__ */ new Set();
    /** The user, token and URL of the current or most recent login (for log uploads). */
    this.creds = null;
    /** Events waiting to be handed to the app. */
    this.events = [];
    this.depth = 0;
    this.flushing = false;
    this.tickTimer = null;
    this.onOffline = () => {
      this.guard(() => {
        if (this.link.kind === "online") {
          this.connectionLost("the browser went offline");
        }
      });
    };
    this.onOnline = () => {
      this.guard(() => {
        if (this.link.kind === "backoff") {
          this.log("the browser is back online: reconnecting now");
          this.config.timers.clearTimeout(this.link.timer);
          this.onBackoffDone();
        }
      });
    };
    this.config = config;
    this.deliver = deliver;
    this.lastAck = config.timers.now();
    this.lastReceived = this.lastAck;
    const g = globalThis;
    if (config.watchNetwork && typeof g.addEventListener === "function") {
      g.addEventListener("offline", this.onOffline);
      g.addEventListener("online", this.onOnline);
    }
  }
  // ----- public side ---------------------------------------------------------
  connectionState() {
    return this.state;
  }
  isDestroyed() {
    return this.destroyed;
  }
  /** The logged-in (or logging-in) user's ID, or `""`. */
  userID() {
    return this.me();
  }
  /** Who is (or was last) logged in, and where; `null` before the first login. */
  credentials() {
    return this.creds === null ? null : { ...this.creds };
  }
  login(user, token) {
    return new Promise((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session !== null || this.link.kind !== "idle") {
          reject(
            zimError(
              6000111 /* AlreadyLoggedIn */,
              "already logged in (or a login or logout is in progress); call logout first"
            )
          );
          return;
        }
        if (this.seqsUser !== user.userID) {
          this.seqsUser = user.userID;
          this.lastInboxSeq = null;
          this.ackedInboxSeq = 0;
          this.rooms.clear();
        }
        this.log(`login userID=${user.userID}`);
        this.session = { user: { userID: user.userID, userName: user.userName ?? "" }, token };
        this.creds = { userID: user.userID, token, url: this.config.urls[this.nextUrl] ?? "" };
        this.setState(1 /* Connecting */, 1 /* ActiveLogin */, "");
        this.connect({ resolve, reject, tried: 1 });
      });
    });
  }
  logout() {
    return new Promise((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session === null) {
          reject(notLoggedIn("logout"));
          return;
        }
        this.log("logout");
        if (this.link.kind === "online") {
          const seq = this.lastInboxSeq;
          if (seq !== null && seq > this.ackedInboxSeq) {
            this.ackInFlight = true;
            if (!this.sendInternal("ackInbox", { inboxSeq: seq }, { kind: "ack", seq })) {
              this.goIdle(0 /* Success */, "logged out while not connected");
              resolve();
              return;
            }
          }
          this.session = null;
          const id = this.nextId++;
          this.log(`request id=${id} op=logout`);
          const failed = this.writeText(encodeRequest(id, "logout", {}));
          if (failed === null) {
            this.pending.set(id, {
              seq: 0,
              deadline: this.now() + this.config.requestTimeout,
              what: { kind: "logout", done: () => resolve() }
            });
          } else {
            this.connectionLost(failed);
            resolve();
          }
        } else {
          this.goIdle(0 /* Success */, "logged out while not connected");
          resolve();
        }
      });
    });
  }
  /** Sends `op` (queued while not ready) and resolves with the reply's `data`. */
  call(op, data, isSend) {
    return new Promise((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session === null) {
          reject(notLoggedIn(op));
          return;
        }
        const call = {
          op,
          data,
          deadline: this.now() + this.config.requestTimeout,
          isSend,
          retrySafe: isRetrySafe(op, data),
          resolve,
          reject
        };
        if (op === "renewToken" && !this.isReady()) {
          this.updateToken(str(data["token"]));
        }
        const seq = this.nextSeq++;
        if (this.isReady()) {
          this.sendCall(seq, call);
        } else {
          this.enqueue(seq, call);
        }
      });
    });
  }
  /** Closes everything without logging out; every waiting call fails with 6000002. */
  destroy() {
    this.guard(() => {
      if (this.destroyed) {
        return;
      }
      this.destroyed = true;
      this.log("destroyed");
      const g = globalThis;
      if (typeof g.removeEventListener === "function") {
        g.removeEventListener("offline", this.onOffline);
        g.removeEventListener("online", this.onOnline);
      }
      const link = this.link;
      this.link = { kind: "idle" };
      if (link.kind === "online") {
        closeQuietly(link.ws);
      } else if (link.kind === "connecting") {
        link.hs.done = true;
        this.config.timers.clearTimeout(link.hs.timer);
        closeQuietly(link.hs.ws);
        link.hs.login?.reject(destroyedError());
      } else if (link.kind === "backoff") {
        this.config.timers.clearTimeout(link.timer);
      }
      for (const p of this.pending.values()) {
        if (p.what.kind === "call") {
          p.what.call.reject(destroyedError());
        } else if (p.what.kind === "logout") {
          p.what.done();
        }
      }
      this.pending.clear();
      for (const { call } of this.queued) {
        call.reject(destroyedError());
      }
      this.queued = [];
      this.session = null;
      this.reconnect = null;
      if (this.tickTimer !== null) {
        this.config.timers.clearTimeout(this.tickTimer);
        this.tickTimer = null;
      }
      if (this.state !== 0 /* Disconnected */) {
        this.setState(0 /* Disconnected */, 0 /* Success */, "destroyed");
      }
    });
  }
  // ----- small helpers -------------------------------------------------------
  now() {
    return this.config.timers.now();
  }
  log(line) {
    this.config.logger?.("info", line);
  }
  warn(line) {
    this.config.logger?.("warn", line);
  }
  me() {
    return this.session?.user.userID ?? this.seqsUser ?? "";
  }
  isReady() {
    return this.link.kind === "online" && this.link.phase.kind === "ready";
  }
  /**
   * Runs one step of the engine; at the outermost level, hands the queued
   * events to the app afterwards and keeps the tick running while needed.
   */
  guard(step) {
    this.depth++;
    try {
      step();
    } finally {
      this.depth--;
    }
    if (this.depth === 0) {
      this.flush();
      this.ensureTick();
    }
  }
  flush() {
    if (this.flushing) {
      return;
    }
    this.flushing = true;
    try {
      for (let e = this.events.shift(); e !== void 0; e = this.events.shift()) {
        try {
          this.deliver(e[0], e[1]);
        } catch (err) {
          this.warn(`an event handler for ${e[0]} threw: ${String(err)}`);
        }
      }
    } finally {
      this.flushing = false;
    }
  }
  emit(name, data) {
    this.events.push([name, data]);
  }
  ensureTick() {
    const busy = this.session !== null || this.link.kind !== "idle" || this.pending.size > 0 || this.queued.length > 0;
    if (this.destroyed || !busy || this.tickTimer !== null) {
      return;
    }
    this.tickTimer = this.config.timers.setTimeout(() => {
      this.tickTimer = null;
      this.guard(() => this.onTick());
    }, TICK);
  }
  setState(state, event, extendedData) {
    this.state = state;
    this.log(`state ${ZIMConnectionState[state]} event ${ZIMConnectionEvent[event]} ${extendedData}`);
    this.emit("connectionStateChanged", { state, event, extendedData });
  }
  emitRoomState(roomID, state, event) {
    this.log(`room ${roomID} state ${ZIMRoomState[state]} event ${ZIMRoomEvent[event]}`);
    this.emit("roomStateChanged", { roomID, state, event, extendedData: "" });
  }
  room(roomID) {
    let r = this.rooms.get(roomID);
    if (r === void 0) {
      r = { last: 0, seen: /* @__PURE__ */ new Set() };
      this.rooms.set(roomID, r);
    }
    return r;
  }
  /** Records a stored room message's seq; false if it was seen before. */
  markRoomSeq(roomID, seq) {
    return markSeq(this.room(roomID), seq);
  }
  /** Moves a room's watermark to at least `seq` (after a gap or a join). */
  advanceRoomWatermark(roomID, seq) {
    const r = this.room(roomID);
    r.last = Math.max(r.last, seq);
    for (const s of r.seen) {
      if (s <= r.last) {
        r.seen.delete(s);
      }
    }
    while (r.seen.delete(r.last + 1)) {
      r.last += 1;
    }
  }
  /** Writes a text frame on the current connection; an error text when it cannot. */
  writeText(text) {
    const link = this.link;
    if (link.kind !== "online") {
      return "not connected";
    }
    if (link.ws.readyState !== OPEN) {
      return "the connection is closing";
    }
    try {
      link.ws.send(text);
    } catch (err) {
      return `writing to the server failed: ${String(err)}`;
    }
    link.lastSent = this.now();
    return null;
  }
  /** Writes one of the engine's own requests; on failure the connection is lost. */
  sendInternal(op, data, what) {
    const id = this.nextId++;
    this.log(`request id=${id} op=${describe(op, data)}`);
    const failed = this.writeText(encodeRequest(id, op, data));
    if (failed !== null) {
      this.connectionLost(failed);
      return false;
    }
    this.pending.set(id, { seq: 0, deadline: this.now() + this.config.requestTimeout, what });
    return true;
  }
  // ----- calls ----------------------------------------------------------------
  enqueue(seq, call) {
    let i = this.queued.length;
    while (i > 0 && this.queued[i - 1].seq > seq) {
      i--;
    }
    this.queued.splice(i, 0, { seq, call });
  }
  updateToken(token) {
    if (this.session !== null) {
      this.session.token = token;
    }
    if (this.creds !== null) {
      this.creds.token = token;
    }
  }
  sendCall(seq, call) {
    if (this.now() >= call.deadline) {
      this.failCall(call, "no connection in time");
      return;
    }
    const id = this.nextId++;
    this.log(`request id=${id} op=${describe(call.op, call.data)}`);
    if (call.op === "leaveRoom") {
      this.joined.delete(str(call.data["roomID"]));
    }
    const failed = this.writeText(encodeRequest(id, call.op, call.data));
    if (failed === null) {
      this.pending.set(id, { seq, deadline: call.deadline, what: { kind: "call", call } });
      return;
    }
    if (call.retrySafe) {
      this.enqueue(seq, call);
    } else {
      this.failCall(call, failed);
    }
    this.connectionLost(failed);
  }
  failCall(call, why) {
    const err = networkError(call.isSend, `${call.op}: ${why}`);
    this.log(`call ${call.op} failed: ${err.code}`);
    call.reject(err);
  }
  flushQueue() {
    while (this.isReady()) {
      const next = this.queued.shift();
      if (next === void 0) {
        break;
      }
      this.sendCall(next.seq, next.call);
    }
  }
  // ----- connecting -------------------------------------------------------------
  /** Starts connecting to `nextUrl` and logging in. */
  connect(login) {
    const session = this.session;
    if (session === null) {
      return;
    }
    const roomSeqs = {};
    for (const room of this.joined) {
      roomSeqs[room] = this.rooms.get(room)?.last ?? 0;
    }
    const request = {
      appID: this.config.appID,
      userID: session.user.userID,
      userName: session.user.userName,
      token: session.token
    };
    if (this.lastInboxSeq !== null) {
      request["lastInboxSeq"] = this.lastInboxSeq;
    }
    if (this.joined.size > 0) {
      request["roomSeqs"] = roomSeqs;
    }
    const urlIndex = this.nextUrl;
    const url = this.config.urls[urlIndex];
    const id = this.nextId++;
    this.log(
      `connecting to ${url}: request id=${id} op=login userID=${session.user.userID} lastInboxSeq=${this.lastInboxSeq ?? "none"} rooms=${this.joined.size}`
    );
    this.disconnectHint = null;
    const hs = { ws: null, url: urlIndex, login, timer: null, done: false };
    this.link = { kind: "connecting", hs };
    const timers = this.config.timers;
    const finish = (result) => {
      if (hs.done) {
        return;
      }
      hs.done = true;
      timers.clearTimeout(hs.timer);
      this.guard(() => this.onHandshake(hs, result));
    };
    const limit = this.config.requestTimeout;
    hs.timer = timers.setTimeout(() => {
      finish({ kind: "network", message: `no login reply from ${url} within ${limit} ms` });
    }, limit);
    let ws;
    try {
      ws = new this.config.WebSocket(url);
    } catch (err) {
      timers.setTimeout(() => {
        finish({ kind: "network", message: `cannot connect to ${url}: ${String(err)}` });
      }, 0);
      return;
    }
    hs.ws = ws;
    ws.onopen = () => {
      try {
        ws.send(encodeRequest(id, "login", request));
      } catch (err) {
        finish({ kind: "network", message: `sending login to ${url} failed: ${String(err)}` });
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        return;
      }
      let frame;
      try {
        frame = decodeServerFrame(ev.data);
      } catch {
        return;
      }
      if (frame.kind === "reply" && frame.reply.id === id) {
        const reply = frame.reply;
        if (reply.code !== 0) {
          finish({ kind: "rejected", error: zimError(reply.code, reply.message) });
        } else {
          finish({ kind: "ok", ws, reply: reply.data ?? {} });
        }
      } else if (frame.kind === "push" && frame.push.push === "disconnect") {
        const d = frame.push.data;
        finish({
          kind: "network",
          message: `${url} disconnected during login: ${str(d["reason"])}: ${str(d["message"])}`
        });
      }
    };
    ws.onclose = (ev) => {
      const why = ev.reason ? `${ev.code}: ${ev.reason}` : `${ev.code}`;
      finish({ kind: "network", message: `cannot connect to ${url} or it closed the connection during login (${why})` });
    };
    ws.onerror = () => {
    };
  }
  onHandshake(hs, result) {
    const link = this.link;
    if (link.kind !== "connecting" || link.hs !== hs) {
      if (result.kind === "ok") {
        closeQuietly(result.ws);
      }
      return;
    }
    this.link = { kind: "idle" };
    const login = hs.login;
    const urls = this.config.urls.length;
    if (result.kind !== "ok") {
      closeQuietly(hs.ws);
    }
    switch (result.kind) {
      case "ok": {
        const ws = result.ws;
        this.log(
          `login reply code=0 (Success); logged in at ${this.config.urls[hs.url] ?? ""}: inboxSeq=${num(result.reply["inboxSeq"])} tokenExpire=${num(result.reply["tokenExpire"])}`
        );
        this.nextUrl = hs.url;
        if (this.creds !== null) {
          this.creds.url = this.config.urls[hs.url] ?? "";
        }
        this.heartbeatInFlight = false;
        this.ackInFlight = false;
        this.restored.clear();
        const now = this.now();
        this.lastReceived = now;
        ws.onopen = null;
        ws.onmessage = (ev) => this.guard(() => this.onFrame(ws, ev.data));
        ws.onclose = (ev) => this.guard(() => {
          if (this.link.kind === "online" && this.link.ws === ws) {
            const why = ev.reason ? `${ev.code}: ${ev.reason}` : `${ev.code}`;
            this.connectionLost(`the connection closed (${why})`);
          }
        });
        ws.onerror = () => {
        };
        if (login !== null) {
          this.link = { kind: "online", ws, phase: { kind: "ready" }, lastSent: now };
          this.setState(2 /* Connected */, 0 /* Success */, "");
          login.resolve();
          this.flushQueue();
        } else {
          this.link = { kind: "online", ws, phase: { kind: "restoring" }, lastSent: now };
          this.sendInternal("ping", {}, { kind: "barrier" });
        }
        return;
      }
      case "rejected": {
        const err = result.error;
        this.log(`login reply code=${err.code}`);
        if (login !== null) {
          this.goIdle(3 /* LoginInterrupted */, describeError(err));
          login.reject(err);
          return;
        }
        if (err.code === 6000106 /* TokenExpired */) {
          this.goIdle(5 /* TokenExpired */, describeError(err));
        } else if (err.code === 6000102 /* LoginInternalError */ || err.code === 6000003 /* ServerRateLimit */ || err.code === 1 /* Failed */) {
          this.scheduleReconnect(false);
        } else {
          this.goIdle(3 /* LoginInterrupted */, describeError(err));
        }
        return;
      }
      case "network": {
        this.warn(result.message);
        this.nextUrl = (hs.url + 1) % urls;
        if (login !== null && login.tried < urls) {
          this.connect({ ...login, tried: login.tried + 1 });
        } else if (login !== null) {
          this.goIdle(2 /* LoginTimeout */, result.message);
          login.reject(networkError(false, `login: ${result.message}`));
        } else {
          this.scheduleReconnect(false);
        }
        return;
      }
    }
  }
  /** Waits (with backoff) before the next reconnect attempt, or gives up. */
  scheduleReconnect(first) {
    const { reconnectMinDelay: min, reconnectMaxDelay: max, reconnectGiveUpAfter: giveUp } = this.config;
    if (this.reconnect === null) {
      this.reconnect = { since: this.now(), attempt: 0 };
    }
    const rc = this.reconnect;
    if (giveUp !== null && !first && this.now() - rc.since >= giveUp) {
      this.goIdle(
        2 /* LoginTimeout */,
        `no connection for ${giveUp} ms: gave up reconnecting`
      );
      return;
    }
    const base = Math.max(1, Math.min(min * 2 ** Math.min(rc.attempt, 16), max));
    const delay = Math.round(base / 2 + this.config.random() * (base / 2));
    rc.attempt += 1;
    this.log(`reconnect attempt ${rc.attempt} in ${delay} ms`);
    const timer = this.config.timers.setTimeout(() => {
      this.guard(() => {
        if (this.link.kind === "backoff" && this.link.timer === timer) {
          this.onBackoffDone();
        }
      });
    }, delay);
    this.link = { kind: "backoff", timer };
  }
  onBackoffDone() {
    const giveUp = this.config.reconnectGiveUpAfter;
    if (giveUp !== null && this.reconnect !== null && this.now() - this.reconnect.since >= giveUp) {
      this.goIdle(
        2 /* LoginTimeout */,
        `no connection for ${giveUp} ms: gave up reconnecting`
      );
      return;
    }
    this.link = { kind: "idle" };
    this.connect(null);
  }
  /**
   * The connection broke (or the server asked us to reconnect): requeue what is
   * safe to resend, fail the rest, and start reconnecting.
   */
  connectionLost(reason) {
    const link = this.link;
    if (link.kind !== "online") {
      return;
    }
    this.link = { kind: "idle" };
    closeQuietly(link.ws);
    const why = this.disconnectHint ?? reason;
    this.disconnectHint = null;
    this.warn(`connection lost: ${why}`);
    if (this.session === null) {
      this.goIdle(0 /* Success */, "logged out");
      return;
    }
    const now = this.now();
    const pending = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    this.pending.clear();
    for (const p of pending) {
      if (p.what.kind === "call") {
        const call = p.what.call;
        if (call.retrySafe && now < call.deadline) {
          this.enqueue(p.seq, call);
        } else {
          this.failCall(call, `the connection was lost (${why})`);
        }
      } else if (p.what.kind === "logout") {
        p.what.done();
      }
    }
    this.ackInFlight = false;
    this.heartbeatInFlight = false;
    const first = this.reconnect === null;
    if (first) {
      this.setState(3 /* Reconnecting */, 3 /* LoginInterrupted */, why);
      for (const room of this.joined) {
        this.emitRoomState(room, 1 /* Connecting */, 1 /* NetworkInterrupted */);
      }
    }
    this.scheduleReconnect(first);
  }
  /** Ends the session: no connection, no reconnect, every waiting call answered. */
  goIdle(event, extendedData) {
    const link = this.link;
    this.link = { kind: "idle" };
    if (link.kind === "online") {
      closeQuietly(link.ws);
    } else if (link.kind === "connecting") {
      link.hs.done = true;
      this.config.timers.clearTimeout(link.hs.timer);
      closeQuietly(link.hs.ws);
      link.hs.login?.reject(zimError(6000121 /* NotLoggedIn */, "the login was cancelled"));
    } else if (link.kind === "backoff") {
      this.config.timers.clearTimeout(link.timer);
    }
    this.session = null;
    this.reconnect = null;
    this.restored.clear();
    this.ackInFlight = false;
    this.heartbeatInFlight = false;
    const why = `the session ended (${extendedData})`;
    const pending = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    this.pending.clear();
    for (const p of pending) {
      if (p.what.kind === "call") {
        this.failCall(p.what.call, why);
      } else if (p.what.kind === "logout") {
        p.what.done();
      }
    }
    const queued = this.queued;
    this.queued = [];
    for (const { call } of queued) {
      this.failCall(call, why);
    }
    const roomEvent = event === 4 /* KickedOut */ ? 8 /* KickedOut */ : event === 0 /* Success */ ? 0 /* Success */ : 2 /* NetworkDisconnected */;
    const rooms = this.joined;
    this.joined = /* @__PURE__ */ new Set();
    this.setState(0 /* Disconnected */, event, extendedData);
    for (const room of rooms) {
      this.emitRoomState(room, 0 /* Disconnected */, roomEvent);
    }
  }
  // ----- restoring after a re-login ------------------------------------------
  rejoinRooms() {
    if (this.session === null) {
      return;
    }
    const missing = [...this.joined].filter((r) => !this.restored.has(r));
    if (missing.length === 0) {
      this.becomeReady();
      return;
    }
    if (this.link.kind === "online") {
      this.link.phase = { kind: "rejoining", left: missing.length };
    }
    for (const room of missing) {
      const lastSeq = this.rooms.get(room)?.last ?? 0;
      if (!this.sendInternal("joinRoom", { roomID: room, lastSeq }, { kind: "rejoin", room })) {
        return;
      }
    }
  }
  onRejoined(room, reply) {
    if (reply.code === 0) {
      this.advanceRoomWatermark(room, num(reply.data?.["roomSeq"]));
      this.emitRoomState(room, 2 /* Connected */, 0 /* Success */);
    } else {
      this.joined.delete(room);
      const event = reply.code === 6000304 /* RoomJoinNotExist */ || reply.code === 6000301 /* RoomNotExist */ ? 3 /* RoomNotExist */ : 7 /* EnterFailed */;
      this.emitRoomState(room, 0 /* Disconnected */, event);
    }
    const link = this.link;
    if (link.kind === "online" && link.phase.kind === "rejoining") {
      link.phase.left = Math.max(0, link.phase.left - 1);
      if (link.phase.left === 0) {
        this.becomeReady();
      }
    }
  }
  becomeReady() {
    if (this.session === null || this.link.kind !== "online") {
      return;
    }
    this.link.phase = { kind: "ready" };
    this.reconnect = null;
    this.setState(2 /* Connected */, 0 /* Success */, "reconnected");
    this.flushQueue();
  }
  // ----- what the server sends -------------------------------------------------
  onFrame(ws, data) {
    if (this.link.kind !== "online" || this.link.ws !== ws) {
      return;
    }
    this.lastReceived = this.now();
    if (typeof data !== "string") {
      return;
    }
    let frame;
    try {
      frame = decodeServerFrame(data);
    } catch (err) {
      const message = `unreadable frame from the server: ${String(err)}`;
      this.warn(message);
      this.emit("error", zimError(1 /* Failed */, message));
      return;
    }
    if (frame.kind === "reply") {
      this.onReply(frame.reply);
    } else {
      this.onPush(frame.push);
    }
  }
  onReply(reply) {
    this.log(`reply id=${reply.id} code=${reply.code}`);
    const pending = this.pending.get(reply.id);
    if (pending === void 0) {
      return;
    }
    this.pending.delete(reply.id);
    const what = pending.what;
    switch (what.kind) {
      case "call": {
        const call = what.call;
        if (reply.code === 0) {
          const data = reply.data ?? {};
          this.afterSuccess(call, data);
          call.resolve(data);
        } else {
          call.reject(zimError(reply.code, reply.message));
        }
        return;
      }
      case "logout":
        this.goIdle(0 /* Success */, "logged out");
        what.done();
        return;
      case "barrier":
        this.rejoinRooms();
        return;
      case "rejoin":
        this.onRejoined(what.room, reply);
        return;
      case "ack":
        this.ackInFlight = false;
        if (reply.code === 0) {
          this.ackedInboxSeq = Math.max(this.ackedInboxSeq, what.seq);
        } else {
          this.emit(
            "error",
            zimError(reply.code, `ackInbox ${what.seq} was refused: ${reply.message}`)
          );
        }
        return;
      case "heartbeat":
        this.heartbeatInFlight = false;
        return;
    }
  }
  /** Bookkeeping after a call succeeded. */
  afterSuccess(call, data) {
    switch (call.op) {
      case "renewToken":
        this.updateToken(str(call.data["token"]));
        return;
      case "createRoom":
      case "joinRoom":
      case "enterRoom": {
        const info = data["roomInfo"];
        const room = str(info?.["roomID"]);
        if (room === "") {
          return;
        }
        this.advanceRoomWatermark(room, num(data["roomSeq"]));
        this.joined.add(room);
        this.emitRoomState(
          room,
          2 /* Connected */,
          data["created"] === true ? 4 /* ActiveCreate */ : 6 /* ActiveEnter */
        );
        return;
      }
      case "leaveRoom": {
        const room = str(call.data["roomID"]);
        this.rooms.delete(room);
        this.emitRoomState(room, 0 /* Disconnected */, 0 /* Success */);
        return;
      }
      case "sendRoomMessage": {
        const seq = num(data["conversationSeq"]);
        if (seq > 0) {
          this.markRoomSeq(str(call.data["roomID"]), seq);
        }
        return;
      }
      default:
        return;
    }
  }
  onPush(frame) {
    const d = frame.data;
    switch (frame.push) {
      case "receivePeerMessage": {
        const me = this.me();
        const from = str(d["fromUserID"]);
        const all = wireMessages(d["messageList"]);
        const list = [];
        for (const m of all) {
          if (typeof m.inboxSeq === "number") {
            if (this.lastInboxSeq !== null && m.inboxSeq <= this.lastInboxSeq) {
              continue;
            }
            this.lastInboxSeq = m.inboxSeq;
          }
          list.push(messageFromWire(m, me));
        }
        this.log(
          `push receivePeerMessage fromUserID=${from} count=${all.length} new=${list.length} lastInboxSeq=${this.lastInboxSeq ?? "none"}`
        );
        if (list.length > 0) {
          this.emit("receivePeerMessage", {
            messageList: list,
            fromConversationID: from,
            fromUserID: from
          });
        }
        return;
      }
      case "syncComplete": {
        const seq = num(d["inboxSeq"]);
        this.log(`push syncComplete inboxSeq=${seq}`);
        this.lastInboxSeq = Math.max(this.lastInboxSeq ?? 0, seq);
        return;
      }
      case "syncGap": {
        const fromInboxSeq = num(d["fromInboxSeq"]);
        const toInboxSeq = num(d["toInboxSeq"]);
        this.warn(`push syncGap ${fromInboxSeq}..=${toInboxSeq}`);
        this.lastInboxSeq = Math.max(this.lastInboxSeq ?? 0, toInboxSeq);
        this.emit("peerMessageGap", { fromInboxSeq, toInboxSeq });
        return;
      }
      case "disconnect": {
        const reason = str(d["reason"]);
        const extended = `${reason}: ${str(d["message"])}`;
        this.warn(`push disconnect reason=${reason} reconnect=${String(d["reconnect"])}`);
        if (d["reconnect"] === true) {
          this.disconnectHint = extended;
        } else {
          const event = reason === "kickedOut" ? 4 /* KickedOut */ : reason === "tokenExpired" ? 5 /* TokenExpired */ : reason === "logout" ? 0 /* Success */ : 3 /* LoginInterrupted */;
          this.goIdle(event, extended);
        }
        return;
      }
      case "tokenWillExpire": {
        const second = num(d["second"]);
        this.log(`push tokenWillExpire second=${second}`);
        this.emit("tokenWillExpire", { second });
        return;
      }
      case "receiveRoomMessage": {
        const me = this.me();
        const roomID = str(d["fromRoomID"]);
        const all = wireMessages(d["messageList"]);
        const list = [];
        for (const m of all) {
          if (m.conversationSeq > 0 && !this.markRoomSeq(roomID, m.conversationSeq)) {
            continue;
          }
          if (m.senderUserID === me) {
            continue;
          }
          list.push(messageFromWire(m, me));
        }
        this.log(
          `push receiveRoomMessage roomID=${roomID} count=${all.length} new=${list.length} lastSeq=${this.rooms.get(roomID)?.last ?? 0}`
        );
        if (list.length > 0) {
          this.emit("receiveRoomMessage", {
            messageList: list,
            fromConversationID: roomID,
            fromRoomID: roomID
          });
        }
        return;
      }
      case "roomMemberJoined":
      case "roomMemberLeft": {
        const roomID = str(d["roomID"]);
        const memberList = members(d["memberList"]);
        this.log(`push ${frame.push} roomID=${roomID} count=${memberList.length}`);
        this.emit(frame.push, { roomID, memberList });
        return;
      }
      case "roomStateChanged": {
        const roomID = str(d["roomID"]);
        const state = num(d["state"]);
        const event = num(d["event"]);
        if (ZIMRoomState[state] === void 0 || ZIMRoomEvent[event] === void 0) {
          this.warn(`push roomStateChanged with unknown state ${state} / event ${event}`);
          return;
        }
        if (state === 2 /* Connected */) {
          this.joined.add(roomID);
          this.restored.add(roomID);
          if (!this.rooms.has(roomID)) {
            this.room(roomID).last = num(d["roomSeq"]);
          }
        } else if (state === 0 /* Disconnected */) {
          this.joined.delete(roomID);
        }
        this.emitRoomState(roomID, state, event);
        return;
      }
      case "roomAttributesUpdated":
      case "roomAttributesBatchUpdated": {
        const roomID = str(d["roomID"]);
        this.log(`push ${frame.push} roomID=${roomID}`);
        this.emit(frame.push, { roomID, infos: attributeInfos(d["infos"]) });
        return;
      }
      case "roomSyncGap": {
        const roomID = str(d["roomID"]);
        const fromSeq = num(d["fromSeq"]);
        const toSeq = num(d["toSeq"]);
        this.warn(`push roomSyncGap roomID=${roomID} ${fromSeq}..=${toSeq}`);
        this.advanceRoomWatermark(roomID, toSeq);
        this.emit("roomMessageGap", { roomID, fromSeq, toSeq });
        return;
      }
      default:
        this.log(`ignoring push ${frame.push}`);
        return;
    }
  }
  // ----- timers -----------------------------------------------------------------
  onTick() {
    const now = this.now();
    const limit = this.config.requestTimeout;
    const expired = this.queued.filter((q) => now >= q.call.deadline);
    if (expired.length > 0) {
      this.queued = this.queued.filter((q) => now < q.call.deadline);
      for (const { call } of expired) {
        this.failCall(call, `no connection within ${limit} ms`);
      }
    }
    let dead = false;
    const quiet = now - this.lastReceived >= limit;
    for (const [id, p] of [...this.pending]) {
      if (now < p.deadline) {
        continue;
      }
      this.pending.delete(id);
      const what = p.what;
      if (what.kind === "call") {
        this.failCall(what.call, `no reply within ${limit} ms`);
      } else if (what.kind === "logout") {
        this.goIdle(0 /* Success */, "logged out (the server did not answer)");
        what.done();
        return;
      } else if (quiet) {
        dead = true;
      } else {
        p.deadline = now + limit;
        this.pending.set(id, p);
      }
    }
    if (dead) {
      this.connectionLost("the server stopped answering");
      return;
    }
    const link = this.link;
    if (link.kind === "online" && now - link.lastSent >= this.config.heartbeatInterval && !this.heartbeatInFlight) {
      this.heartbeatInFlight = true;
      if (!this.sendInternal("ping", {}, { kind: "heartbeat" })) {
        return;
      }
    }
    const seq = this.lastInboxSeq;
    if (this.isReady() && !this.ackInFlight && now - this.lastAck >= this.config.ackInterval && seq !== null && seq > this.ackedInboxSeq) {
      this.ackInFlight = true;
      this.lastAck = now;
      this.sendInternal("ackInbox", { inboxSeq: seq }, { kind: "ack", seq });
    }
  }
};

// src/api.ts
var VERSION = "0.1.0";
var DEFAULT_LOG_SIZE = 256 * 1024;
var instance = null;
function str2(value) {
  return typeof value === "string" ? value : "";
}
function num2(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}
function stringMap(value) {
  const out = {};
  if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      out[k] = str2(v);
    }
  }
  return out;
}
function fullInfo(data) {
  const info = data["roomInfo"] ?? {};
  return { baseInfo: { roomID: str2(info["roomID"]), roomName: str2(info["roomName"]) } };
}
function requireText(field, value) {
  if (typeof value !== "string" || value === "") {
    return paramError(`${field}: must not be empty`);
  }
  return null;
}
function requireCount(count) {
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1) {
    return paramError(`count: must be 1-100, got ${String(count)}`);
  }
  return null;
}
function duration(field, value, fallback) {
  if (value === void 0) {
    return fallback;
  }
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw paramError(`${field}: must be a number of milliseconds >= 0, got ${String(value)}`);
  }
  return value;
}
function defaultServer() {
  const loc = globalThis.location;
  if (loc === void 0 || typeof loc.host !== "string" || loc.host === "") {
    return null;
  }
  const scheme = loc.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${loc.host}/ws`;
}
function defaultTimers() {
  const perf = globalThis.performance;
  return {
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle),
    now: perf !== void 0 ? () => perf.now() : () => Date.now()
  };
}
function resolveConfig(config) {
  const c = typeof config === "number" ? { appID: config } : config ?? { appID: 0 };
  if (typeof c !== "object") {
    throw paramError("config: pass the AppID or {appID, server}");
  }
  const appID = c.appID;
  if (typeof appID !== "number" || !Number.isInteger(appID) || appID < 1 || appID > 4294967295) {
    throw paramError(`appID: must be a non-zero 32-bit unsigned integer, got ${String(appID)}`);
  }
  let urls;
  if (c.server === void 0) {
    const url = defaultServer();
    if (url === null) {
      throw paramError("server: give the ws:// URL of the server (there is no page to take it from)");
    }
    urls = [url];
  } else {
    urls = Array.isArray(c.server) ? [...c.server] : [c.server];
  }
  if (urls.length === 0) {
    throw paramError("server: give at least one ws://HOST:PORT/ws");
  }
  for (const url of urls) {
    if (typeof url !== "string" || !/^wss?:\/\/[^/]/i.test(url)) {
      throw paramError(`server: ${String(url)} is not a ws:// or wss:// URL`);
    }
  }
  const ws = c.WebSocket ?? globalThis.WebSocket;
  if (typeof ws !== "function") {
    throw paramError("WebSocket: this environment has no WebSocket; pass one in the config");
  }
  const giveUp = c.reconnectGiveUpAfter === null ? null : duration("reconnectGiveUpAfter", c.reconnectGiveUpAfter, 3e5);
  const rate = c.sendRatePerSecond ?? 10;
  if (typeof rate !== "number" || !Number.isFinite(rate) || rate < 0) {
    throw paramError(`sendRatePerSecond: must be a number >= 0, got ${String(rate)}`);
  }
  return {
    engine: {
      appID,
      urls,
      requestTimeout: duration("requestTimeout", c.requestTimeout, 1e4),
      heartbeatInterval: duration("heartbeatInterval", c.heartbeatInterval, 25e3),
      reconnectMinDelay: duration("reconnectMinDelay", c.reconnectMinDelay, 500),
      reconnectMaxDelay: duration("reconnectMaxDelay", c.reconnectMaxDelay, 3e4),
      reconnectGiveUpAfter: giveUp,
      ackInterval: duration("ackInterval", c.ackInterval, 1e3),
      watchNetwork: c.watchNetwork ?? true,
      WebSocket: ws,
      timers: c.timers ?? defaultTimers(),
      random: c.random ?? Math.random
    },
    sendRatePerSecond: rate,
    logger: c.logger ?? null
  };
}
var ZIM = class _ZIM {
  constructor(resolved) {
    this.handlers = /* @__PURE__ */ new Map();
    /** Recent log lines for uploadLog, oldest first, and their total size. */
    this.logLines = [];
    this.logBytes = 0;
    this.logSize = DEFAULT_LOG_SIZE;
    this.lastLocalID = 0;
    this.batches = /* @__PURE__ */ new Map();
    this.rate = resolved.sendRatePerSecond;
    this.timers = resolved.engine.timers;
    this.appID = resolved.engine.appID;
    this.userLogger = resolved.logger;
    this.tokens = this.rate;
    this.tokensAt = this.timers.now();
    this.engine = new Engine(
      { ...resolved.engine, logger: (level, line) => this.log(level, line) },
      (name, data) => this.deliver(name, data)
    );
    this.log("info", `create appID=${this.appID} urls=${resolved.engine.urls.join(",")}`);
  }
  /**
   * Creates the instance: `ZIM.create(appID)` (server: `/ws` of the page's
   * origin) or `ZIM.create({appID, server, ...})`. Like ZIM, only one instance
   * exists at a time: while it does, `create` returns `null` (use
   * `getInstance`, or `destroy` it first).
   *
   * Throws `{code: 6000001, message}` for an invalid config.
   */
  static create(config) {
    if (instance !== null) {
      return null;
    }
    instance = new _ZIM(resolveConfig(config));
    return instance;
  }
  /** The instance made by `create`, or `null`. */
  static getInstance() {
    return instance;
  }
  /** The SDK's version. */
  static getVersion() {
    return VERSION;
  }
  /**
   * Destroys the instance: closes the connection without logging out (the
   * server keeps room memberships for its grace period); waiting and later
   * calls fail with 6000002. Idempotent.
   */
  destroy() {
    if (instance === this) {
      instance = null;
    }
    for (const batch of this.batches.values()) {
      for (const w of batch.waiting) {
        w.reject(destroyedError());
      }
    }
    this.batches.clear();
    this.engine.destroy();
  }
  /** Registers a handler; several may be registered for one event. */
  on(eventName, handler) {
    if (typeof handler !== "function") {
      return;
    }
    const list = this.handlers.get(eventName) ?? [];
    list.push(handler);
    this.handlers.set(eventName, list);
  }
  /** Removes `handler`, or every handler of the event when none is given. */
  off(eventName, handler) {
    if (handler === void 0) {
      this.handlers.delete(eventName);
      return;
    }
    const list = (this.handlers.get(eventName) ?? []).filter((h) => h !== handler);
    if (list.length > 0) {
      this.handlers.set(eventName, list);
    } else {
      this.handlers.delete(eventName);
    }
  }
  /** confab: the current connection state. */
  getConnectionState() {
    return this.engine.connectionState();
  }
  // ----- session ----------------------------------------------------------------
  /**
   * Logs in: connects to the first reachable server URL and authenticates the
   * user with a Token04 for this AppID and userID. Peer messages received
   * while offline follow as `receivePeerMessage` events.
   */
  login(userInfo, token) {
    if (this.engine.isDestroyed()) {
      return Promise.reject(destroyedError());
    }
    if (typeof userInfo !== "object" || userInfo === null) {
      return Promise.reject(paramError("userInfo: must be an object {userID, userName}"));
    }
    const bad = requireText("userID", userInfo.userID) ?? requireText("token", token);
    if (bad !== null) {
      return Promise.reject(bad);
    }
    if (userInfo.userName !== void 0 && typeof userInfo.userName !== "string") {
      return Promise.reject(paramError("userName: must be a string"));
    }
    return this.engine.login(userInfo, token);
  }
  /** Logs out: leaves all rooms and closes the connection. */
  logout() {
    return this.engine.logout();
  }
  /** Replaces the session's token (after `tokenWillExpire`); reconnects use the new one. */
  async renewToken(token) {
    this.check();
    const bad = requireText("token", token);
    if (bad !== null) {
      throw bad;
    }
    const data = await this.engine.call("renewToken", { token }, false);
    return { token: str2(data["token"]) || token, tokenExpire: num2(data["tokenExpire"]) };
  }
  // ----- messages ----------------------------------------------------------------
  /**
   * Sends a Text or Command message to a user. Text is stored (and reaches an
   * offline receiver at its next login); the promise resolves once it is.
   */
  sendPeerMessage(message, toUserID, config) {
    return this.sendMessage(message, toUserID, 0 /* Peer */, config);
  }
  /** Sends a Text, Command or Barrage message to a room this user is in. */
  sendRoomMessage(message, toRoomID, config) {
    return this.sendMessage(message, toRoomID, 1 /* Room */, config);
  }
  /**
   * A page of a conversation's stored messages: a Peer conversation with the
   * user `conversationID`, or a Room this user is in.
   */
  async queryHistoryMessage(conversationID, conversationType, config) {
    this.check();
    const bad = requireText("conversationID", conversationID) ?? (conversationType !== 0 /* Peer */ && conversationType !== 1 /* Room */ ? paramError(`conversationType: must be 0 (Peer) or 1 (Room), got ${String(conversationType)}`) : null) ?? requireCount(config?.count);
    if (bad !== null) {
      throw bad;
    }
    const query = { count: config.count, reverse: config.reverse === true };
    if (config.nextMessage !== void 0 && config.nextMessage !== null) {
      query["nextMessage"] = { conversationSeq: config.nextMessage.conversationSeq };
    }
    const data = await this.engine.call(
      "queryHistoryMessage",
      { conversationID, conversationType, config: query },
      false
    );
    const me = this.engine.userID();
    return {
      conversationID: str2(data["conversationID"]) || conversationID,
      conversationType,
      messageList: wireMessages(data["messageList"]).map((m) => messageFromWire(m, me))
    };
  }
  // ----- rooms ---------------------------------------------------------------------
  /** Creates a room and joins it. */
  async createRoom(roomInfo, config) {
    this.check();
    const data = await this.engine.call("createRoom", this.roomRequest(roomInfo, config), false);
    return { roomInfo: fullInfo(data) };
  }
  /** Joins an existing room. */
  async joinRoom(roomID) {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call("joinRoom", { roomID }, false);
    return { roomInfo: fullInfo(data) };
  }
  /** Joins a room, creating it first if it does not exist. */
  async enterRoom(roomInfo, config) {
    this.check();
    const data = await this.engine.call("enterRoom", this.roomRequest(roomInfo, config), false);
    return { roomInfo: fullInfo(data), created: data["created"] === true };
  }
  /** Leaves a room. */
  async leaveRoom(roomID) {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call("leaveRoom", { roomID }, false);
    return { roomID: str2(data["roomID"]) || roomID };
  }
  /** A page of a room's members: `nextFlag` `""` first, then the returned one until it is `""`. */
  async queryRoomMemberList(roomID, config) {
    this.check();
    this.requireRoom(roomID);
    const bad = requireCount(config?.count);
    if (bad !== null) {
      throw bad;
    }
    const data = await this.engine.call(
      "queryRoomMemberList",
      { roomID, config: { nextFlag: config.nextFlag ?? "", count: config.count } },
      false
    );
    const list = Array.isArray(data["memberList"]) ? data["memberList"] : [];
    return {
      roomID: str2(data["roomID"]) || roomID,
      memberList: list.map((m) => ({ userID: str2(m["userID"]), userName: str2(m["userName"]) })),
      nextFlag: str2(data["nextFlag"])
    };
  }
  /** How many members a room has (members within their reconnect grace period count). */
  async queryRoomOnlineMemberCount(roomID) {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call("queryRoomOnlineMemberCount", { roomID }, false);
    return { roomID: str2(data["roomID"]) || roomID, count: num2(data["count"]) };
  }
  /**
   * Sets room attributes; `errorKeys` lists keys owned by someone else (without
   * `isForce`). Between begin- and endRoomAttributesBatchOperation the change
   * joins the batch and resolves when the batch is applied.
   */
  async setRoomAttributes(roomAttributes, roomID, config) {
    this.check();
    return this.attributes("set", roomID, stringMapChecked(roomAttributes), [], config ?? {});
  }
  /** Deletes room attributes; `errorKeys` lists keys that could not be deleted. */
  async deleteRoomAttributes(keys, roomID, config) {
    const list = Array.isArray(keys) ? keys.filter((k) => typeof k === "string") : null;
    return this.attributes("delete", roomID, {}, list, config ?? {});
  }
  /**
   * Starts collecting setRoomAttributes / deleteRoomAttributes calls for
   * `roomID`; endRoomAttributesBatchOperation applies them in one step (one
   * `roomAttributesBatchUpdated` event for the members).
   */
  beginRoomAttributesBatchOperation(roomID, config) {
    if (this.engine.isDestroyed() || typeof roomID !== "string" || roomID === "") {
      return;
    }
    const existing = this.batches.get(roomID);
    if (existing !== void 0) {
      existing.config = config ?? existing.config;
      return;
    }
    this.batches.set(roomID, { config: config ?? {}, set: {}, keys: [], waiting: [] });
  }
  /** Applies the batch started with beginRoomAttributesBatchOperation. */
  async endRoomAttributesBatchOperation(roomID) {
    this.check();
    this.requireRoom(roomID);
    const batch = this.batches.get(roomID);
    if (batch === void 0) {
      throw paramError(`roomID: no batch operation was begun for ${roomID}`);
    }
    this.batches.delete(roomID);
    try {
      const data = await this.engine.call(
        "batchRoomAttributes",
        { roomID, roomAttributes: batch.set, keys: batch.keys, config: setConfig(batch.config) },
        false
      );
      const errorKeys = stringList(data["errorKeys"]);
      for (const w of batch.waiting) {
        w.resolve({ roomID, errorKeys: errorKeys.filter((k) => w.keys.includes(k)) });
      }
      return { roomID: str2(data["roomID"]) || roomID, errorKeys };
    } catch (err) {
      for (const w of batch.waiting) {
        w.reject(err);
      }
      throw err;
    }
  }
  /** All attributes of a room. */
  async queryRoomAllAttributes(roomID) {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call("queryRoomAllAttributes", { roomID }, false);
    return { roomID: str2(data["roomID"]) || roomID, roomAttributes: stringMap(data["roomAttributes"]) };
  }
  // ----- logs ----------------------------------------------------------------------
  /**
   * ZIM's setLogConfig. The web SDK keeps its log in memory: `logSize` caps it
   * (bytes, default 256 KiB, at least 1024). `logPath` is ignored.
   */
  setLogConfig(config) {
    const size = config?.logSize;
    if (typeof size === "number" && Number.isFinite(size)) {
      this.logSize = Math.max(1024, size);
      this.trimLog();
    }
  }
  /**
   * Uploads the SDK's recent log lines to the server (`POST /v1/logs` on the
   * host of the current or last login's URL), authenticated with that login's
   * userID and token. 6000121 before any login, 6000010 when it fails.
   */
  async uploadLog() {
    this.check();
    const creds = this.engine.credentials();
    if (creds === null) {
      throw notLoggedIn("uploadLog");
    }
    const target = creds.url.replace(/^ws/i, "http").replace(/^(https?:\/\/[^/]+).*$/i, "$1/v1/logs");
    const fetchFn = globalThis.fetch;
    if (typeof fetchFn !== "function") {
      throw zimError(6000010 /* LogUploadFailed */, "uploadLog: this environment has no fetch");
    }
    let status = 0;
    let answer = {};
    try {
      const response = await fetchFn(target, {
        method: "POST",
        headers: {
          "X-Confab-App-Id": String(this.appID),
          "X-Confab-User-Id": creds.userID,
          Authorization: `Bearer ${creds.token}`,
          "Content-Type": "text/plain"
        },
        body: this.logLines.join("")
      });
      status = response.status;
      try {
        answer = await response.json();
      } catch {
        answer = {};
      }
    } catch (err) {
      throw zimError(6000010 /* LogUploadFailed */, `uploadLog: ${String(err)}`);
    }
    if (status === 200 && answer.code === 0) {
      return;
    }
    throw zimError(
      6000010 /* LogUploadFailed */,
      `the server refused the log (HTTP ${status}): ${str2(answer.message)}`
    );
  }
  // ----- internals -------------------------------------------------------------------
  deliver(name, data) {
    for (const handler of [...this.handlers.get(name) ?? []]) {
      try {
        handler(this, data);
      } catch (err) {
        this.log("warn", `a ${name} handler threw: ${String(err)}`);
        const c = globalThis.console;
        c?.error(err);
      }
    }
  }
  log(level, line) {
    const text = `${(/* @__PURE__ */ new Date()).toISOString()} ${level.toUpperCase()} ${line}
`;
    this.logLines.push(text);
    this.logBytes += text.length;
    this.trimLog();
    this.userLogger?.(level, line);
  }
  trimLog() {
    while (this.logBytes > this.logSize && this.logLines.length > 1) {
      this.logBytes -= this.logLines.shift().length;
    }
  }
  check() {
    if (this.engine.isDestroyed()) {
      throw destroyedError();
    }
  }
  requireRoom(roomID) {
    const bad = requireText("roomID", roomID);
    if (bad !== null) {
      throw bad;
    }
  }
  roomRequest(roomInfo, config) {
    if (typeof roomInfo !== "object" || roomInfo === null) {
      throw paramError("roomInfo: must be an object {roomID, roomName}");
    }
    this.requireRoom(roomInfo.roomID);
    return {
      roomInfo: { roomID: roomInfo.roomID, roomName: roomInfo.roomName ?? "" },
      config: {
        roomAttributes: stringMapChecked(config?.roomAttributes ?? {}),
        roomDestroyDelayTime: config?.roomDestroyDelayTime ?? 0
      }
    };
  }
  async attributes(kind, roomID, set, keys, config) {
    this.check();
    this.requireRoom(roomID);
    if (keys === null) {
      throw paramError("keys: must be an array of strings");
    }
    const batch = this.batches.get(roomID);
    if (batch !== void 0) {
      for (const [k, v] of Object.entries(set)) {
        batch.set[k] = v;
        batch.keys = batch.keys.filter((key) => key !== k);
      }
      for (const k of keys) {
        delete batch.set[k];
        if (!batch.keys.includes(k)) {
          batch.keys.push(k);
        }
      }
      return new Promise((resolve, reject) => {
        batch.waiting.push({ keys: [...Object.keys(set), ...keys], resolve, reject });
      });
    }
    const data = kind === "set" ? await this.engine.call(
      "setRoomAttributes",
      { roomID, roomAttributes: set, config: setConfig(config) },
      false
    ) : await this.engine.call(
      "deleteRoomAttributes",
      { roomID, keys, config: { isForce: config.isForce === true } },
      false
    );
    return { roomID: str2(data["roomID"]) || roomID, errorKeys: stringList(data["errorKeys"]) };
  }
  /** A fresh localMessageID: the time in ms × 1000, or the previous + 1 if larger. */
  nextLocalID() {
    const id = Math.max(Date.now() * 1e3, this.lastLocalID + 1);
    this.lastLocalID = id;
    return id;
  }
  /** Takes a token from the send-rate bucket; false when it is empty. */
  takeSendToken() {
    if (this.rate <= 0) {
      return true;
    }
    const now = this.timers.now();
    this.tokens = Math.min(this.rate, this.tokens + (now - this.tokensAt) * this.rate / 1e3);
    this.tokensAt = now;
    if (this.tokens < 1) {
      return false;
    }
    this.tokens -= 1;
    return true;
  }
  async sendMessage(message, target, conversationType, config) {
    this.check();
    const isRoom = conversationType === 1 /* Room */;
    const op = isRoom ? "sendRoomMessage" : "sendPeerMessage";
    const badTarget = requireText(isRoom ? "roomID" : "toUserID", target);
    if (badTarget !== null) {
      throw badTarget;
    }
    if (typeof message !== "object" || message === null) {
      throw paramError("message: must be a message object {type, message}");
    }
    const type = message.type;
    let content;
    let wire;
    if (type === 1 /* Text */ || type === 20 /* Barrage */ && isRoom) {
      if (typeof message.message !== "string") {
        throw paramError(`message: a ${ZIMMessageType[type]} message needs a string`);
      }
      content = message.message;
      wire = content;
    } else if (type === 2 /* Command */) {
      if (message.message instanceof Uint8Array) {
        content = message.message;
      } else if (typeof message.message === "string") {
        content = utf8(message.message);
      } else {
        throw paramError("message: a Command message needs a Uint8Array (or a string)");
      }
      wire = bytesToBase64(content);
    } else {
      const name = ZIMMessageType[type] ?? "Unknown";
      throw paramError(
        `type: ${name} (${String(type)}) cannot be sent ${isRoom ? "to a room (Text, Command and Barrage can)" : "to a user (Text and Command can)"}`
      );
    }
    const priority = config?.priority ?? 1 /* Low */;
    if (priority !== 1 && priority !== 2 && priority !== 3) {
      throw paramError(`priority: must be 1 (Low), 2 (Medium) or 3 (High), got ${String(priority)}`);
    }
    if (this.engine.connectionState() === 0 /* Disconnected */) {
      throw notLoggedIn(op);
    }
    if (type !== 20 /* Barrage */ && !this.takeSendToken()) {
      throw zimError(
        6000005 /* SdkRateLimit */,
        `at most ${this.rate} Text and Command messages per second may be sent`
      );
    }
    const localMessageID = this.nextLocalID();
    const request = isRoom ? { roomID: target, type, message: wire, localMessageID, priority } : { toUserID: target, type, message: wire, localMessageID, priority };
    const data = await this.engine.call(op, request, true);
    const seq = num2(data["conversationSeq"]);
    const sent = {
      type,
      message: content,
      messageID: num2(data["messageID"]),
      localMessageID: num2(data["localMessageID"]) || localMessageID,
      senderUserID: this.engine.userID(),
      timestamp: num2(data["timestamp"]),
      conversationID: target,
      conversationType,
      direction: 0 /* Send */,
      sentStatus: 1 /* Success */,
      orderKey: seq,
      conversationSeq: seq,
      priority
    };
    return { message: sent };
  }
};
function stringList(value) {
  return Array.isArray(value) ? value.filter((k) => typeof k === "string") : [];
}
function stringMapChecked(value) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw paramError("roomAttributes: must be an object of string values");
  }
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw paramError(`roomAttributes: the value of ${k} must be a string`);
    }
    out[k] = v;
  }
  return out;
}
function setConfig(config) {
  return {
    isForce: config.isForce === true,
    isUpdateOwner: config.isUpdateOwner === true,
    isDeleteAfterOwnerLeft: config.isDeleteAfterOwnerLeft === true
  };
}
export {
  VERSION,
  ZIM,
  ZIMConnectionEvent,
  ZIMConnectionState,
  ZIMConversationType,
  ZIMErrorCode,
  ZIMMessageDirection,
  ZIMMessagePriority,
  ZIMMessageSentStatus,
  ZIMMessageType,
  ZIMRoomAttributesUpdateAction,
  ZIMRoomEvent,
  ZIMRoomState,
  ZIM as default
};
