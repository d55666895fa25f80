// Compiled (not run) by `npm run test:unit`: the shipped typings (dist/zim.d.ts)
// type an app's use of the SDK, and catch misuse.
import {
  ZIM,
  ZIMConnectionState,
  ZIMConversationType,
  ZIMMessagePriority,
  ZIMMessageType,
  type ZIMError,
  type ZIMMessage,
} from '../../dist/zim.js';

export async function app(token: string): Promise<void> {
  const zim = ZIM.create({ appID: 1234567890, server: ['ws://a/ws', 'ws://b/ws'] }) ?? ZIM.getInstance();
  if (zim === null) return;
  zim.on('connectionStateChanged', (_z, { state, event, extendedData }) => {
    const s: ZIMConnectionState = state;
    console.log(s, event, extendedData.length);
  });
  zim.on('receivePeerMessage', (_z, { messageList, fromConversationID }) => {
    const list: ZIMMessage[] = messageList;
    console.log(list.length, fromConversationID.toUpperCase());
  });
  zim.on('roomMemberJoined', (_z, { roomID, memberList }) => console.log(roomID, memberList[0]?.userName));
  zim.on('tokenWillExpire', async (z, { second }) => {
    const { token: renewed } = await z.renewToken(`${token}${second}`);
    console.log(renewed);
  });
  try {
    await zim.login({ userID: 'alice', userName: 'Alice' }, token);
    const { message } = await zim.sendPeerMessage({ type: ZIMMessageType.Text, message: 'hi' }, 'bob', {
      priority: ZIMMessagePriority.High,
    });
    const id: number = message.messageID;
    const { roomInfo } = await zim.enterRoom({ roomID: 'lobby', roomName: 'Lobby' });
    const { memberList, nextFlag } = await zim.queryRoomMemberList(roomInfo.baseInfo.roomID, { nextFlag: '', count: 10 });
    const { messageList } = await zim.queryHistoryMessage('lobby', ZIMConversationType.Room, {
      nextMessage: message,
      count: 20,
      reverse: true,
    });
    console.log(id, memberList, nextFlag, messageList);
  } catch (e) {
    const err = e as ZIMError;
    console.log(err.code, err.message);
  }
  // @ts-expect-error: no such event
  zim.on('receiveGroupMessage', () => {});
  // @ts-expect-error: the message needs a type
  await zim.sendRoomMessage({ message: 'x' }, 'lobby');
  zim.off('receivePeerMessage');
  zim.destroy();
}
