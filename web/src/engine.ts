/**
 * The engine: owns the WebSocket and all connection state, like the Rust SDK's
 * engine task (crates/confab-sdk/src/engine.rs), driven by socket callbacks and
 * timers instead of a loop.
 *
 * It matches replies to calls by request id with a deadline per call, sends
 * heartbeats, reconnects with exponential backoff and jitter across the URL
 * list, logs in again with `lastInboxSeq` and `roomSeqs`, waits for a barrier
 * `ping` (answered after the server's catch-up and room restoration), re-joins
 * the rooms the server did not restore, and dedupes what the server replays so
 * the app sees each stored message once and in order.
 *
 * Invariants:
 * - A call is answered exactly once: with its reply, or with an error when its
 *   deadline passes, the session ends, or the instance is destroyed.
 * - Calls are written in the order they were made (queued calls by call order).
 * - Only retry-safe requests are resent after a reconnect: stored (Text) sends,
 *   which the server dedups by `localMessageID`, and requests that change
 *   nothing or are idempotent (queries, `joinRoom`, `renewToken`). Everything
 *   else in flight when the connection drops fails with 6000104 / 6000204.
 * - Peer messages reach the app once each, in inbox order (dedupe by
 *   `inboxSeq`); stored room messages once each, in seq order (dedupe by a
 *   per-room watermark plus the set of seqs seen above it).
 * - Events are queued while the engine changes state and handed to the app
 *   after each step, so a handler that calls the SDK never sees a half-made
 *   change.
 */

import {
  ZIMConnectionEvent,
  ZIMConnectionState,
  ZIMErrorCode,
  ZIMRoomEvent,
  ZIMRoomState,
} from './enums';
import {
  describeError,
  destroyedError,
  networkError,
  notLoggedIn,
  zimError,
} from './errors';
import type {
  ZIMError,
  ZIMEventName,
  ZIMMessage,
  ZIMRoomAttributesUpdateInfo,
  ZIMRoomMemberInfo,
  ZIMTimers,
  ZIMUserInfo,
  ZIMWebSocketConstructor,
  ZIMWebSocketLike,
} from './types';
import {
  decodeServerFrame,
  encodeRequest,
  messageFromWire,
  wireMessages,
  type WirePush,
  type WireReply,
} from './wire';

/** How often the engine checks deadlines, heartbeats and acknowledgements (ms). */
const TICK = 100;

/** Seqs remembered above a room's watermark before the oldest gap is given up on. */
export const ROOM_SEEN_MAX = 4096;

/** WebSocket.OPEN */
const OPEN = 1;

/** The engine's resolved configuration. */
export interface EngineConfig {
  appID: number;
  urls: string[];
  requestTimeout: number;
  heartbeatInterval: number;
  reconnectMinDelay: number;
  reconnectMaxDelay: number;
  reconnectGiveUpAfter: number | null;
  ackInterval: number;
  watchNetwork: boolean;
  WebSocket: ZIMWebSocketConstructor;
  timers: ZIMTimers;
  random: () => number;
  logger: ((level: 'info' | 'warn', line: string) => void) | null;
}

export type Data = Record<string, unknown>;

/** A request of the app, waiting for its reply. */
interface Call {
  op: string;
  data: Data;
  /** When it fails with a network code if it has no reply yet (ms, timers.now()). */
  deadline: number;
  /** A message send: network failures are 6000204. */
  isSend: boolean;
  /** May be written again after the connection dropped with it in flight. */
  retrySafe: boolean;
  resolve: (data: Data) => void;
  reject: (error: ZIMError) => void;
}

/** What a request on the wire is waiting for. */
type Waiting =
  | { kind: 'call'; call: Call }
  | { kind: 'logout'; done: () => void }
  /** The ping after a re-login. */
  | { kind: 'barrier' }
  /** A room re-joined after a re-login. */
  | { kind: 'rejoin'; room: string }
  | { kind: 'ack'; seq: number }
  | { kind: 'heartbeat' };

interface Pending {
  /** The call's order (0 for the engine's own requests). */
  seq: number;
  deadline: number;
  what: Waiting;
}

/** A login the app asked for, while it tries the URLs. */
interface LoginAttempt {
  resolve: () => void;
  reject: (error: ZIMError) => void;
  /** URLs tried so far, this one included. */
  tried: number;
}

/** One connect + login attempt. */
interface Handshake {
  ws: ZIMWebSocketLike | null;
  url: number;
  login: LoginAttempt | null;
  timer: unknown;
  done: boolean;
}

type HandshakeResult =
  | { kind: 'ok'; ws: ZIMWebSocketLike; reply: Data }
  | { kind: 'rejected'; error: ZIMError }
  | { kind: 'network'; message: string };

/** How far a logged-in connection is from serving the app's calls. */
type Phase =
  | { kind: 'ready' }
  /** After a re-login: waiting for the barrier ping's reply. */
  | { kind: 'restoring' }
  /** Re-joining rooms the server did not restore; `left` replies to go. */
  | { kind: 'rejoining'; left: number };

/** The connection, as far as there is one. */
type Link =
  | { kind: 'idle' }
  | { kind: 'connecting'; hs: Handshake }
  | { kind: 'backoff'; timer: unknown }
  | { kind: 'online'; ws: ZIMWebSocketLike; phase: Phase; lastSent: number };

interface Session {
  user: { userID: string; userName: string };
  token: string;
}

interface Reconnect {
  /** When the connection was lost (for giving up). */
  since: number;
  /** Failed attempts so far (for the backoff). */
  attempt: number;
}

