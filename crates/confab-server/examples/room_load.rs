//! Room fan-out load: M members in one room, one sender at R messages/s for T
//! seconds; reports deliveries/s, end-to-end latency percentiles and losses.
//! Interim tool until `confab bench fanout`.
//!
//! cargo run --release -p confab-server --example room_load -- URL[,URL...] APP_ID SECRET [MEMBERS] [RATE] [SECONDS] [TYPE 1|2] [BODY_BYTES]
//!
//! With several URLs (nodes of one deployment) members are spread over them round
//! robin; the sender uses the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn token(app: u32, secret: &str, user: &str) -> String {
    let secret = confab_token::Secret::new(secret).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    confab_token::generate(&secret, app, user, 3600, confab_token::Mode::Gcm, now).unwrap()
}

async fn request(ws: &mut Ws, id: u64, op: &str, data: Value) -> Value {
    let frame = json!({"v":1,"id":id,"op":op,"data":data});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("connection lost during {op}");
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["id"] == id {
            assert_eq!(v["code"], 0, "{op}: {v}");
            return v;
        }
    }
}

async fn member(url: &str, app: u32, secret: &str, user: &str, room: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    request(
        &mut ws,
        1,
        "login",
        json!({"appID":app,"userID":user,"token":token(app, secret, user)}),
    )
    .await;
    request(&mut ws, 2, "enterRoom", json!({"roomInfo":{"roomID":room}})).await;
    ws
}

/// Send times (µs since origin) found in a frame's message bodies.
fn stamps(text: &str, out: &mut Vec<u64>) {
    let mut rest = text;
    while let Some(i) = rest.find("\"message\":\"") {
        rest = &rest[i + 11..];
        let field = &rest[..rest.find('"').unwrap_or(rest.len())];
        // Command bodies are base64.
        let decoded = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(field).ok()
        };
        let text = match &decoded {
            Some(bytes)
                if !field.starts_with(|c: char| c.is_ascii_digit() && field.contains(':')) =>
            {
                String::from_utf8_lossy(bytes).into_owned()
            }
            _ => field.to_owned(),
        };
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(t) = digits.parse() {
            out.push(t);
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let urls: Vec<String> = a
        .get(1)
        .map_or("ws://127.0.0.1:8080/ws", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();
    let url = urls[0].clone();
    let app: u32 = a.get(2).and_then(|v| v.parse().ok()).expect("APP_ID");
    let secret = a.get(3).cloned().expect("SECRET");
    let members: usize = a.get(4).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let rate: u64 = a.get(5).and_then(|v| v.parse().ok()).unwrap_or(100);
    let secs: u64 = a.get(6).and_then(|v| v.parse().ok()).unwrap_or(10);
    let kind: u8 = a.get(7).and_then(|v| v.parse().ok()).unwrap_or(1);
    let body_len: usize = a.get(8).and_then(|v| v.parse().ok()).unwrap_or(64);
    let room = format!("load{}", std::process::id());
    let origin = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..members {
        let ws = member(
            &urls[i % urls.len()],
            app,
            &secret,
            &format!("m{}x{i}", std::process::id()),
            &room,
        )
        .await;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = ws;
            let mut lat = Vec::new();
            let mut ts = Vec::new();
            while let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_secs(3), ws.next()).await
            {
                if let Message::Text(t) = msg {
                    if t.as_str().contains("\"receiveRoomMessage\"") {
                        ts.clear();
                        stamps(t.as_str(), &mut ts);
                        let now = origin.elapsed().as_micros() as u64;
                        for &t in &ts {
                            lat.push(now.saturating_sub(t) as f64 / 1000.0);
                        }
                        received.fetch_add(ts.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    eprintln!("{members} members in room {room}; sending {rate}/s for {secs}s");
    let sender = member(
        &url,
        app,
        &secret,
        &format!("s{}", std::process::id()),
        &room,
    )
    .await;
    let (mut sender, mut replies) = sender.split();
    let drain = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(3), replies.next()).await
        {
            if t.as_str().contains("\"code\":") && !t.as_str().contains("\"code\":0") {
                failed += 1;
            }
        }
        failed
    });
    let total = rate * secs;
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let start = Instant::now();
    let pad = "x".repeat(body_len.saturating_sub(16));
    for n in 0..total {
        tokio::time::sleep_until((start + interval * n as u32).into()).await;
        let t = origin.elapsed().as_micros();
        let body = if kind == 2 {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("{t}:{pad}"))
        } else {
            format!("{t}:{pad}")
        };
        let f = json!({"v":1,"id":100 + n,"op":"sendRoomMessage","data":{"roomID":room,"type":kind,"message":body,"localMessageID":(u64::from(std::process::id()) << 32) + n + 1,"priority":3}});
        sender.send(Message::text(f.to_string())).await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    let failed = drain.await.unwrap();
    let got = received.load(Ordering::Relaxed);
    let expected = total * members as u64;
    println!(
        "{{\"members\":{members},\"rate\":{rate},\"duration_s\":{elapsed:.1},\"deliveries\":{got},\"deliveries_per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"p999_ms\":{:.2},\"max_ms\":{:.2},\"lost\":{},\"send_failures\":{failed}}}",
        got as f64 / elapsed,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(f64::NAN),
        expected.saturating_sub(got)
    );
}
