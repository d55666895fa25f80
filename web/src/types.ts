/**
 * The public shapes of the web SDK: ZIM 1.x's objects, configs, results and
 * event payloads (SPEC §7), plus the few confab additions (marked).
 */

import type { ZIM } from './api';
import type {
  ZIMConnectionEvent,
  ZIMConnectionState,
  ZIMConversationType,
  ZIMMessageDirection,
  ZIMMessagePriority,
  ZIMMessageSentStatus,
  ZIMMessageType,
  ZIMRoomAttributesUpdateAction,
  ZIMRoomEvent,
  ZIMRoomState,
} from './enums';

/** What every promise rejects with: a ZIM error code and what went wrong. */
export interface ZIMError {
  code: number;
  message: string;
}

/** A user. `userName` defaults to `""`. */
export interface ZIMUserInfo {
  userID: string;
  userName?: string;
}

/** A room member as the server reports it. */
export interface ZIMRoomMemberInfo {
  userID: string;
  userName: string;
}

/** A room. `roomName` defaults to `""`. */
export interface ZIMRoomInfo {
  roomID: string;
  roomName?: string;
}

/** ZIM's full room info (only `baseInfo` in 1.x). */
export interface ZIMRoomFullInfo {
  baseInfo: { roomID: string; roomName: string };
}

/**
 * A message to send: `{type: ZIMMessageType.Text, message: 'hi'}`. Command
 * takes a `Uint8Array` (a string is sent as its UTF-8 bytes); Barrage (rooms
 * only) takes a string.
 */
export interface ZIMMessageContent {
  type: ZIMMessageType;
  message: string | Uint8Array;
}

/** A message the server accepted or delivered, with ZIM's fields. */
export interface ZIMMessage {
  type: ZIMMessageType;
  /** Text and Barrage: the text; Command: the bytes. */
  message: string | Uint8Array;
  /** The server's id, unique per app (a JavaScript number: the server keeps it below 2^53). */
  messageID: number;
  /** The sender's own id for the message. */
  localMessageID: number;
  senderUserID: string;
  /** Server time of acceptance, ms since the Unix epoch. */
  timestamp: number;
  /** For a peer message the other user's ID; for a room message the room's ID. */
  conversationID: string;
  conversationType: ZIMConversationType;
  direction: ZIMMessageDirection;
  sentStatus: ZIMMessageSentStatus;
  /** Sorts a conversation's messages: the conversationSeq (0 for unstored types). */
  orderKey: number;
  /** Position in the conversation, strictly increasing; 0 for Command and Barrage. */
  conversationSeq: number;
  /** confab: position in this user's peer inbox (received stored peer messages only). */
  inboxSeq?: number;
  /** confab: the delivery priority. */
  priority: ZIMMessagePriority;
}

/** Options of a send. */
export interface ZIMMessageSendConfig {
  /** Low (default), Medium or High. */
  priority?: ZIMMessagePriority;
}

/** Options of createRoom / enterRoom. */
export interface ZIMRoomAdvancedConfig {
  /** Initial attributes, owned by the creator. */
  roomAttributes?: Record<string, string>;
  /** Seconds (0-10800) the room lives on after its last member leaves. */
  roomDestroyDelayTime?: number;
}

/** A page of members: `nextFlag` `""` (or absent) for the first page. */
export interface ZIMRoomMemberQueryConfig {
  nextFlag?: string;
  /** 1-100. */
  count: number;
}

/** A page of history: continue after (or, with `reverse`, before) `nextMessage`. */
export interface ZIMMessageQueryConfig {
  /** The last message of the previous page (only its `conversationSeq` is used); none for the first page. */
  nextMessage?: Pick<ZIMMessage, 'conversationSeq'> | null;
  /** 1-100. */
  count: number;
  /** Newest first. */
  reverse?: boolean;
}

