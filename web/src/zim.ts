/**
 * The confab web SDK: ZEGOCLOUD ZIM 1.x's web API on confab's wire protocol.
 *
 * ```js
 * import { ZIM, ZIMMessageType } from '/sdk/zim.js';
 * const zim = ZIM.create(appID); // or ZIM.create({ appID, server: 'ws://host:port/ws' })
 * zim.on('receivePeerMessage', (zim, { messageList, fromConversationID }) => { ... });
 * await zim.login({ userID: 'alice', userName: 'Alice' }, token);
 * await zim.sendPeerMessage({ type: ZIMMessageType.Text, message: 'hi' }, 'bob');
 * ```
 */

export { ZIM, VERSION } from './api';
export {
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
} from './enums';
export type * from './types';
export { ZIM as default } from './api';
