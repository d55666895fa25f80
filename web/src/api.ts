/**
 * `ZIM`, the class apps hold: ZIM 1.x's web API (create / login / send / rooms /
 * events), each call checked locally (destroyed, parameters, logged in, the
 * SDK's rate limit) before it goes to the engine that owns the connection.
 */

import { Engine, type Data, type EngineConfig } from './engine';
import {
  ZIMConnectionState,
  ZIMConversationType,
  ZIMErrorCode,
  ZIMMessageDirection,
  ZIMMessagePriority,
  ZIMMessageSentStatus,
  ZIMMessageType,
} from './enums';
import { destroyedError, notLoggedIn, paramError, zimError } from './errors';
import type {
  ZIMAppConfig,
  ZIMError,
  ZIMEventHandler,
  ZIMEventName,
  ZIMMessage,
  ZIMMessageContent,
  ZIMMessageQueriedResult,
  ZIMMessageQueryConfig,
  ZIMMessageSendConfig,
  ZIMMessageSentResult,
  ZIMRoomAdvancedConfig,
  ZIMRoomAttributesBatchOperatedResult,
  ZIMRoomAttributesBatchOperationConfig,
  ZIMRoomAttributesDeleteConfig,
  ZIMRoomAttributesOperatedResult,
  ZIMRoomAttributesQueriedResult,
  ZIMRoomAttributesSetConfig,
  ZIMRoomCreatedResult,
  ZIMRoomEnteredResult,
  ZIMRoomFullInfo,
  ZIMRoomInfo,
  ZIMRoomJoinedResult,
  ZIMRoomLeftResult,
  ZIMRoomMemberQueriedResult,
  ZIMRoomMemberQueryConfig,
  ZIMRoomOnlineMemberCountQueriedResult,
  ZIMTimers,
  ZIMTokenRenewedResult,
  ZIMUserInfo,
  ZIMWebSocketConstructor,
} from './types';
import { bytesToBase64, messageFromWire, utf8, wireMessages } from './wire';

/** The SDK's version. */
export const VERSION = '0.1.0';

/** The most recent log bytes kept in memory for `uploadLog` (default). */
const DEFAULT_LOG_SIZE = 256 * 1024;

let instance: ZIM | null = null;

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value as Data)) {
      out[k] = str(v);
    }
  }
  return out;
}

function fullInfo(data: Data): ZIMRoomFullInfo {
  const info = (data['roomInfo'] ?? {}) as Data;
  return { baseInfo: { roomID: str(info['roomID']), roomName: str(info['roomName']) } };
}

/** Rejects when `value` is not a non-empty string. */
function requireText(field: string, value: unknown): ZIMError | null {
  if (typeof value !== 'string' || value === '') {
    return paramError(`${field}: must not be empty`);
  }
  return null;
}

function requireCount(count: unknown): ZIMError | null {
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1) {
    return paramError(`count: must be 1-100, got ${String(count)}`);
  }
  return null;
}

function duration(field: string, value: number | undefined, fallback: number): number {
  if (value === undefined) {
    return fallback;
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw paramError(`${field}: must be a number of milliseconds >= 0, got ${String(value)}`);
  }
  return value;
}

