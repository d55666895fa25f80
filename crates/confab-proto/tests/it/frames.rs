use confab_proto::ErrorCode;
use confab_proto::frame::*;
use proptest::prelude::*;

#[test]
fn login_request_round_trips_with_zim_field_names() {
    let frame = RequestFrame {
        id: 7,
        request: Request::Login(LoginRequest {
            app_id: 1234,
            user_id: "alice".into(),
            user_name: "Alice".into(),
            token: "04abc".into(),
            last_inbox_seq: None,
            room_seqs: Default::default(),
        }),
    };
    let text = frame.encode();
    assert_eq!(
        text,
        r#"{"v":1,"id":7,"op":"login","data":{"appID":1234,"userID":"alice","userName":"Alice","token":"04abc"}}"#
    );
    assert_eq!(RequestFrame::decode(&text).unwrap(), frame);
}

#[test]
fn data_may_be_omitted_for_empty_payloads() {
    let f = RequestFrame::decode(r#"{"v":1,"id":3,"op":"logout"}"#).unwrap();
    assert_eq!(f.request, Request::Logout(Empty {}));
    let f = RequestFrame::decode(r#"{"op":"ping","id":4,"v":1,"data":{}}"#).unwrap();
    assert_eq!(f.id, 4);
}

#[test]
fn decode_errors_keep_the_id_and_name_the_problem() {
    let e = RequestFrame::decode(r#"{"v":1,"id":9,"op":"fly"}"#).unwrap_err();
    assert_eq!(e.id, Some(9));
    assert_eq!(e.to_string(), r#"unknown op "fly""#);

    let e = RequestFrame::decode(r#"{"v":2,"id":9,"op":"ping"}"#).unwrap_err();
    assert_eq!(e.id, Some(9));
    assert!(
        e.to_string().contains("unsupported protocol version 2"),
        "{e}"
    );

    let e = RequestFrame::decode(r#"{"v":1,"id":5,"op":"login","data":{"appID":1}}"#).unwrap_err();
    assert_eq!(e.id, Some(5));
    assert!(e.to_string().contains("invalid data for login"), "{e}");
    assert!(e.to_string().contains("userID"), "{e}");

    let e = RequestFrame::decode("not json").unwrap_err();
    assert_eq!(e.id, None);

    let e = RequestFrame::decode(r#"{"v":1,"op":"ping"}"#).unwrap_err();
    assert!(e.to_string().contains("`id`"), "{e}");
}

#[test]
fn message_types_and_priorities_are_numbers() {
    let f = RequestFrame::decode(
        r#"{"v":1,"id":1,"op":"sendPeerMessage","data":{"toUserID":"bob","type":11,"message":"x","localMessageID":5,"priority":3}}"#,
    )
    .unwrap();
    let Request::SendPeerMessage(req) = f.request else {
        panic!("wrong op")
    };
    assert_eq!(req.kind, MessageType::Other(11));
    assert_eq!(req.kind.zim_name(), "Image");
    assert_eq!(req.priority, Priority::High);

    let e = RequestFrame::decode(
        r#"{"v":1,"id":1,"op":"sendPeerMessage","data":{"toUserID":"bob","type":1,"message":"x","localMessageID":5,"priority":9}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("priority must be 1"), "{e}");
}

#[test]
fn replies_round_trip_and_carry_typed_data() {
    let reply = Reply::ok(
        3,
        &SendMessageReply {
            message_id: 10,
            local_message_id: 99,
            timestamp: 1_700_000_000_000,
            conversation_seq: 4,
        },
    );
    let text = reply.encode();
    assert_eq!(
        text,
        r#"{"v":1,"id":3,"code":0,"message":"ok","data":{"messageID":10,"localMessageID":99,"timestamp":1700000000000,"conversationSeq":4}}"#
    );
    let ServerFrame::Reply(back) = ServerFrame::decode(&text).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(back, reply);
    assert_eq!(
        back.data_as::<SendMessageReply>().unwrap().conversation_seq,
        4
    );

    let err = Reply::error(4, ErrorCode::NotLoggedIn, "log in first");
    let text = err.encode();
    assert_eq!(
        text,
        r#"{"v":1,"id":4,"code":6000121,"message":"log in first"}"#
    );
    assert_eq!(ServerFrame::decode(&text).unwrap(), ServerFrame::Reply(err));
}

#[test]
fn pushes_round_trip() {
    let msg = Message {
        kind: MessageType::Text,
        message: "héllo \"world\"".into(),
        message_id: 1,
        local_message_id: 2,
        sender_user_id: "bob".into(),
        timestamp: 3,
        conversation_id: "bob".into(),
        conversation_type: ConversationType::Peer,
        conversation_seq: 4,
        inbox_seq: Some(5),
        priority: Priority::Low,
    };
    let pushes = [
        Push::ReceivePeerMessage(ReceivePeerMessage {
            message_list: vec![msg],
            from_user_id: "bob".into(),
        }),
        Push::TokenWillExpire(TokenWillExpire { second: 30 }),
        Push::SyncGap(SyncGap {
            from_inbox_seq: 1,
            to_inbox_seq: 9,
        }),
        Push::SyncComplete(SyncComplete { inbox_seq: 5 }),
        Push::Disconnect(Disconnect {
            reason: DisconnectReason::KickedOut,
            message: "logged in elsewhere".into(),
            reconnect: false,
        }),
    ];
    for p in pushes {
        let text = encode_push(&p);
        assert!(
            text.starts_with(&format!(r#"{{"v":1,"push":"{}""#, p.name())),
            "{text}"
        );
        assert_eq!(ServerFrame::decode(&text).unwrap(), ServerFrame::Push(p));
    }
    let text = encode_push(&Push::Disconnect(Disconnect {
        reason: DisconnectReason::SlowConsumer,
        message: String::new(),
        reconnect: true,
    }));
    assert!(text.contains(r#""reason":"slowConsumer""#), "{text}");
}

#[test]
fn every_op_and_push_name_is_unique() {
    let mut names: Vec<_> = Request::NAMES.iter().chain(Push::NAMES).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len());
}

proptest! {
    #[test]
    fn request_decoder_never_panics(s in ".*") {
        let _ = RequestFrame::decode(&s);
    }

    #[test]
    fn server_decoder_never_panics(s in ".*") {
        let _ = ServerFrame::decode(&s);
    }

    #[test]
    fn structured_garbage_never_panics(
        v in proptest::option::of(0u32..4),
        id in proptest::option::of(any::<u64>()),
        op in prop::sample::select(vec!["login", "logout", "sendPeerMessage", "ackInbox", "renewToken", "x"]),
        data in "[{}\\[\\]\":,a-zA-Z0-9 ]{0,40}",
    ) {
        let mut text = String::from("{");
        if let Some(v) = v { text.push_str(&format!("\"v\":{v},")); }
        if let Some(id) = id { text.push_str(&format!("\"id\":{id},")); }
        text.push_str(&format!("\"op\":\"{op}\",\"data\":{data}}}"));
        let _ = RequestFrame::decode(&text);
    }

    #[test]
    fn peer_message_requests_round_trip(
        id in any::<u64>(),
        to in "[a-zA-Z0-9_]{1,32}",
        body in ".{0,64}",
        local in any::<u64>(),
        kind in prop::sample::select(vec![1u8, 2, 20, 0, 11]),
        pri in 1u8..=3,
    ) {
        let frame = RequestFrame {
            id,
            request: Request::SendPeerMessage(SendPeerMessageRequest {
                to_user_id: to,
                kind: MessageType::from_code(kind),
                message: body,
                local_message_id: local,
                priority: Priority::from_code(pri).unwrap(),
            }),
        };
        prop_assert_eq!(RequestFrame::decode(&frame.encode()).unwrap(), frame);
    }
}

fn room_message(room: &str, seq: u64, body: String) -> Message {
    Message {
        kind: MessageType::Text,
        message: body,
        message_id: seq + 100,
        local_message_id: seq,
        sender_user_id: format!("user{}", seq % 3),
        timestamp: 1_700_000_000_000,
        conversation_id: room.into(),
        conversation_type: ConversationType::Room,
        conversation_seq: seq,
        inbox_seq: None,
        priority: Priority::High,
    }
}

fn room_push(room: &str, list: Vec<Message>) -> String {
    encode_push(&Push::ReceiveRoomMessage(ReceiveRoomMessage {
        message_list: list,
        from_room_id: room.into(),
    }))
}

proptest! {
    /// Merging the encoded pushes of a room gives exactly the push of all their
    /// messages, whatever the room's name, the bodies and how they were split.
    #[test]
    fn merged_room_pushes_equal_one_push_of_all_messages(
        room in "[a-zA-Z0-9!#$%&()+:;<=.>?@^_{}|~-]{1,16}",
        bodies in proptest::collection::vec("\\PC{0,12}", 0..8),
        cuts in proptest::collection::vec(0usize..8, 0..4),
    ) {
        let all: Vec<Message> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| room_message(&room, i as u64 + 1, b))
            .collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
        cuts.push(0);
        cuts.push(all.len());
        cuts.sort_unstable();
        let frames: Vec<String> = cuts
            .windows(2)
            .map(|w| room_push(&room, all[w[0]..w[1]].to_vec()))
            .collect();
        let merger = RoomPushMerger::new(&room);
        let lists: Vec<&[u8]> = frames
            .iter()
            .map(|f| merger.messages(f.as_bytes()).expect("a room push of this room"))
            .collect();
        prop_assert_eq!(merger.merge(lists), room_push(&room, all));
    }
}

#[test]
fn only_room_pushes_of_the_same_room_are_merged() {
    let merger = RoomPushMerger::new("lobby");
    let own = room_push("lobby", vec![room_message("lobby", 1, "hi".into())]);
    assert!(merger.messages(own.as_bytes()).is_some());
    let other_room = room_push("lobby2", vec![room_message("lobby2", 1, "hi".into())]);
    assert_eq!(merger.messages(other_room.as_bytes()), None);
    let members = encode_push(&Push::RoomMemberJoined(RoomMembersChanged {
        room_id: "lobby".into(),
        member_list: vec![],
    }));
    assert_eq!(merger.messages(members.as_bytes()), None);
    // A room ID that JSON escapes.
    let merger = RoomPushMerger::new("a\"b");
    let escaped = room_push("a\"b", vec![room_message("a\"b", 1, "x".into())]);
    assert!(merger.messages(escaped.as_bytes()).is_some());
}
