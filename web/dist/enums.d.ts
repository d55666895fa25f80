/**
 * ZIM 1.x's numbered enums, with the numbers that go on the wire and into
 * callbacks (docs/protocol.md, SPEC §7).
 */
/** The SDK's connection state. */
export declare enum ZIMConnectionState {
    /** Not logged in (never, after logout, or after a disconnect the SDK does not recover from). */
    Disconnected = 0,
    /** `login` is in progress. */
    Connecting = 1,
    /** Logged in and connected. */
    Connected = 2,
    /** The connection was lost; the SDK is reconnecting by itself. */
    Reconnecting = 3
}
/** Why the connection state changed (plus confab's TokenExpired). */
export declare enum ZIMConnectionEvent {
    /** A login or reconnect succeeded, or the app logged out. */
    Success = 0,
    /** The app called `login`. */
    ActiveLogin = 1,
    /** The server could not be reached in time (a login that reached no URL, or reconnecting gave up). */
    LoginTimeout = 2,
    /** The connection was interrupted (the SDK reconnects), or a login or re-login was refused. */
    LoginInterrupted = 3,
    /** The same user logged in elsewhere; the SDK does not reconnect. */
    KickedOut = 4,
    /** The token expired; log in again with a new token. */
    TokenExpired = 5
}
/** The state of this user's membership in a room. */
export declare enum ZIMRoomState {
    Disconnected = 0,
    Connecting = 1,
    Connected = 2
}
/** Why a room's state changed. */
export declare enum ZIMRoomEvent {
    Success = 0,
    NetworkInterrupted = 1,
    NetworkDisconnected = 2,
    RoomNotExist = 3,
    ActiveCreate = 4,
    CreateFailed = 5,
    ActiveEnter = 6,
    EnterFailed = 7,
    KickedOut = 8
}
/** Message types. confab sends and receives Text, Command and Barrage. */
export declare enum ZIMMessageType {
    Unknown = 0,
    /** UTF-8 text up to 32 KiB; stored, delivered to offline receivers. */
    Text = 1,
    /** Bytes up to 5 KiB; not stored, online receivers only. */
    Command = 2,
    Image = 11,
    File = 12,
    Audio = 13,
    Video = 14,
    /** Room-only text up to 5 KiB; not stored, unreliable. */
    Barrage = 20,
    System = 30
}
/** Peer (one-to-one) or room conversation. */
export declare enum ZIMConversationType {
    Peer = 0,
    Room = 1
}
/** How live pushes of unstored messages are treated under overload. */
export declare enum ZIMMessagePriority {
    Low = 1,
    Medium = 2,
    High = 3
}
/** Whether a message was sent or received by this user. */
export declare enum ZIMMessageDirection {
    Send = 0,
    Receive = 1
}
/** A message's send status (messages the SDK hands out are always Success). */
export declare enum ZIMMessageSentStatus {
    Sending = 0,
    Success = 1,
    Failed = 2
}
/** What happened to room attributes in a `roomAttributesUpdated` info. */
export declare enum ZIMRoomAttributesUpdateAction {
    Set = 0,
    Delete = 1
}
/** ZIM 1.x's error codes (the server's and the SDK's), with confab's stable names. */
export declare enum ZIMErrorCode {
    Success = 0,
    Failed = 1,
    ParamInvalid = 6000001,
    NotInitialized = 6000002,
    ServerRateLimit = 6000003,
    InvalidAppId = 6000004,
    SdkRateLimit = 6000005,
    LogUploadFailed = 6000010,
    LoginTokenMismatch = 6000101,
    LoginInternalError = 6000102,
    TokenInvalid = 6000103,
    NetworkError = 6000104,
    TokenExpired = 6000106,
    TokenVersionMismatch = 6000107,
    AlreadyLoggedIn = 6000111,
    NotLoggedIn = 6000121,
    MessageSendFailed = 6000201,
    MessageInternalError = 6000202,
    MessageNetworkError = 6000204,
    NotInRoom = 6000205,
    RoomNotExist = 6000301,
    RoomInternalError = 6000302,
    RoomCreateFailed = 6000303,
    RoomJoinNotExist = 6000304,
    RoomLeaveFailed = 6000305,
    RoomAlreadyExists = 6000311,
    RoomCountLimit = 6000312,
    UserRoomLimit = 6000321
}