/** Options of setRoomAttributes and the batch operation. */
export interface ZIMRoomAttributesSetConfig {
  /** Change keys owned by someone else. */
  isForce?: boolean;
  /** Become the owner of the keys set. */
  isUpdateOwner?: boolean;
  /** Delete the keys set when this user leaves the room. */
  isDeleteAfterOwnerLeft?: boolean;
}

/** Options of deleteRoomAttributes. */
export interface ZIMRoomAttributesDeleteConfig {
  isForce?: boolean;
}

export type ZIMRoomAttributesBatchOperationConfig = ZIMRoomAttributesSetConfig;

/** One attribute change: Set with the new values, Delete with empty values. */
export interface ZIMRoomAttributesUpdateInfo {
  action: ZIMRoomAttributesUpdateAction;
  roomAttributes: Record<string, string>;
}

// ----- results -----------------------------------------------------------

export interface ZIMTokenRenewedResult {
  token: string;
  /** confab: when the new token expires, seconds since the Unix epoch. */
  tokenExpire: number;
}

export interface ZIMMessageSentResult {
  message: ZIMMessage;
}

export interface ZIMRoomCreatedResult {
  roomInfo: ZIMRoomFullInfo;
}

export interface ZIMRoomJoinedResult {
  roomInfo: ZIMRoomFullInfo;
}

export interface ZIMRoomEnteredResult {
  roomInfo: ZIMRoomFullInfo;
  /** confab: whether enterRoom created the room. */
  created: boolean;
}

export interface ZIMRoomLeftResult {
  roomID: string;
}

export interface ZIMRoomMemberQueriedResult {
  roomID: string;
  memberList: ZIMRoomMemberInfo[];
  /** `""` on the last page. */
  nextFlag: string;
}

export interface ZIMRoomOnlineMemberCountQueriedResult {
  roomID: string;
  count: number;
}

export interface ZIMRoomAttributesOperatedResult {
  roomID: string;
  /** Keys that could not be changed (owned by someone else, without `isForce`). */
  errorKeys: string[];
}

export interface ZIMRoomAttributesBatchOperatedResult {
  roomID: string;
  errorKeys: string[];
}

export interface ZIMRoomAttributesQueriedResult {
  roomID: string;
  roomAttributes: Record<string, string>;
}

export interface ZIMMessageQueriedResult {
  conversationID: string;
  conversationType: ZIMConversationType;
  messageList: ZIMMessage[];
}

// ----- events --------------------------------------------------------------

export interface ZIMEventOfConnectionStateChangedResult {
  state: ZIMConnectionState;
  event: ZIMConnectionEvent;
  /** What happened, e.g. the server's disconnect reason and message, or `"reconnected"`. */
  extendedData: string;
}

export interface ZIMEventOfTokenWillExpireResult {
  /** Seconds left. */
  second: number;
}

export interface ZIMEventOfReceiveConversationMessageResult {
  /** Oldest first. */
  messageList: ZIMMessage[];
  /** The sender (peer) or the room. */
  fromConversationID: string;
}

export interface ZIMEventOfReceivePeerMessageResult extends ZIMEventOfReceiveConversationMessageResult {
  fromUserID: string;
}

export interface ZIMEventOfReceiveRoomMessageResult extends ZIMEventOfReceiveConversationMessageResult {
  fromRoomID: string;
}

export interface ZIMEventOfRoomMembersUpdatedResult {
  roomID: string;
  memberList: ZIMRoomMemberInfo[];
}

export interface ZIMEventOfRoomStateChangedResult {
  roomID: string;
  state: ZIMRoomState;
  event: ZIMRoomEvent;
  extendedData: string;
}

export interface ZIMEventOfRoomAttributesUpdatedResult {
  roomID: string;
  infos: ZIMRoomAttributesUpdateInfo[];
}

/** confab: stored peer messages at these inbox positions were missed and are gone (retention). */
export interface ZIMEventOfPeerMessageGapResult {
  fromInboxSeq: number;
  toInboxSeq: number;
}

/** confab: stored room messages with these seqs were missed and are gone (retention). */
export interface ZIMEventOfRoomMessageGapResult {
  roomID: string;
  fromSeq: number;
  toSeq: number;
}