/**
 * Gap-tolerant duplicate detection for one room: `state.last` is the contiguous
 * watermark, `state.seen` the seqs above it already delivered. Returns whether
 * `seq` is new, and records it.
 */
export function markSeq(state: { last: number; seen: Set<number> }, seq: number): boolean {
  if (seq <= state.last || state.seen.has(seq)) {
    return false;
  }
  state.seen.add(seq);
  while (state.seen.delete(state.last + 1)) {
    state.last += 1;
  }
  while (state.seen.size > ROOM_SEEN_MAX) {
    // Give up on the oldest gap: move the watermark to the next seen seq.
    const first = Math.min(...state.seen);
    state.seen.delete(first);
    state.last = first;
    while (state.seen.delete(state.last + 1)) {
      state.last += 1;
    }
  }
  return true;
}

/** Whether a request may be written again after the connection dropped with it in flight. */
export function isRetrySafe(op: string, data: Data): boolean {
  switch (op) {
    case 'sendPeerMessage':
    case 'sendRoomMessage':
      return data['type'] === 1; // stored Text: the server dedups by localMessageID
    case 'ping':
    case 'renewToken':
    case 'joinRoom':
    case 'queryRoomMemberList':
    case 'queryRoomOnlineMemberCount':
    case 'queryRoomAllAttributes':
    case 'queryHistoryMessage':
      return true;
    default:
      return false;
  }
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function members(value: unknown): ZIMRoomMemberInfo[] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value
    .filter((m): m is Data => typeof m === 'object' && m !== null)
    .map((m) => ({ userID: str(m['userID']), userName: str(m['userName']) }));
}

function attributeInfos(value: unknown): ZIMRoomAttributesUpdateInfo[] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value
    .filter((i): i is Data => typeof i === 'object' && i !== null)
    .map((i) => {
      const attrs: Record<string, string> = {};
      const raw = i['roomAttributes'];
      if (typeof raw === 'object' && raw !== null) {
        for (const [k, v] of Object.entries(raw as Data)) {
          attrs[k] = str(v);
        }
      }
      return { action: num(i['action']), roomAttributes: attrs };
    });
}

/** An op and its harmless parameters, for the log: never tokens or bodies. */
function describe(op: string, data: Data): string {
  switch (op) {
    case 'sendPeerMessage':
      return `${op} toUserID=${str(data['toUserID'])} type=${num(data['type'])} localMessageID=${num(data['localMessageID'])}`;
    case 'sendRoomMessage':
      return `${op} roomID=${str(data['roomID'])} type=${num(data['type'])} localMessageID=${num(data['localMessageID'])}`;
    case 'createRoom':
    case 'enterRoom': {
      const info = data['roomInfo'] as Data | undefined;
      return `${op} roomID=${str(info?.['roomID'])}`;
    }
    case 'joinRoom':
      return `${op} roomID=${str(data['roomID'])} lastSeq=${String(data['lastSeq'] ?? 'none')}`;
    case 'ackInbox':
      return `${op} inboxSeq=${num(data['inboxSeq'])}`;
    default:
      return typeof data['roomID'] === 'string' ? `${op} roomID=${data['roomID']}` : op;
  }
}

/** Closes a socket without hearing from it again. */
function closeQuietly(ws: ZIMWebSocketLike | null): void {
  if (!ws) {
    return;
  }
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
  try {
    ws.close(1000);
  } catch {
    // already closed
  }
}

export class Engine {
  private readonly config: EngineConfig;
  private readonly deliver: (name: ZIMEventName, data: object) => void;
  private state: ZIMConnectionState = ZIMConnectionState.Disconnected;
  private destroyed = false;
  private link: Link = { kind: 'idle' };
  private session: Session | null = null;
  /** Calls waiting for a ready connection (kept sorted by call order). */
  private queued: Array<{ seq: number; call: Call }> = [];
  /** Requests on the wire, by request id. */
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextSeq = 1;
  /** The URL to use for the next connection attempt. */
  private nextUrl = 0;
  /** Set while reconnecting (from the loss until the connection is ready). */
  private reconnect: Reconnect | null = null;
  /** The server's reason, when it announced a disconnect it wants us to recover from. */
  private disconnectHint: string | null = null;
  /** The user the delivery positions below belong to. */
  private seqsUser: string | null = null;
  /** The highest peer inbox position delivered to the app (or skipped by a gap). */
  private lastInboxSeq: number | null = null;
  /** The highest position acknowledged to the server. */
  private ackedInboxSeq = 0;
  private ackInFlight = false;
  private lastAck = 0;
  /** When the server last sent anything. */
  private lastReceived = 0;
  private heartbeatInFlight = false;
  /** Per room: the contiguous seq watermark and the seqs seen above it. */
  private readonly rooms = new Map<string, { last: number; seen: Set<number> }>();
  /** Rooms this user is in, as far as the SDK knows. */
  private joined = new Set<string>();
  /** Rooms the server restored after the current login. */
  private readonly restored = new Set<string>();
  /** The user, token and URL of the current or most recent login (for log uploads). */
  private creds: { userID: string; token: string; url: string } | null = null;
  /** Events waiting to be handed to the app. */
  private readonly events: Array<[ZIMEventName, object]> = [];
  private depth = 0;
  private flushing = false;
  private tickTimer: unknown = null;
  private readonly onOffline = (): void => {
    this.guard(() => {
      if (this.link.kind === 'online') {
        this.connectionLost('the browser went offline');
      }
    });
  };
  private readonly onOnline = (): void => {
    this.guard(() => {
      if (this.link.kind === 'backoff') {
        this.log('the browser is back online: reconnecting now');
        this.config.timers.clearTimeout(this.link.timer);
        this.onBackoffDone();
      }
    });
  };

