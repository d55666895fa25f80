//! Hot paths of the wire contract: decoding a client's send request and encoding
//! the push every receiver gets. `cargo bench -p confab-proto`.

use std::hint::black_box;

use confab_proto::frame::{
    ConversationType, Message, MessageType, Priority, Push, ReceiveRoomMessage, RequestFrame,
    encode_push,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn frames(c: &mut Criterion) {
    let body = "x".repeat(64);
    let send = format!(
        r#"{{"v":1,"id":42,"op":"sendRoomMessage","data":{{"roomID":"lobby","type":1,"message":"{body}","localMessageID":1764120000001,"priority":3}}}}"#
    );
    c.bench_function("decode sendRoomMessage (64 B)", |b| {
        b.iter(|| RequestFrame::decode(black_box(&send)).expect("valid frame"));
    });
    let push = Push::ReceiveRoomMessage(ReceiveRoomMessage {
        from_room_id: "lobby".into(),
        message_list: vec![Message {
            kind: MessageType::Text,
            message: body.clone(),
            message_id: 4711,
            local_message_id: 1_764_120_000_001,
            sender_user_id: "alice".into(),
            timestamp: 1_764_120_000_123,
            conversation_id: "lobby".into(),
            conversation_type: ConversationType::Room,
            conversation_seq: 18,
            inbox_seq: None,
            priority: Priority::High,
        }],
    });
    c.bench_function("encode receiveRoomMessage (64 B)", |b| {
        b.iter(|| encode_push(black_box(&push)));
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
