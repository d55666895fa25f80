/**
 * `ZIM`, the class apps hold: ZIM 1.x's web API (create / login / send / rooms /
 * events), each call checked locally (destroyed, parameters, logged in, the
 * SDK's rate limit) before it goes to the engine that owns the connection.
 */
import { ZIMConnectionState, ZIMConversationType } from './enums';
import type { ZIMAppConfig, ZIMEventHandler, ZIMEventName, ZIMMessageContent, ZIMMessageQueriedResult, ZIMMessageQueryConfig, ZIMMessageSendConfig, ZIMMessageSentResult, ZIMRoomAdvancedConfig, ZIMRoomAttributesBatchOperatedResult, ZIMRoomAttributesBatchOperationConfig, ZIMRoomAttributesDeleteConfig, ZIMRoomAttributesOperatedResult, ZIMRoomAttributesQueriedResult, ZIMRoomAttributesSetConfig, ZIMRoomCreatedResult, ZIMRoomEnteredResult, ZIMRoomInfo, ZIMRoomJoinedResult, ZIMRoomLeftResult, ZIMRoomMemberQueriedResult, ZIMRoomMemberQueryConfig, ZIMRoomOnlineMemberCountQueriedResult, ZIMTokenRenewedResult, ZIMUserInfo } from './types';
/** The SDK's version. */
export declare const VERSION = "0.1.0";
/**
 * A confab client with ZIM 1.x's web API. Create it with `ZIM.create(appID)` or
 * `ZIM.create({appID, server})`, register handlers with `on`, then `login`.
 * Every call returns a promise that rejects with `{code, message}`.
 */
