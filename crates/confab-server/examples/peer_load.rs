//! A small load generator for durable peer messages, used to measure the server
//! core until `confab bench` exists. P sender/receiver pairs; each sender keeps W
//! requests in flight; reports acked messages/s, ack and delivery latency
//! percentiles, and lost/duplicated counts.
//!
//! cargo run --release -p confab-server --example peer_load -- URL APP_ID SECRET [PAIRS] [SECONDS] [WINDOW]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn token(app: u32, secret: &str, user: &str) -> String {
    let secret = confab_token::Secret::new(secret).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    confab_token::generate(&secret, app, user, 3600, confab_token::Mode::Gcm, now).unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn login(url: &str, app: u32, secret: &str, user: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let frame = json!({"v":1,"id":0,"op":"login","data":{"appID":app,"userID":user,"token":token(app, secret, user)}});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("login of {user} failed");
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["push"] == "syncComplete" {
            return ws;
        }
        if v["id"] == 0 && v["code"] != 0 {
            panic!("login of {user}: {v}");
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
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let app: u32 = args.get(2).and_then(|a| a.parse().ok()).expect("APP_ID");
    let secret = args.get(3).cloned().expect("SECRET");
    let pairs: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);
    let secs: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(10);
    let window: usize = args.get(6).and_then(|a| a.parse().ok()).unwrap_or(8);
    let run = format!("{:x}", rand_suffix());
    let start_at = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for p in 0..pairs {
        let (url, secret, run) = (url.clone(), secret.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let sender = format!("s{run}{p}");
            let receiver = format!("r{run}{p}");
            let mut rx = login(&url, app, &secret, &receiver).await;
            let tx = login(&url, app, &secret, &sender).await;
            tokio::time::sleep_until(start_at.into()).await;
            let origin = Instant::now();
            let recv = tokio::spawn(async move {
                let mut seen = HashSet::new();
                let mut dups = 0u64;
                let mut lat = Vec::new();
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(3), rx.next()).await
                {
                    let Message::Text(t) = msg else { continue };
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["push"] != "receivePeerMessage" {
                        continue;
                    }
                    for m in v["data"]["messageList"].as_array().unwrap() {
                        let body = m["message"].as_str().unwrap();
                        let sent_us: u64 = body.split(':').next().unwrap().parse().unwrap();
                        let now_us = origin.elapsed().as_micros() as u64;
                        lat.push((now_us.saturating_sub(sent_us)) as f64 / 1000.0);
                        if !seen.insert(m["localMessageID"].as_u64().unwrap()) {
                            dups += 1;
                        }
                    }
                }
                (seen, dups, lat)
            });
            let (mut sink, mut stream) = tx.split();
            let deadline = origin + Duration::from_secs(secs);
            let mut sent_at = std::collections::HashMap::new();
            let mut acked = HashSet::new();
            let mut ack_lat = Vec::new();
            let mut next = 1u64;
            let mut inflight = 0usize;
            loop {
                while inflight < window && Instant::now() < deadline {
                    let t = origin.elapsed().as_micros() as u64;
                    let body = format!("{t}:{}", "x".repeat(40));
                    let f = json!({"v":1,"id":next,"op":"sendPeerMessage","data":{"toUserID":receiver,"type":1,"message":body,"localMessageID":(u64::from(std::process::id()) << 32) + next}});
                    sink.send(Message::text(f.to_string())).await.unwrap();
                    sent_at.insert(next, Instant::now());
                    next += 1;
                    inflight += 1;
                }
                if inflight == 0 {
                    break;
                }
                let Some(Ok(Message::Text(t))) = stream.next().await else { break };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(id) = v["id"].as_u64() {
                    inflight -= 1;
                    if v["code"] == 0 {
                        acked.insert((u64::from(std::process::id()) << 32) + id);
                        ack_lat.push(sent_at[&id].elapsed().as_secs_f64() * 1000.0);
                    } else {
                        eprintln!("send failed: {v}");
                    }
                }
            }
            let (seen, dups, lat) = recv.await.unwrap();
            let lost = acked.difference(&seen).count() as u64;
            (acked.len() as u64, lost, dups, ack_lat, lat)
        }));
    }
    let (mut total, mut lost, mut dups) = (0, 0, 0);
    let (mut ack, mut del) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, l, d, al, dl) = t.await.unwrap();
        total += a;
        lost += l;
        dups += d;
        ack.extend(al);
        del.extend(dl);
    }
    ack.sort_by(f64::total_cmp);
    del.sort_by(f64::total_cmp);
    println!(
        "{{\"pairs\":{pairs},\"window\":{window},\"duration_s\":{secs},\"acked\":{total},\"acked_per_s\":{:.0},\"ack_p50_ms\":{:.2},\"ack_p99_ms\":{:.2},\"delivery_p50_ms\":{:.2},\"delivery_p99_ms\":{:.2},\"lost\":{lost},\"duplicated\":{dups}}}",
        total as f64 / secs as f64,
        pct(&ack, 0.5),
        pct(&ack, 0.99),
        pct(&del, 0.5),
        pct(&del, 0.99)
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        & 0xffff_ffff
}