  constructor(config: EngineConfig, deliver: (name: ZIMEventName, data: object) => void) {
    this.config = config;
    this.deliver = deliver;
    this.lastAck = config.timers.now();
    this.lastReceived = this.lastAck;
    const g = globalThis as { addEventListener?: (name: string, fn: () => void) => void };
    if (config.watchNetwork && typeof g.addEventListener === 'function') {
      g.addEventListener('offline', this.onOffline);
      g.addEventListener('online', this.onOnline);
    }
  }

  // ----- public side ---------------------------------------------------------

  connectionState(): ZIMConnectionState {
    return this.state;
  }

  isDestroyed(): boolean {
    return this.destroyed;
  }

  /** The logged-in (or logging-in) user's ID, or `""`. */
  userID(): string {
    return this.me();
  }

  /** Who is (or was last) logged in, and where; `null` before the first login. */
  credentials(): { userID: string; token: string; url: string } | null {
    return this.creds === null ? null : { ...this.creds };
  }

  login(user: ZIMUserInfo, token: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session !== null || this.link.kind !== 'idle') {
          reject(
            zimError(
              ZIMErrorCode.AlreadyLoggedIn,
              'already logged in (or a login or logout is in progress); call logout first',
            ),
          );
          return;
        }
        if (this.seqsUser !== user.userID) {
          // Delivery positions belong to one user.
          this.seqsUser = user.userID;
          this.lastInboxSeq = null;
          this.ackedInboxSeq = 0;
          this.rooms.clear();
        }
        this.log(`login userID=${user.userID}`);
        this.session = { user: { userID: user.userID, userName: user.userName ?? '' }, token };
        this.creds = { userID: user.userID, token, url: this.config.urls[this.nextUrl] ?? '' };
        this.setState(ZIMConnectionState.Connecting, ZIMConnectionEvent.ActiveLogin, '');
        this.connect({ resolve, reject, tried: 1 });
      });
    });
  }

  logout(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session === null) {
          reject(notLoggedIn('logout'));
          return;
        }
        this.log('logout');
        if (this.link.kind === 'online') {
          // Acknowledge what the app has received first, so the user's next
          // session does not get it again; the server handles a connection's
          // requests in order, so this lands before the logout.
          const seq = this.lastInboxSeq;
          if (seq !== null && seq > this.ackedInboxSeq) {
            this.ackInFlight = true;
            if (!this.sendInternal('ackInbox', { inboxSeq: seq }, { kind: 'ack', seq })) {
              // The connection was lost: log out locally.
              this.goIdle(ZIMConnectionEvent.Success, 'logged out while not connected');
              resolve();
              return;
            }
          }
          // From now on calls get 6000121; the link goes when the reply comes.
          this.session = null;
          const id = this.nextId++;
          this.log(`request id=${id} op=logout`);
          const failed = this.writeText(encodeRequest(id, 'logout', {}));
          if (failed === null) {
            this.pending.set(id, {
              seq: 0,
              deadline: this.now() + this.config.requestTimeout,
              what: { kind: 'logout', done: () => resolve() },
            });
          } else {
            this.connectionLost(failed);
            resolve();
          }
        } else {
          // Not connected: log out locally. The server keeps the rooms for its
          // grace period, then removes the member.
          this.goIdle(ZIMConnectionEvent.Success, 'logged out while not connected');
          resolve();
        }
      });
    });
  }

  /** Sends `op` (queued while not ready) and resolves with the reply's `data`. */
  call(op: string, data: Data, isSend: boolean): Promise<Data> {
    return new Promise<Data>((resolve, reject) => {
      this.guard(() => {
        if (this.destroyed) {
          reject(destroyedError());
          return;
        }
        if (this.session === null) {
          reject(notLoggedIn(op));
          return;
        }
        const call: Call = {
          op,
          data,
          deadline: this.now() + this.config.requestTimeout,
          isSend,
          retrySafe: isRetrySafe(op, data),
          resolve,
          reject,
        };
        if (op === 'renewToken' && !this.isReady()) {
          // A re-login in the meantime should already use the new token.
          this.updateToken(str(data['token']));
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
  destroy(): void {
    this.guard(() => {
      if (this.destroyed) {
        return;
      }
      this.destroyed = true;
      this.log('destroyed');
      const g = globalThis as { removeEventListener?: (name: string, fn: () => void) => void };
      if (typeof g.removeEventListener === 'function') {
        g.removeEventListener('offline', this.onOffline);
        g.removeEventListener('online', this.onOnline);
      }
      const link = this.link;
      this.link = { kind: 'idle' };
      if (link.kind === 'online') {
        closeQuietly(link.ws);
      } else if (link.kind === 'connecting') {
        link.hs.done = true;
        this.config.timers.clearTimeout(link.hs.timer);
        closeQuietly(link.hs.ws);
        link.hs.login?.reject(destroyedError());
      } else if (link.kind === 'backoff') {
        this.config.timers.clearTimeout(link.timer);
      }
      for (const p of this.pending.values()) {
        if (p.what.kind === 'call') {
          p.what.call.reject(destroyedError());
        } else if (p.what.kind === 'logout') {
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
      if (this.state !== ZIMConnectionState.Disconnected) {
        this.setState(ZIMConnectionState.Disconnected, ZIMConnectionEvent.Success, 'destroyed');
      }
    });
  }

  // ----- small helpers -------------------------------------------------------

  private now(): number {
    return this.config.timers.now();
  }

  private log(line: string): void {
    this.config.logger?.('info', line);
  }

  private warn(line: string): void {
    this.config.logger?.('warn', line);
  }

  private me(): string {
    return this.session?.user.userID ?? this.seqsUser ?? '';
  }

  private isReady(): boolean {
    return this.link.kind === 'online' && this.link.phase.kind === 'ready';
  }

  /**
   * Runs one step of the engine; at the outermost level, hands the queued
   * events to the app afterwards and keeps the tick running while needed.
   */
  private guard(step: () => void): void {
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

  private flush(): void {
    if (this.flushing) {
      return; // a handler called the SDK: the outer flush goes on
    }
    this.flushing = true;
    try {
      for (let e = this.events.shift(); e !== undefined; e = this.events.shift()) {
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

  private emit(name: ZIMEventName, data: object): void {
    this.events.push([name, data]);
  }

  private ensureTick(): void {
    const busy =
      this.session !== null ||
      this.link.kind !== 'idle' ||
      this.pending.size > 0 ||
      this.queued.length > 0;
    if (this.destroyed || !busy || this.tickTimer !== null) {
      return;
    }
    this.tickTimer = this.config.timers.setTimeout(() => {
      this.tickTimer = null;
      this.guard(() => this.onTick());
    }, TICK);
  }

  private setState(state: ZIMConnectionState, event: ZIMConnectionEvent, extendedData: string): void {
    this.state = state;
    this.log(`state ${ZIMConnectionState[state]} event ${ZIMConnectionEvent[event]} ${extendedData}`);
    this.emit('connectionStateChanged', { state, event, extendedData });
  }

  private emitRoomState(roomID: string, state: ZIMRoomState, event: ZIMRoomEvent): void {
    this.log(`room ${roomID} state ${ZIMRoomState[state]} event ${ZIMRoomEvent[event]}`);
    this.emit('roomStateChanged', { roomID, state, event, extendedData: '' });
  }

  private room(roomID: string): { last: number; seen: Set<number> } {
    let r = this.rooms.get(roomID);
    if (r === undefined) {
      r = { last: 0, seen: new Set() };
      this.rooms.set(roomID, r);
    }
    return r;
  }

  /** Records a stored room message's seq; false if it was seen before. */
  private markRoomSeq(roomID: string, seq: number): boolean {
    return markSeq(this.room(roomID), seq);
  }

  /** Moves a room's watermark to at least `seq` (after a gap or a join). */
  private advanceRoomWatermark(roomID: string, seq: number): void {
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
  private writeText(text: string): string | null {
    const link = this.link;
    if (link.kind !== 'online') {
      return 'not connected';
    }
    if (link.ws.readyState !== OPEN) {
      return 'the connection is closing';
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
  private sendInternal(op: string, data: Data, what: Waiting): boolean {
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

  private enqueue(seq: number, call: Call): void {
    let i = this.queued.length;
    while (i > 0 && (this.queued[i - 1] as { seq: number }).seq > seq) {
      i--;
    }
    this.queued.splice(i, 0, { seq, call });
  }

  private updateToken(token: string): void {
    if (this.session !== null) {
      this.session.token = token;
    }
    if (this.creds !== null) {
      this.creds.token = token;
    }
  }

  private sendCall(seq: number, call: Call): void {
    if (this.now() >= call.deadline) {
      this.failCall(call, 'no connection in time');
      return;
    }
    const id = this.nextId++;
    this.log(`request id=${id} op=${describe(call.op, call.data)}`);
    if (call.op === 'leaveRoom') {
      // Not restored or re-joined after a reconnect from here on, whatever
      // becomes of this request.
      this.joined.delete(str(call.data['roomID']));
    }
    const failed = this.writeText(encodeRequest(id, call.op, call.data));
    if (failed === null) {
      this.pending.set(id, { seq, deadline: call.deadline, what: { kind: 'call', call } });
      return;
    }
    if (call.retrySafe) {
      this.enqueue(seq, call);
    } else {
      this.failCall(call, failed);
    }
    this.connectionLost(failed);
  }

  private failCall(call: Call, why: string): void {
    const err = networkError(call.isSend, `${call.op}: ${why}`);
    this.log(`call ${call.op} failed: ${err.code}`);
    call.reject(err);
  }

  private flushQueue(): void {
    while (this.isReady()) {
      const next = this.queued.shift();
      if (next === undefined) {
        break;
      }
      this.sendCall(next.seq, next.call);
    }
  }

  // ----- connecting -------------------------------------------------------------

  /** Starts connecting to `nextUrl` and logging in. */
  private connect(login: LoginAttempt | null): void {
    const session = this.session;
    if (session === null) {
      return;
    }
    const roomSeqs: Record<string, number> = {};
    for (const room of this.joined) {
      roomSeqs[room] = this.rooms.get(room)?.last ?? 0;
    }
    const request: Data = {
      appID: this.config.appID,
      userID: session.user.userID,
      userName: session.user.userName,
      token: session.token,
    };
    if (this.lastInboxSeq !== null) {
      request['lastInboxSeq'] = this.lastInboxSeq;
    }
    if (this.joined.size > 0) {
      request['roomSeqs'] = roomSeqs;
    }
    const urlIndex = this.nextUrl;
    const url = this.config.urls[urlIndex] as string;
    const id = this.nextId++;
    this.log(
      `connecting to ${url}: request id=${id} op=login userID=${session.user.userID} ` +
        `lastInboxSeq=${this.lastInboxSeq ?? 'none'} rooms=${this.joined.size}`,
    );
    this.disconnectHint = null;
    const hs: Handshake = { ws: null, url: urlIndex, login, timer: null, done: false };
    this.link = { kind: 'connecting', hs };
    const timers = this.config.timers;
    const finish = (result: HandshakeResult): void => {
      if (hs.done) {
        return;
      }
      hs.done = true;
      timers.clearTimeout(hs.timer);
      this.guard(() => this.onHandshake(hs, result));
    };
    const limit = this.config.requestTimeout;
    hs.timer = timers.setTimeout(() => {
      finish({ kind: 'network', message: `no login reply from ${url} within ${limit} ms` });
    }, limit);
    let ws: ZIMWebSocketLike;
    try {
      ws = new this.config.WebSocket(url);
    } catch (err) {
      // Answer asynchronously, as a failed connection would be.
      timers.setTimeout(() => {
        finish({ kind: 'network', message: `cannot connect to ${url}: ${String(err)}` });
      }, 0);
      return;
    }
    hs.ws = ws;
    ws.onopen = () => {
      try {
        ws.send(encodeRequest(id, 'login', request));
      } catch (err) {
        finish({ kind: 'network', message: `sending login to ${url} failed: ${String(err)}` });
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        return;
      }
      let frame;
      try {
        frame = decodeServerFrame(ev.data);
      } catch {
        return;
      }
      if (frame.kind === 'reply' && frame.reply.id === id) {
        const reply = frame.reply;
        if (reply.code !== 0) {
          finish({ kind: 'rejected', error: zimError(reply.code, reply.message) });
        } else {
          finish({ kind: 'ok', ws, reply: reply.data ?? {} });
        }
      } else if (frame.kind === 'push' && frame.push.push === 'disconnect') {
        const d = frame.push.data;
        finish({
          kind: 'network',
          message: `${url} disconnected during login: ${str(d['reason'])}: ${str(d['message'])}`,
        });
      }
    };
    ws.onclose = (ev) => {
      const why = ev.reason ? `${ev.code}: ${ev.reason}` : `${ev.code}`;
      finish({ kind: 'network', message: `cannot connect to ${url} or it closed the connection during login (${why})` });
    };
    ws.onerror = () => {
      // a close event follows
    };
  }

  private onHandshake(hs: Handshake, result: HandshakeResult): void {
    const link = this.link;
    if (link.kind !== 'connecting' || link.hs !== hs) {
      if (result.kind === 'ok') {
        closeQuietly(result.ws);
      }
      return;
    }
    this.link = { kind: 'idle' };
    const login = hs.login;
    const urls = this.config.urls.length;
    if (result.kind !== 'ok') {
      closeQuietly(hs.ws);
    }
    switch (result.kind) {
      case 'ok': {
        const ws = result.ws;
        this.log(
          `login reply code=0 (Success); logged in at ${this.config.urls[hs.url] ?? ''}: ` +
            `inboxSeq=${num(result.reply['inboxSeq'])} tokenExpire=${num(result.reply['tokenExpire'])}`,
        );
        this.nextUrl = hs.url;
        if (this.creds !== null) {
          this.creds.url = this.config.urls[hs.url] ?? '';
        }
        this.heartbeatInFlight = false;
        this.ackInFlight = false;
        this.restored.clear();
        const now = this.now();
        this.lastReceived = now;
        ws.onopen = null;
        ws.onmessage = (ev) => this.guard(() => this.onFrame(ws, ev.data));
        ws.onclose = (ev) =>
          this.guard(() => {
            if (this.link.kind === 'online' && this.link.ws === ws) {
              const why = ev.reason ? `${ev.code}: ${ev.reason}` : `${ev.code}`;
              this.connectionLost(`the connection closed (${why})`);
            }
          });
        ws.onerror = () => {
          // a close event follows
        };
        if (login !== null) {
          this.link = { kind: 'online', ws, phase: { kind: 'ready' }, lastSent: now };
          this.setState(ZIMConnectionState.Connected, ZIMConnectionEvent.Success, '');
          login.resolve();
          this.flushQueue();
        } else {
          this.link = { kind: 'online', ws, phase: { kind: 'restoring' }, lastSent: now };
          // The server answers this after its catch-up pushes and room
          // restoration: then the SDK knows which rooms came back.
          this.sendInternal('ping', {}, { kind: 'barrier' });
        }
        return;
      }
      case 'rejected': {
        const err = result.error;
        this.log(`login reply code=${err.code}`);
        if (login !== null) {
          this.goIdle(ZIMConnectionEvent.LoginInterrupted, describeError(err));
          login.reject(err);
          return;
        }
        if (err.code === ZIMErrorCode.TokenExpired) {
          this.goIdle(ZIMConnectionEvent.TokenExpired, describeError(err));
        } else if (
          err.code === ZIMErrorCode.LoginInternalError ||
          err.code === ZIMErrorCode.ServerRateLimit ||
          err.code === ZIMErrorCode.Failed
        ) {
          this.scheduleReconnect(false);
        } else {
          this.goIdle(ZIMConnectionEvent.LoginInterrupted, describeError(err));
        }
        return;
      }
      case 'network': {
        this.warn(result.message);
        this.nextUrl = (hs.url + 1) % urls;
        if (login !== null && login.tried < urls) {
          this.connect({ ...login, tried: login.tried + 1 });
        } else if (login !== null) {
          this.goIdle(ZIMConnectionEvent.LoginTimeout, result.message);
          login.reject(networkError(false, `login: ${result.message}`));
        } else {
          this.scheduleReconnect(false);
        }
        return;
      }
    }
  }

  /** Waits (with backoff) before the next reconnect attempt, or gives up. */
  private scheduleReconnect(first: boolean): void {
    const { reconnectMinDelay: min, reconnectMaxDelay: max, reconnectGiveUpAfter: giveUp } =
      this.config;
    if (this.reconnect === null) {
      this.reconnect = { since: this.now(), attempt: 0 };
    }
    const rc = this.reconnect;
    if (giveUp !== null && !first && this.now() - rc.since >= giveUp) {
      this.goIdle(
        ZIMConnectionEvent.LoginTimeout,
        `no connection for ${giveUp} ms: gave up reconnecting`,
      );
      return;
    }
    const base = Math.max(1, Math.min(min * 2 ** Math.min(rc.attempt, 16), max));
    const delay = Math.round(base / 2 + this.config.random() * (base / 2));
    rc.attempt += 1;
    this.log(`reconnect attempt ${rc.attempt} in ${delay} ms`);
    const timer = this.config.timers.setTimeout(() => {
      this.guard(() => {
        if (this.link.kind === 'backoff' && this.link.timer === timer) {
          this.onBackoffDone();
        }
      });
    }, delay);
    this.link = { kind: 'backoff', timer };
  }

  private onBackoffDone(): void {
    const giveUp = this.config.reconnectGiveUpAfter;
    if (giveUp !== null && this.reconnect !== null && this.now() - this.reconnect.since >= giveUp) {
      this.goIdle(
        ZIMConnectionEvent.LoginTimeout,
        `no connection for ${giveUp} ms: gave up reconnecting`,
      );
      return;
    }
    this.link = { kind: 'idle' };
    this.connect(null);
  }

  /**
   * The connection broke (or the server asked us to reconnect): requeue what is
   * safe to resend, fail the rest, and start reconnecting.
   */
  private connectionLost(reason: string): void {
    const link = this.link;
    if (link.kind !== 'online') {
      return;
    }
    this.link = { kind: 'idle' };
    closeQuietly(link.ws);
    const why = this.disconnectHint ?? reason;
    this.disconnectHint = null;
    this.warn(`connection lost: ${why}`);
    if (this.session === null) {
      // A logout was in flight: it is done as far as the app is concerned.
      this.goIdle(ZIMConnectionEvent.Success, 'logged out');
      return;
    }
    const now = this.now();
    const pending = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    this.pending.clear();
    for (const p of pending) {
      if (p.what.kind === 'call') {
        const call = p.what.call;
        if (call.retrySafe && now < call.deadline) {
          this.enqueue(p.seq, call);
        } else {
          this.failCall(call, `the connection was lost (${why})`);
        }
      } else if (p.what.kind === 'logout') {
        p.what.done();
      }
    }
    this.ackInFlight = false;
    this.heartbeatInFlight = false;
    const first = this.reconnect === null;
    if (first) {
      this.setState(ZIMConnectionState.Reconnecting, ZIMConnectionEvent.LoginInterrupted, why);
      for (const room of this.joined) {
        this.emitRoomState(room, ZIMRoomState.Connecting, ZIMRoomEvent.NetworkInterrupted);
      }
    }
    this.scheduleReconnect(first);
  }

  /** Ends the session: no connection, no reconnect, every waiting call answered. */
  private goIdle(event: ZIMConnectionEvent, extendedData: string): void {
    const link = this.link;
    this.link = { kind: 'idle' };
    if (link.kind === 'online') {
      closeQuietly(link.ws);
    } else if (link.kind === 'connecting') {
      link.hs.done = true;
      this.config.timers.clearTimeout(link.hs.timer);
      closeQuietly(link.hs.ws);
      link.hs.login?.reject(zimError(ZIMErrorCode.NotLoggedIn, 'the login was cancelled'));
    } else if (link.kind === 'backoff') {
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
      if (p.what.kind === 'call') {
        this.failCall(p.what.call, why);
      } else if (p.what.kind === 'logout') {
        p.what.done();
      }
    }
    const queued = this.queued;
    this.queued = [];
    for (const { call } of queued) {
      this.failCall(call, why);
    }
    const roomEvent =
      event === ZIMConnectionEvent.KickedOut
        ? ZIMRoomEvent.KickedOut
        : event === ZIMConnectionEvent.Success
          ? ZIMRoomEvent.Success
          : ZIMRoomEvent.NetworkDisconnected;
    const rooms = this.joined;
    this.joined = new Set();
    this.setState(ZIMConnectionState.Disconnected, event, extendedData);
    for (const room of rooms) {
      this.emitRoomState(room, ZIMRoomState.Disconnected, roomEvent);
    }
  }

  // ----- restoring after a re-login ------------------------------------------

  private rejoinRooms(): void {
    if (this.session === null) {
      return; // a logout was sent meanwhile
    }
    const missing = [...this.joined].filter((r) => !this.restored.has(r));
    if (missing.length === 0) {
      this.becomeReady();
      return;
    }
    if (this.link.kind === 'online') {
      this.link.phase = { kind: 'rejoining', left: missing.length };
    }
    for (const room of missing) {
      const lastSeq = this.rooms.get(room)?.last ?? 0;
      if (!this.sendInternal('joinRoom', { roomID: room, lastSeq }, { kind: 'rejoin', room })) {
        return;
      }
    }
  }

  private onRejoined(room: string, reply: WireReply): void {
    if (reply.code === 0) {
      this.advanceRoomWatermark(room, num(reply.data?.['roomSeq']));
      this.emitRoomState(room, ZIMRoomState.Connected, ZIMRoomEvent.Success);
    } else {
      this.joined.delete(room);
      const event =
        reply.code === ZIMErrorCode.RoomJoinNotExist || reply.code === ZIMErrorCode.RoomNotExist
          ? ZIMRoomEvent.RoomNotExist
          : ZIMRoomEvent.EnterFailed;
      this.emitRoomState(room, ZIMRoomState.Disconnected, event);
    }
    const link = this.link;
    if (link.kind === 'online' && link.phase.kind === 'rejoining') {
      link.phase.left = Math.max(0, link.phase.left - 1);
      if (link.phase.left === 0) {
        this.becomeReady();
      }
    }
  }

  private becomeReady(): void {
    if (this.session === null || this.link.kind !== 'online') {
      return;
    }
    this.link.phase = { kind: 'ready' };
    this.reconnect = null;
    this.setState(ZIMConnectionState.Connected, ZIMConnectionEvent.Success, 'reconnected');
    this.flushQueue();
  }

  // ----- what the server sends -------------------------------------------------

  private onFrame(ws: ZIMWebSocketLike, data: unknown): void {
    if (this.link.kind !== 'online' || this.link.ws !== ws) {
      return;
    }
    this.lastReceived = this.now();
    if (typeof data !== 'string') {
      return;
    }
    let frame;
    try {
      frame = decodeServerFrame(data);
    } catch (err) {
      const message = `unreadable frame from the server: ${String(err)}`;
      this.warn(message);
      this.emit('error', zimError(ZIMErrorCode.Failed, message));
      return;
    }
    if (frame.kind === 'reply') {
      this.onReply(frame.reply);
    } else {
      this.onPush(frame.push);
    }
  }

  private onReply(reply: WireReply): void {
    this.log(`reply id=${reply.id} code=${reply.code}`);
    const pending = this.pending.get(reply.id);
    if (pending === undefined) {
      return; // a reply after its call's deadline: the call was already answered
    }
    this.pending.delete(reply.id);
    const what = pending.what;
    switch (what.kind) {
      case 'call': {
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
      case 'logout':
        this.goIdle(ZIMConnectionEvent.Success, 'logged out');
        what.done();
        return;
      case 'barrier':
        this.rejoinRooms();
        return;
      case 'rejoin':
        this.onRejoined(what.room, reply);
        return;
      case 'ack':
        this.ackInFlight = false;
        if (reply.code === 0) {
          this.ackedInboxSeq = Math.max(this.ackedInboxSeq, what.seq);
        } else {
          this.emit(
            'error',
            zimError(reply.code, `ackInbox ${what.seq} was refused: ${reply.message}`),
          );
        }
        return;
      case 'heartbeat':
        this.heartbeatInFlight = false;
        return;
    }
  }

  /** Bookkeeping after a call succeeded. */
  private afterSuccess(call: Call, data: Data): void {
    switch (call.op) {
      case 'renewToken':
        this.updateToken(str(call.data['token']));
        return;
      case 'createRoom':
      case 'joinRoom':
      case 'enterRoom': {
        const info = data['roomInfo'] as Data | undefined;
        const room = str(info?.['roomID']);
        if (room === '') {
          return;
        }
        this.advanceRoomWatermark(room, num(data['roomSeq']));
        this.joined.add(room);
        this.emitRoomState(
          room,
          ZIMRoomState.Connected,
          data['created'] === true ? ZIMRoomEvent.ActiveCreate : ZIMRoomEvent.ActiveEnter,
        );
        return;
      }
      case 'leaveRoom': {
        const room = str(call.data['roomID']);
        this.rooms.delete(room);
        this.emitRoomState(room, ZIMRoomState.Disconnected, ZIMRoomEvent.Success);
        return;
      }
      case 'sendRoomMessage': {
        // The server never pushes our own messages back live: count them as
        // seen so the room's watermark can move past them.
        const seq = num(data['conversationSeq']);
        if (seq > 0) {
          this.markRoomSeq(str(call.data['roomID']), seq);
        }
        return;
      }
      default:
        return;
    }
  }

  private onPush(frame: WirePush): void {
    const d = frame.data;
    switch (frame.push) {
      case 'receivePeerMessage': {
        const me = this.me();
        const from = str(d['fromUserID']);
        const all = wireMessages(d['messageList']);
        const list: ZIMMessage[] = [];
        for (const m of all) {
          if (typeof m.inboxSeq === 'number') {
            if (this.lastInboxSeq !== null && m.inboxSeq <= this.lastInboxSeq) {
              continue;
            }
            this.lastInboxSeq = m.inboxSeq;
          }
          list.push(messageFromWire(m, me));
        }
        this.log(
          `push receivePeerMessage fromUserID=${from} count=${all.length} new=${list.length} ` +
            `lastInboxSeq=${this.lastInboxSeq ?? 'none'}`,
        );
        if (list.length > 0) {
          this.emit('receivePeerMessage', {
            messageList: list,
            fromConversationID: from,
            fromUserID: from,
          });
        }
        return;
      }
      case 'syncComplete': {
        const seq = num(d['inboxSeq']);
        this.log(`push syncComplete inboxSeq=${seq}`);
        this.lastInboxSeq = Math.max(this.lastInboxSeq ?? 0, seq);
        return;
      }
      case 'syncGap': {
        const fromInboxSeq = num(d['fromInboxSeq']);
        const toInboxSeq = num(d['toInboxSeq']);
        this.warn(`push syncGap ${fromInboxSeq}..=${toInboxSeq}`);
        this.lastInboxSeq = Math.max(this.lastInboxSeq ?? 0, toInboxSeq);
        this.emit('peerMessageGap', { fromInboxSeq, toInboxSeq });
        return;
      }
      case 'disconnect': {
        const reason = str(d['reason']);
        const extended = `${reason}: ${str(d['message'])}`;
        this.warn(`push disconnect reason=${reason} reconnect=${String(d['reconnect'])}`);
        if (d['reconnect'] === true) {
          this.disconnectHint = extended;
        } else {
          const event =
            reason === 'kickedOut'
              ? ZIMConnectionEvent.KickedOut
              : reason === 'tokenExpired'
                ? ZIMConnectionEvent.TokenExpired
                : reason === 'logout'
                  ? ZIMConnectionEvent.Success
                  : ZIMConnectionEvent.LoginInterrupted;
          this.goIdle(event, extended);
        }
        return;
      }
      case 'tokenWillExpire': {
        const second = num(d['second']);
        this.log(`push tokenWillExpire second=${second}`);
        this.emit('tokenWillExpire', { second });
        return;
      }
      case 'receiveRoomMessage': {
        const me = this.me();
        const roomID = str(d['fromRoomID']);
        const all = wireMessages(d['messageList']);
        const list: ZIMMessage[] = [];
        for (const m of all) {
          if (m.conversationSeq > 0 && !this.markRoomSeq(roomID, m.conversationSeq)) {
            continue;
          }
          // The server replays the sender's own stored messages during a room
          // catch-up; the sender already has them.
          if (m.senderUserID === me) {
            continue;
          }
          list.push(messageFromWire(m, me));
        }
        this.log(
          `push receiveRoomMessage roomID=${roomID} count=${all.length} new=${list.length} ` +
            `lastSeq=${this.rooms.get(roomID)?.last ?? 0}`,
        );
        if (list.length > 0) {
          this.emit('receiveRoomMessage', {
            messageList: list,
            fromConversationID: roomID,
            fromRoomID: roomID,
          });
        }
        return;
      }
      case 'roomMemberJoined':
      case 'roomMemberLeft': {
        const roomID = str(d['roomID']);
        const memberList = members(d['memberList']);
        this.log(`push ${frame.push} roomID=${roomID} count=${memberList.length}`);
        this.emit(frame.push, { roomID, memberList });
        return;
      }
      case 'roomStateChanged': {
        const roomID = str(d['roomID']);
        const state = num(d['state']);
        const event = num(d['event']);
        if (ZIMRoomState[state] === undefined || ZIMRoomEvent[event] === undefined) {
          this.warn(`push roomStateChanged with unknown state ${state} / event ${event}`);
          return;
        }
        if (state === ZIMRoomState.Connected) {
          this.joined.add(roomID);
          this.restored.add(roomID);
          if (!this.rooms.has(roomID)) {
            this.room(roomID).last = num(d['roomSeq']);
          }
        } else if (state === ZIMRoomState.Disconnected) {
          this.joined.delete(roomID);
        }
        this.emitRoomState(roomID, state, event);
        return;
      }
      case 'roomAttributesUpdated':
      case 'roomAttributesBatchUpdated': {
        const roomID = str(d['roomID']);
        this.log(`push ${frame.push} roomID=${roomID}`);
        this.emit(frame.push, { roomID, infos: attributeInfos(d['infos']) });
        return;
      }
      case 'roomSyncGap': {
        const roomID = str(d['roomID']);
        const fromSeq = num(d['fromSeq']);
        const toSeq = num(d['toSeq']);
        this.warn(`push roomSyncGap roomID=${roomID} ${fromSeq}..=${toSeq}`);
        this.advanceRoomWatermark(roomID, toSeq);
        this.emit('roomMessageGap', { roomID, fromSeq, toSeq });
        return;
      }
      default:
        this.log(`ignoring push ${frame.push}`);
        return;
    }
  }

  // ----- timers -----------------------------------------------------------------

  private onTick(): void {
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
      if (what.kind === 'call') {
        this.failCall(what.call, `no reply within ${limit} ms`);
      } else if (what.kind === 'logout') {
        this.goIdle(ZIMConnectionEvent.Success, 'logged out (the server did not answer)');
        what.done();
        return;
      } else if (quiet) {
        // The engine's own requests: the connection is dead only if the server
        // has been silent too; otherwise the reply is queued behind other frames.
        dead = true;
      } else {
        p.deadline = now + limit;
        this.pending.set(id, p);
      }
    }
    if (dead) {
      this.connectionLost('the server stopped answering');
      return;
    }
    const link = this.link;
    if (
      link.kind === 'online' &&
      now - link.lastSent >= this.config.heartbeatInterval &&
      !this.heartbeatInFlight
    ) {
      this.heartbeatInFlight = true;
      if (!this.sendInternal('ping', {}, { kind: 'heartbeat' })) {
        return;
      }
    }
    const seq = this.lastInboxSeq;
    if (
      this.isReady() &&
      !this.ackInFlight &&
      now - this.lastAck >= this.config.ackInterval &&
      seq !== null &&
      seq > this.ackedInboxSeq
    ) {
      this.ackInFlight = true;
      this.lastAck = now;
      this.sendInternal('ackInbox', { inboxSeq: seq }, { kind: 'ack', seq });
    }
  }
}