export declare class ZIM {
    private readonly engine;
    private readonly handlers;
    private readonly rate;
    private readonly timers;
    private readonly appID;
    private readonly userLogger;
    /** Recent log lines for uploadLog, oldest first, and their total size. */
    private readonly logLines;
    private logBytes;
    private logSize;
    /** Send-rate token bucket. */
    private tokens;
    private tokensAt;
    private lastLocalID;
    private readonly batches;
    private constructor();
    /**
     * Creates the instance: `ZIM.create(appID)` (server: `/ws` of the page's
     * origin) or `ZIM.create({appID, server, ...})`. Like ZIM, only one instance
     * exists at a time: while it does, `create` returns `null` (use
     * `getInstance`, or `destroy` it first).
     *
     * Throws `{code: 6000001, message}` for an invalid config.
     */
    static create(config: number | ZIMAppConfig): ZIM | null;
    /** The instance made by `create`, or `null`. */
    static getInstance(): ZIM | null;
    /** The SDK's version. */
    static getVersion(): string;
    /**
     * Destroys the instance: closes the connection without logging out (the
     * server keeps room memberships for its grace period); waiting and later
     * calls fail with 6000002. Idempotent.
     */
    destroy(): void;
    /** Registers a handler; several may be registered for one event. */
    on<K extends ZIMEventName>(eventName: K, handler: ZIMEventHandler[K]): void;
    /** Removes `handler`, or every handler of the event when none is given. */
    off<K extends ZIMEventName>(eventName: K, handler?: ZIMEventHandler[K]): void;
    /** confab: the current connection state. */
    getConnectionState(): ZIMConnectionState;
    /**
     * Logs in: connects to the first reachable server URL and authenticates the
     * user with a Token04 for this AppID and userID. Peer messages received
     * while offline follow as `receivePeerMessage` events.
     */
    login(userInfo: ZIMUserInfo, token: string): Promise<void>;
    /** Logs out: leaves all rooms and closes the connection. */
    logout(): Promise<void>;
    /** Replaces the session's token (after `tokenWillExpire`); reconnects use the new one. */
    renewToken(token: string): Promise<ZIMTokenRenewedResult>;
    /**
     * Sends a Text or Command message to a user. Text is stored (and reaches an
     * offline receiver at its next login); the promise resolves once it is.
     */
    sendPeerMessage(message: ZIMMessageContent, toUserID: string, config?: ZIMMessageSendConfig): Promise<ZIMMessageSentResult>;
    /** Sends a Text, Command or Barrage message to a room this user is in. */
    sendRoomMessage(message: ZIMMessageContent, toRoomID: string, config?: ZIMMessageSendConfig): Promise<ZIMMessageSentResult>;
    /**
     * A page of a conversation's stored messages: a Peer conversation with the
     * user `conversationID`, or a Room this user is in.
     */
    queryHistoryMessage(conversationID: string, conversationType: ZIMConversationType, config: ZIMMessageQueryConfig): Promise<ZIMMessageQueriedResult>;
    /** Creates a room and joins it. */
    createRoom(roomInfo: ZIMRoomInfo, config?: ZIMRoomAdvancedConfig): Promise<ZIMRoomCreatedResult>;
    /** Joins an existing room. */
    joinRoom(roomID: string): Promise<ZIMRoomJoinedResult>;
    /** Joins a room, creating it first if it does not exist. */
    enterRoom(roomInfo: ZIMRoomInfo, config?: ZIMRoomAdvancedConfig): Promise<ZIMRoomEnteredResult>;
    /** Leaves a room. */
    leaveRoom(roomID: string): Promise<ZIMRoomLeftResult>;
    /** A page of a room's members: `nextFlag` `""` first, then the returned one until it is `""`. */
    queryRoomMemberList(roomID: string, config: ZIMRoomMemberQueryConfig): Promise<ZIMRoomMemberQueriedResult>;
    /** How many members a room has (members within their reconnect grace period count). */
    queryRoomOnlineMemberCount(roomID: string): Promise<ZIMRoomOnlineMemberCountQueriedResult>;
    /**
     * Sets room attributes; `errorKeys` lists keys owned by someone else (without
     * `isForce`). Between begin- and endRoomAttributesBatchOperation the change
     * joins the batch and resolves when the batch is applied.
     */
    setRoomAttributes(roomAttributes: Record<string, string>, roomID: string, config?: ZIMRoomAttributesSetConfig): Promise<ZIMRoomAttributesOperatedResult>;
    /** Deletes room attributes; `errorKeys` lists keys that could not be deleted. */
    deleteRoomAttributes(keys: string[], roomID: string, config?: ZIMRoomAttributesDeleteConfig): Promise<ZIMRoomAttributesOperatedResult>;
    /**
     * Starts collecting setRoomAttributes / deleteRoomAttributes calls for
     * `roomID`; endRoomAttributesBatchOperation applies them in one step (one
     * `roomAttributesBatchUpdated` event for the members).
     */
    beginRoomAttributesBatchOperation(roomID: string, config?: ZIMRoomAttributesBatchOperationConfig): void;
    /** Applies the batch started with beginRoomAttributesBatchOperation. */
    endRoomAttributesBatchOperation(roomID: string): Promise<ZIMRoomAttributesBatchOperatedResult>;
    /** All attributes of a room. */
    queryRoomAllAttributes(roomID: string): Promise<ZIMRoomAttributesQueriedResult>;
    /**
     * ZIM's setLogConfig. The web SDK keeps its log in memory: `logSize` caps it
     * (bytes, default 256 KiB, at least 1024). `logPath` is ignored.
     */
    setLogConfig(config: {
        logPath?: string;
        logSize?: number;
    }): void;
    /**
     * Uploads the SDK's recent log lines to the server (`POST /v1/logs` on the
     * host of the current or last login's URL), authenticated with that login's
     * userID and token. 6000121 before any login, 6000010 when it fails.
     */
    uploadLog(): Promise<void>;
    private deliver;
    private log;
    private trimLog;
    private check;
    private requireRoom;
    private roomRequest;
    private attributes;
    /** A fresh localMessageID: the time in ms × 1000, or the previous + 1 if larger. */
    private nextLocalID;
    /** Takes a token from the send-rate bucket; false when it is empty. */
    private takeSendToken;
    private sendMessage;
}