/** The `/ws` URL of the page's origin, if there is a page. */
function defaultServer(): string | null {
  const loc = (globalThis as { location?: { protocol?: string; host?: string } }).location;
  if (loc === undefined || typeof loc.host !== 'string' || loc.host === '') {
    return null;
  }
  const scheme = loc.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${loc.host}/ws`;
}

function defaultTimers(): ZIMTimers {
  const perf = (globalThis as { performance?: { now(): number } }).performance;
  return {
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
    now: perf !== undefined ? () => perf.now() : () => Date.now(),
  };
}

interface Resolved {
  engine: Omit<EngineConfig, 'logger'>;
  sendRatePerSecond: number;
  logger: ((level: 'info' | 'warn', line: string) => void) | null;
}

function resolveConfig(config: number | ZIMAppConfig): Resolved {
  const c: ZIMAppConfig = typeof config === 'number' ? { appID: config } : (config ?? { appID: 0 });
  if (typeof c !== 'object') {
    throw paramError('config: pass the AppID or {appID, server}');
  }
  const appID = c.appID;
  if (typeof appID !== 'number' || !Number.isInteger(appID) || appID < 1 || appID > 0xffffffff) {
    throw paramError(`appID: must be a non-zero 32-bit unsigned integer, got ${String(appID)}`);
  }
  let urls: string[];
  if (c.server === undefined) {
    const url = defaultServer();
    if (url === null) {
      throw paramError('server: give the ws:// URL of the server (there is no page to take it from)');
    }
    urls = [url];
  } else {
    urls = Array.isArray(c.server) ? [...c.server] : [c.server];
  }
  if (urls.length === 0) {
    throw paramError('server: give at least one ws://HOST:PORT/ws');
  }
  for (const url of urls) {
    if (typeof url !== 'string' || !/^wss?:\/\/[^/]/i.test(url)) {
      throw paramError(`server: ${String(url)} is not a ws:// or wss:// URL`);
    }
  }
  const ws =
    c.WebSocket ?? (globalThis as { WebSocket?: ZIMWebSocketConstructor }).WebSocket;
  if (typeof ws !== 'function') {
    throw paramError('WebSocket: this environment has no WebSocket; pass one in the config');
  }
  const giveUp =
    c.reconnectGiveUpAfter === null
      ? null
      : duration('reconnectGiveUpAfter', c.reconnectGiveUpAfter, 300_000);
  const rate = c.sendRatePerSecond ?? 10;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) {
    throw paramError(`sendRatePerSecond: must be a number >= 0, got ${String(rate)}`);
  }
  return {
    engine: {
      appID,
      urls,
      requestTimeout: duration('requestTimeout', c.requestTimeout, 10_000),
      heartbeatInterval: duration('heartbeatInterval', c.heartbeatInterval, 25_000),
      reconnectMinDelay: duration('reconnectMinDelay', c.reconnectMinDelay, 500),
      reconnectMaxDelay: duration('reconnectMaxDelay', c.reconnectMaxDelay, 30_000),
      reconnectGiveUpAfter: giveUp,
      ackInterval: duration('ackInterval', c.ackInterval, 1000),
      watchNetwork: c.watchNetwork ?? true,
      WebSocket: ws,
      timers: c.timers ?? defaultTimers(),
      random: c.random ?? Math.random,
    },
    sendRatePerSecond: rate,
    logger: c.logger ?? null,
  };
}

/** The operations collected between begin- and endRoomAttributesBatchOperation. */
interface Batch {
  config: ZIMRoomAttributesBatchOperationConfig;
  set: Record<string, string>;
  keys: string[];
  waiting: Array<{
    keys: string[];
    resolve: (r: ZIMRoomAttributesOperatedResult) => void;
    reject: (e: ZIMError) => void;
  }>;
}

type AnyHandler = (zim: ZIM, data: never) => void;

/**
 * A confab client with ZIM 1.x's web API. Create it with `ZIM.create(appID)` or
 * `ZIM.create({appID, server})`, register handlers with `on`, then `login`.
 * Every call returns a promise that rejects with `{code, message}`.
 */
export class ZIM {
  private readonly engine: Engine;
  private readonly handlers = new Map<ZIMEventName, AnyHandler[]>();
  private readonly rate: number;
  private readonly timers: ZIMTimers;
  private readonly appID: number;
  private readonly userLogger: ((level: 'info' | 'warn', line: string) => void) | null;
  /** Recent log lines for uploadLog, oldest first, and their total size. */
  private readonly logLines: string[] = [];
  private logBytes = 0;
  private logSize = DEFAULT_LOG_SIZE;
  /** Send-rate token bucket. */
  private tokens: number;
  private tokensAt: number;
  private lastLocalID = 0;
  private readonly batches = new Map<string, Batch>();

  private constructor(resolved: Resolved) {
    this.rate = resolved.sendRatePerSecond;
    this.timers = resolved.engine.timers;
    this.appID = resolved.engine.appID;
    this.userLogger = resolved.logger;
    this.tokens = this.rate;
    this.tokensAt = this.timers.now();
    this.engine = new Engine({ ...resolved.engine, logger: (level, line) => this.log(level, line) }, (name, data) =>
      this.deliver(name, data),
    );
    this.log('info', `create appID=${this.appID} urls=${resolved.engine.urls.join(',')}`);
  }