/** Every event and its callback, `(zim, data)`. */
export interface ZIMEventHandler {
  error: (zim: ZIM, errorInfo: ZIMError) => void;
  connectionStateChanged: (zim: ZIM, data: ZIMEventOfConnectionStateChangedResult) => void;
  tokenWillExpire: (zim: ZIM, data: ZIMEventOfTokenWillExpireResult) => void;
  receivePeerMessage: (zim: ZIM, data: ZIMEventOfReceivePeerMessageResult) => void;
  receiveRoomMessage: (zim: ZIM, data: ZIMEventOfReceiveRoomMessageResult) => void;
  roomMemberJoined: (zim: ZIM, data: ZIMEventOfRoomMembersUpdatedResult) => void;
  roomMemberLeft: (zim: ZIM, data: ZIMEventOfRoomMembersUpdatedResult) => void;
  roomStateChanged: (zim: ZIM, data: ZIMEventOfRoomStateChangedResult) => void;
  roomAttributesUpdated: (zim: ZIM, data: ZIMEventOfRoomAttributesUpdatedResult) => void;
  roomAttributesBatchUpdated: (zim: ZIM, data: ZIMEventOfRoomAttributesUpdatedResult) => void;
  peerMessageGap: (zim: ZIM, data: ZIMEventOfPeerMessageGapResult) => void;
  roomMessageGap: (zim: ZIM, data: ZIMEventOfRoomMessageGapResult) => void;
}

export type ZIMEventName = keyof ZIMEventHandler;

// ----- configuration -------------------------------------------------------

/** The minimal WebSocket the SDK needs (the browser's fits). */
export interface ZIMWebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor (the browser's `WebSocket`, or a test double). */
export type ZIMWebSocketConstructor = new (url: string) => ZIMWebSocketLike;

/** Timers and clock, injectable for tests. */
export interface ZIMTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Milliseconds, monotonic enough for deadlines. */
  now(): number;
}

/**
 * `ZIM.create(config)`. Only `appID` is ZIM's; everything else is confab's and
 * optional. Durations are in milliseconds.
 */
export interface ZIMAppConfig {
  appID: number;
  /**
   * WebSocket URL(s) of the server, `ws(s)://HOST:PORT/ws`; several for failover
   * (tried in order, then round robin). Default: `/ws` of the page's origin.
   */
  server?: string | string[];
  /** ZIM's appSign: not used by confab (tokens authenticate). */
  appSign?: string;
  /** How long a call waits for its reply, including time spent reconnecting. Default 10000. */
  requestTimeout?: number;
  /** Send a `ping` when nothing was sent for this long. Default 25000. */
  heartbeatInterval?: number;
  /** First reconnect delay; doubles per failed attempt, drawn from [d/2, d]. Default 500. */
  reconnectMinDelay?: number;
  /** Cap of the reconnect delay. Default 30000. */
  reconnectMaxDelay?: number;
  /** Stop reconnecting after this long without a connection; `null` never. Default 300000. */
  reconnectGiveUpAfter?: number | null;
  /** The SDK's own limit on Text + Command sends per second (6000005 past it); 0 turns it off. Default 10. */
  sendRatePerSecond?: number;
  /** How often, at most, delivered peer messages are acknowledged (`ackInbox`). Default 1000. */
  ackInterval?: number;
  /** Reconnect at once when the browser reports it is back online, drop the connection when it goes offline. Default true. */
  watchNetwork?: boolean;
  /** The WebSocket constructor. Default: the global `WebSocket`. */
  WebSocket?: ZIMWebSocketConstructor;
  /** Timers and clock. Default: the global ones and `Date.now`. */
  timers?: ZIMTimers;
  /** Random numbers in [0, 1) for the backoff jitter. Default `Math.random`. */
  random?: () => number;
  /** Receives the SDK's log lines (never tokens or message bodies). */
  logger?: (level: 'info' | 'warn', line: string) => void;
}
