/**
 * The wire side (docs/protocol.md): frame shapes as the server sends them, and
 * conversions between wire messages and ZIM message objects.
 */

import {
  ZIMConversationType,
  ZIMMessageDirection,
  ZIMMessagePriority,
  ZIMMessageSentStatus,
  ZIMMessageType,
} from './enums';
import type { ZIMMessage } from './types';

/** The protocol version every frame carries. */
export const PROTOCOL_VERSION = 1;

/** A message as it travels (`message` is base64 for Command). */
export interface WireMessage {
  type: number;
  message: string;
  messageID: number;
  localMessageID: number;
  senderUserID: string;
  timestamp: number;
  conversationID: string;
  conversationType: number;
  conversationSeq: number;
  inboxSeq?: number;
  priority?: number;
}

/** A reply to a request. */
export interface WireReply {
  v: number;
  id: number;
  code: number;
  message: string;
  data?: Record<string, unknown>;
}

/** A push. */
export interface WirePush {
  v: number;
  push: string;
  data: Record<string, unknown>;
}

export type ServerFrame = { kind: 'reply'; reply: WireReply } | { kind: 'push'; push: WirePush };

/** Parses a server frame; throws with a readable message when it is not one. */
export function decodeServerFrame(text: string): ServerFrame {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('not a JSON object');
  }
  const frame = value as Record<string, unknown>;
  if (typeof frame['push'] === 'string') {
    const data = frame['data'];
    return {
      kind: 'push',
      push: {
        v: Number(frame['v']),
        push: frame['push'],
        data: typeof data === 'object' && data !== null ? (data as Record<string, unknown>) : {},
      },
    };
  }
  if (typeof frame['id'] === 'number' && typeof frame['code'] === 'number') {
    const data = frame['data'];
    const reply: WireReply = {
      v: Number(frame['v']),
      id: frame['id'],
      code: frame['code'],
      message: typeof frame['message'] === 'string' ? frame['message'] : '',
    };
    if (typeof data === 'object' && data !== null) {
      reply.data = data as Record<string, unknown>;
    }
    return { kind: 'reply', reply };
  }
  throw new Error('neither a reply nor a push');
}

/** A request frame as text. */
export function encodeRequest(id: number, op: string, data: object): string {
  return JSON.stringify({ v: PROTOCOL_VERSION, id, op, data });
}

// ----- base64 and UTF-8 ------------------------------------------------------

/** Standard base64 of bytes. */
export function bytesToBase64(bytes: Uint8Array): string {
  let binary = '';
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

/** Bytes of standard base64; `null` when it is not base64. */
export function base64ToBytes(text: string): Uint8Array | null {
  let binary: string;
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

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

// ----- messages -------------------------------------------------------------

function priorityOf(n: number | undefined): ZIMMessagePriority {
  return n === 2 || n === 3 ? n : ZIMMessagePriority.Low;
}

/** A wire message as the ZIM message object seen by `me`. */
export function messageFromWire(m: WireMessage, me: string): ZIMMessage {
  let body: string | Uint8Array = m.message;
  if (m.type === ZIMMessageType.Command) {
    body = base64ToBytes(m.message) ?? m.message;
  }
  const message: ZIMMessage = {
    type: m.type,
    message: body,
    messageID: m.messageID,
    localMessageID: m.localMessageID,
    senderUserID: m.senderUserID,
    timestamp: m.timestamp,
    conversationID: m.conversationID,
    conversationType: m.conversationType === 1 ? ZIMConversationType.Room : ZIMConversationType.Peer,
    direction: m.senderUserID === me ? ZIMMessageDirection.Send : ZIMMessageDirection.Receive,
    sentStatus: ZIMMessageSentStatus.Success,
    orderKey: m.conversationSeq,
    conversationSeq: m.conversationSeq,
    priority: priorityOf(m.priority),
  };
  if (typeof m.inboxSeq === 'number') {
    message.inboxSeq = m.inboxSeq;
  }
  return message;
}

/** Reads a list of wire messages out of a push or reply, skipping what is not one. */
export function wireMessages(value: unknown): WireMessage[] {
  if (!Array.isArray(value)) {
    return [];
  }
  return value.filter(
    (m): m is WireMessage =>
      typeof m === 'object' &&
      m !== null &&
      typeof (m as WireMessage).type === 'number' &&
      typeof (m as WireMessage).message === 'string' &&
      typeof (m as WireMessage).conversationSeq === 'number',
  );
}