  /**
   * Creates the instance: `ZIM.create(appID)` (server: `/ws` of the page's
   * origin) or `ZIM.create({appID, server, ...})`. Like ZIM, only one instance
   * exists at a time: while it does, `create` returns `null` (use
   * `getInstance`, or `destroy` it first).
   *
   * Throws `{code: 6000001, message}` for an invalid config.
   */
  static create(config: number | ZIMAppConfig): ZIM | null {
    if (instance !== null) {
      return null;
    }
    instance = new ZIM(resolveConfig(config));
    return instance;
  }

  /** The instance made by `create`, or `null`. */
  static getInstance(): ZIM | null {
    return instance;
  }

  /** The SDK's version. */
  static getVersion(): string {
    return VERSION;
  }

  /**
   * Destroys the instance: closes the connection without logging out (the
   * server keeps room memberships for its grace period); waiting and later
   * calls fail with 6000002. Idempotent.
   */
  destroy(): void {
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
  on<K extends ZIMEventName>(eventName: K, handler: ZIMEventHandler[K]): void {
    if (typeof handler !== 'function') {
      return;
    }
    const list = this.handlers.get(eventName) ?? [];
    list.push(handler as AnyHandler);
    this.handlers.set(eventName, list);
  }

  /** Removes `handler`, or every handler of the event when none is given. */
  off<K extends ZIMEventName>(eventName: K, handler?: ZIMEventHandler[K]): void {
    if (handler === undefined) {
      this.handlers.delete(eventName);
      return;
    }
    const list = (this.handlers.get(eventName) ?? []).filter((h) => h !== (handler as AnyHandler));
    if (list.length > 0) {
      this.handlers.set(eventName, list);
    } else {
      this.handlers.delete(eventName);
    }
  }

  /** confab: the current connection state. */
  getConnectionState(): ZIMConnectionState {
    return this.engine.connectionState();
  }

  // ----- session ----------------------------------------------------------------

  /**
   * Logs in: connects to the first reachable server URL and authenticates the
   * user with a Token04 for this AppID and userID. Peer messages received
   * while offline follow as `receivePeerMessage` events.
   */
  login(userInfo: ZIMUserInfo, token: string): Promise<void> {
    if (this.engine.isDestroyed()) {
      return Promise.reject(destroyedError());
    }
    if (typeof userInfo !== 'object' || userInfo === null) {
      return Promise.reject(paramError('userInfo: must be an object {userID, userName}'));
    }
    const bad = requireText('userID', userInfo.userID) ?? requireText('token', token);
    if (bad !== null) {
      return Promise.reject(bad);
    }
    if (userInfo.userName !== undefined && typeof userInfo.userName !== 'string') {
      return Promise.reject(paramError('userName: must be a string'));
    }
    return this.engine.login(userInfo, token);
  }

  /** Logs out: leaves all rooms and closes the connection. */
  logout(): Promise<void> {
    return this.engine.logout();
  }

  /** Replaces the session's token (after `tokenWillExpire`); reconnects use the new one. */
  async renewToken(token: string): Promise<ZIMTokenRenewedResult> {
    this.check();
    const bad = requireText('token', token);
    if (bad !== null) {
      throw bad;
    }
    const data = await this.engine.call('renewToken', { token }, false);
    return { token: str(data['token']) || token, tokenExpire: num(data['tokenExpire']) };
  }

  // ----- messages ----------------------------------------------------------------

  /**
   * Sends a Text or Command message to a user. Text is stored (and reaches an
   * offline receiver at its next login); the promise resolves once it is.
   */
  sendPeerMessage(
    message: ZIMMessageContent,
    toUserID: string,
    config?: ZIMMessageSendConfig,
  ): Promise<ZIMMessageSentResult> {
    return this.sendMessage(message, toUserID, ZIMConversationType.Peer, config);
  }

  /** Sends a Text, Command or Barrage message to a room this user is in. */
  sendRoomMessage(
    message: ZIMMessageContent,
    toRoomID: string,
    config?: ZIMMessageSendConfig,
  ): Promise<ZIMMessageSentResult> {
    return this.sendMessage(message, toRoomID, ZIMConversationType.Room, config);
  }

  /**
   * A page of a conversation's stored messages: a Peer conversation with the
   * user `conversationID`, or a Room this user is in.
   */
  async queryHistoryMessage(
    conversationID: string,
    conversationType: ZIMConversationType,
    config: ZIMMessageQueryConfig,
  ): Promise<ZIMMessageQueriedResult> {
    this.check();
    const bad =
      requireText('conversationID', conversationID) ??
      (conversationType !== ZIMConversationType.Peer && conversationType !== ZIMConversationType.Room
        ? paramError(`conversationType: must be 0 (Peer) or 1 (Room), got ${String(conversationType)}`)
        : null) ??
      requireCount(config?.count);
    if (bad !== null) {
      throw bad;
    }
    const query: Data = { count: config.count, reverse: config.reverse === true };
    if (config.nextMessage !== undefined && config.nextMessage !== null) {
      query['nextMessage'] = { conversationSeq: config.nextMessage.conversationSeq };
    }
    const data = await this.engine.call(
      'queryHistoryMessage',
      { conversationID, conversationType, config: query },
      false,
    );
    const me = this.engine.userID();
    return {
      conversationID: str(data['conversationID']) || conversationID,
      conversationType,
      messageList: wireMessages(data['messageList']).map((m) => messageFromWire(m, me)),
    };
  }

  // ----- rooms ---------------------------------------------------------------------

  /** Creates a room and joins it. */
  async createRoom(roomInfo: ZIMRoomInfo, config?: ZIMRoomAdvancedConfig): Promise<ZIMRoomCreatedResult> {
    this.check();
    const data = await this.engine.call('createRoom', this.roomRequest(roomInfo, config), false);
    return { roomInfo: fullInfo(data) };
  }

  /** Joins an existing room. */
  async joinRoom(roomID: string): Promise<ZIMRoomJoinedResult> {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call('joinRoom', { roomID }, false);
    return { roomInfo: fullInfo(data) };
  }

  /** Joins a room, creating it first if it does not exist. */
  async enterRoom(roomInfo: ZIMRoomInfo, config?: ZIMRoomAdvancedConfig): Promise<ZIMRoomEnteredResult> {
    this.check();
    const data = await this.engine.call('enterRoom', this.roomRequest(roomInfo, config), false);
    return { roomInfo: fullInfo(data), created: data['created'] === true };
  }

  /** Leaves a room. */
  async leaveRoom(roomID: string): Promise<ZIMRoomLeftResult> {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call('leaveRoom', { roomID }, false);
    return { roomID: str(data['roomID']) || roomID };
  }

  /** A page of a room's members: `nextFlag` `""` first, then the returned one until it is `""`. */
  async queryRoomMemberList(
    roomID: string,
    config: ZIMRoomMemberQueryConfig,
  ): Promise<ZIMRoomMemberQueriedResult> {
    this.check();
    this.requireRoom(roomID);
    const bad = requireCount(config?.count);
    if (bad !== null) {
      throw bad;
    }
    const data = await this.engine.call(
      'queryRoomMemberList',
      { roomID, config: { nextFlag: config.nextFlag ?? '', count: config.count } },
      false,
    );
    const list = Array.isArray(data['memberList']) ? (data['memberList'] as Data[]) : [];
    return {
      roomID: str(data['roomID']) || roomID,
      memberList: list.map((m) => ({ userID: str(m['userID']), userName: str(m['userName']) })),
      nextFlag: str(data['nextFlag']),
    };
  }

  /** How many members a room has (members within their reconnect grace period count). */
  async queryRoomOnlineMemberCount(roomID: string): Promise<ZIMRoomOnlineMemberCountQueriedResult> {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call('queryRoomOnlineMemberCount', { roomID }, false);
    return { roomID: str(data['roomID']) || roomID, count: num(data['count']) };
  }

  /**
   * Sets room attributes; `errorKeys` lists keys owned by someone else (without
   * `isForce`). Between begin- and endRoomAttributesBatchOperation the change
   * joins the batch and resolves when the batch is applied.
   */
  async setRoomAttributes(
    roomAttributes: Record<string, string>,
    roomID: string,
    config?: ZIMRoomAttributesSetConfig,
  ): Promise<ZIMRoomAttributesOperatedResult> {
    this.check();
    return this.attributes('set', roomID, stringMapChecked(roomAttributes), [], config ?? {});
  }

  /** Deletes room attributes; `errorKeys` lists keys that could not be deleted. */
  async deleteRoomAttributes(
    keys: string[],
    roomID: string,
    config?: ZIMRoomAttributesDeleteConfig,
  ): Promise<ZIMRoomAttributesOperatedResult> {
    const list = Array.isArray(keys) ? keys.filter((k): k is string => typeof k === 'string') : null;
    return this.attributes('delete', roomID, {}, list, config ?? {});
  }

  /**
   * Starts collecting setRoomAttributes / deleteRoomAttributes calls for
   * `roomID`; endRoomAttributesBatchOperation applies them in one step (one
   * `roomAttributesBatchUpdated` event for the members).
   */
  beginRoomAttributesBatchOperation(roomID: string, config?: ZIMRoomAttributesBatchOperationConfig): void {
    if (this.engine.isDestroyed() || typeof roomID !== 'string' || roomID === '') {
      return;
    }
    const existing = this.batches.get(roomID);
    if (existing !== undefined) {
      existing.config = config ?? existing.config;
      return;
    }
    this.batches.set(roomID, { config: config ?? {}, set: {}, keys: [], waiting: [] });
  }

  /** Applies the batch started with beginRoomAttributesBatchOperation. */
  async endRoomAttributesBatchOperation(roomID: string): Promise<ZIMRoomAttributesBatchOperatedResult> {
    this.check();
    this.requireRoom(roomID);
    const batch = this.batches.get(roomID);
    if (batch === undefined) {
      throw paramError(`roomID: no batch operation was begun for ${roomID}`);
    }
    this.batches.delete(roomID);
    try {
      const data = await this.engine.call(
        'batchRoomAttributes',
        { roomID, roomAttributes: batch.set, keys: batch.keys, config: setConfig(batch.config) },
        false,
      );
      const errorKeys = stringList(data['errorKeys']);
      for (const w of batch.waiting) {
        w.resolve({ roomID, errorKeys: errorKeys.filter((k) => w.keys.includes(k)) });
      }
      return { roomID: str(data['roomID']) || roomID, errorKeys };
    } catch (err) {
      for (const w of batch.waiting) {
        w.reject(err as ZIMError);
      }
      throw err;
    }
  }

  /** All attributes of a room. */
  async queryRoomAllAttributes(roomID: string): Promise<ZIMRoomAttributesQueriedResult> {
    this.check();
    this.requireRoom(roomID);
    const data = await this.engine.call('queryRoomAllAttributes', { roomID }, false);
    return { roomID: str(data['roomID']) || roomID, roomAttributes: stringMap(data['roomAttributes']) };
  }

  // ----- logs ----------------------------------------------------------------------

  /**
   * ZIM's setLogConfig. The web SDK keeps its log in memory: `logSize` caps it
   * (bytes, default 256 KiB, at least 1024). `logPath` is ignored.
   */
  setLogConfig(config: { logPath?: string; logSize?: number }): void {
    const size = config?.logSize;
    if (typeof size === 'number' && Number.isFinite(size)) {
      this.logSize = Math.max(1024, size);
      this.trimLog();
    }
  }

  /**
   * Uploads the SDK's recent log lines to the server (`POST /v1/logs` on the
   * host of the current or last login's URL), authenticated with that login's
   * userID and token. 6000121 before any login, 6000010 when it fails.
   */
  async uploadLog(): Promise<void> {
    this.check();
    const creds = this.engine.credentials();
    if (creds === null) {
      throw notLoggedIn('uploadLog');
    }
    const target = creds.url.replace(/^ws/i, 'http').replace(/^(https?:\/\/[^/]+).*$/i, '$1/v1/logs');
    const fetchFn = (globalThis as { fetch?: typeof fetch }).fetch;
    if (typeof fetchFn !== 'function') {
      throw zimError(ZIMErrorCode.LogUploadFailed, 'uploadLog: this environment has no fetch');
    }
    let status = 0;
    let answer: { code?: unknown; message?: unknown } = {};
    try {
      const response = await fetchFn(target, {
        method: 'POST',
        headers: {
          'X-Confab-App-Id': String(this.appID),
          'X-Confab-User-Id': creds.userID,
          Authorization: `Bearer ${creds.token}`,
          'Content-Type': 'text/plain',
        },
        body: this.logLines.join(''),
      });
      status = response.status;
      try {
        answer = (await response.json()) as typeof answer;
      } catch {
        answer = {};
      }
    } catch (err) {
      throw zimError(ZIMErrorCode.LogUploadFailed, `uploadLog: ${String(err)}`);
    }
    if (status === 200 && answer.code === 0) {
      return;
    }
    throw zimError(
      ZIMErrorCode.LogUploadFailed,
      `the server refused the log (HTTP ${status}): ${str(answer.message)}`,
    );
  }

  // ----- internals -------------------------------------------------------------------

  private deliver(name: ZIMEventName, data: object): void {
    for (const handler of [...(this.handlers.get(name) ?? [])]) {
      try {
        (handler as (zim: ZIM, data: object) => void)(this, data);
      } catch (err) {
        this.log('warn', `a ${name} handler threw: ${String(err)}`);
        const c = (globalThis as { console?: { error(...a: unknown[]): void } }).console;
        c?.error(err);
      }
    }
  }

  private log(level: 'info' | 'warn', line: string): void {
    const text = `${new Date().toISOString()} ${level.toUpperCase()} ${line}\n`;
    this.logLines.push(text);
    this.logBytes += text.length;
    this.trimLog();
    this.userLogger?.(level, line);
  }

  private trimLog(): void {
    while (this.logBytes > this.logSize && this.logLines.length > 1) {
      this.logBytes -= (this.logLines.shift() as string).length;
    }
  }

  private check(): void {
    if (this.engine.isDestroyed()) {
      throw destroyedError();
    }
  }

  private requireRoom(roomID: unknown): void {
    const bad = requireText('roomID', roomID);
    if (bad !== null) {
      throw bad;
    }
  }

  private roomRequest(roomInfo: ZIMRoomInfo, config?: ZIMRoomAdvancedConfig): Data {
    if (typeof roomInfo !== 'object' || roomInfo === null) {
      throw paramError('roomInfo: must be an object {roomID, roomName}');
    }
    this.requireRoom(roomInfo.roomID);
    return {
      roomInfo: { roomID: roomInfo.roomID, roomName: roomInfo.roomName ?? '' },
      config: {
        roomAttributes: stringMapChecked(config?.roomAttributes ?? {}),
        roomDestroyDelayTime: config?.roomDestroyDelayTime ?? 0,
      },
    };
  }

  private async attributes(
    kind: 'set' | 'delete',
    roomID: string,
    set: Record<string, string>,
    keys: string[] | null,
    config: ZIMRoomAttributesSetConfig,
  ): Promise<ZIMRoomAttributesOperatedResult> {
    this.check();
    this.requireRoom(roomID);
    if (keys === null) {
      throw paramError('keys: must be an array of strings');
    }
    const batch = this.batches.get(roomID);
    if (batch !== undefined) {
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
    const data =
      kind === 'set'
        ? await this.engine.call(
            'setRoomAttributes',
            { roomID, roomAttributes: set, config: setConfig(config) },
            false,
          )
        : await this.engine.call(
            'deleteRoomAttributes',
            { roomID, keys, config: { isForce: config.isForce === true } },
            false,
          );
    return { roomID: str(data['roomID']) || roomID, errorKeys: stringList(data['errorKeys']) };
  }

  /** A fresh localMessageID: the time in ms × 1000, or the previous + 1 if larger. */
  private nextLocalID(): number {
    const id = Math.max(Date.now() * 1000, this.lastLocalID + 1);
    this.lastLocalID = id;
    return id;
  }

  /** Takes a token from the send-rate bucket; false when it is empty. */
  private takeSendToken(): boolean {
    if (this.rate <= 0) {
      return true;
    }
    const now = this.timers.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.tokensAt) * this.rate) / 1000);
    this.tokensAt = now;
    if (this.tokens < 1) {
      return false;
    }
    this.tokens -= 1;
    return true;
  }

  private async sendMessage(
    message: ZIMMessageContent,
    target: string,
    conversationType: ZIMConversationType,
    config: ZIMMessageSendConfig | undefined,
  ): Promise<ZIMMessageSentResult> {
    this.check();
    const isRoom = conversationType === ZIMConversationType.Room;
    const op = isRoom ? 'sendRoomMessage' : 'sendPeerMessage';
    const badTarget = requireText(isRoom ? 'roomID' : 'toUserID', target);
    if (badTarget !== null) {
      throw badTarget;
    }
    if (typeof message !== 'object' || message === null) {
      throw paramError('message: must be a message object {type, message}');
    }
    const type = message.type;
    let content: string | Uint8Array;
    let wire: string;
    if (type === ZIMMessageType.Text || (type === ZIMMessageType.Barrage && isRoom)) {
      if (typeof message.message !== 'string') {
        throw paramError(`message: a ${ZIMMessageType[type]} message needs a string`);
      }
      content = message.message;
      wire = content;
    } else if (type === ZIMMessageType.Command) {
      if (message.message instanceof Uint8Array) {
        content = message.message;
      } else if (typeof message.message === 'string') {
        content = utf8(message.message);
      } else {
        throw paramError('message: a Command message needs a Uint8Array (or a string)');
      }
      wire = bytesToBase64(content);
    } else {
      const name = ZIMMessageType[type] ?? 'Unknown';
      throw paramError(
        `type: ${name} (${String(type)}) cannot be sent ${
          isRoom ? 'to a room (Text, Command and Barrage can)' : 'to a user (Text and Command can)'
        }`,
      );
    }
    const priority = config?.priority ?? ZIMMessagePriority.Low;
    if (priority !== 1 && priority !== 2 && priority !== 3) {
      throw paramError(`priority: must be 1 (Low), 2 (Medium) or 3 (High), got ${String(priority)}`);
    }
    if (this.engine.connectionState() === ZIMConnectionState.Disconnected) {
      throw notLoggedIn(op);
    }
    if (type !== ZIMMessageType.Barrage && !this.takeSendToken()) {
      throw zimError(
        ZIMErrorCode.SdkRateLimit,
        `at most ${this.rate} Text and Command messages per second may be sent`,
      );
    }
    const localMessageID = this.nextLocalID();
    const request: Data = isRoom
      ? { roomID: target, type, message: wire, localMessageID, priority }
      : { toUserID: target, type, message: wire, localMessageID, priority };
    const data = await this.engine.call(op, request, true);
    const seq = num(data['conversationSeq']);
    const sent: ZIMMessage = {
      type,
      message: content,
      messageID: num(data['messageID']),
      localMessageID: num(data['localMessageID']) || localMessageID,
      senderUserID: this.engine.userID(),
      timestamp: num(data['timestamp']),
      conversationID: target,
      conversationType,
      direction: ZIMMessageDirection.Send,
      sentStatus: ZIMMessageSentStatus.Success,
      orderKey: seq,
      conversationSeq: seq,
      priority,
    };
    return { message: sent };
  }
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((k): k is string => typeof k === 'string') : [];
}

function stringMapChecked(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw paramError('roomAttributes: must be an object of string values');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Data)) {
    if (typeof v !== 'string') {
      throw paramError(`roomAttributes: the value of ${k} must be a string`);
    }
    out[k] = v;
  }
  return out;
}

function setConfig(config: ZIMRoomAttributesSetConfig): Data {
  return {
    isForce: config.isForce === true,
    isUpdateOwner: config.isUpdateOwner === true,
    isDeleteAfterOwnerLeft: config.isDeleteAfterOwnerLeft === true,
  };
}
